"""The tabular task: a table schema from configuration drives reading, features, model and API."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from modelyard.core.bundle import TensorSpec
from modelyard.core.bundle_examples import ExampleFile
from modelyard.core.errors import BundleError, ConfigError, DataError
from modelyard.core.reference_profile import ReferenceProfile
from modelyard.core.row_accounting import ReadLedger, RefusalPolicy, RowReport
from modelyard.core.run_dir import RunDir
from modelyard.projects.base import GateMetric, Task
from modelyard.projects.export_adapter import export_adapter
from modelyard.projects.tabular.contract import TabularContract, TabularLimits
from modelyard.projects.tabular.datamodule import TabularDataModule
from modelyard.projects.tabular.derived.columns import derive_columns
from modelyard.projects.tabular.examples import example_rows
from modelyard.projects.tabular.gbm import GradientBoostedRegressor
from modelyard.projects.tabular.metrics import predict_group_medians, valuation_scores
from modelyard.projects.tabular.model import TabularRegressor
from modelyard.projects.tabular.outliers import drop_outliers, fit_outlier_bounds
from modelyard.projects.tabular.plots import plot_predicted_vs_true
from modelyard.projects.tabular.reading import read_table
from modelyard.projects.tabular.reference import reference_profile
from modelyard.projects.tabular.row_filters import apply_filters
from modelyard.projects.tabular.schema import TableSchema, parse_schema
from modelyard.projects.tabular.serving import TabularServing
from modelyard.projects.tabular.splitting import split_table
from modelyard.projects.tabular.table_io import (
    feature_columns,
    group_keys,
    read_prepared,
    write_prepared,
)
from modelyard.projects.tabular.target_scaling import decode_target
from modelyard.projects.torch_model import LightningModel
from modelyard.projects.trained_model import InferenceModel, TrainedModel

SUMMARY_FILE = "prepare.json"


def load_schema(cfg: DictConfig) -> TableSchema:
    raw = OmegaConf.to_container(cfg.project.table, resolve=True)
    if not isinstance(raw, dict):
        raise ConfigError("project.table must be a mapping")
    return parse_schema({str(k): v for k, v in raw.items()})


class TabularTask(Task):
    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.schema = load_schema(cfg)

    # -- data ---------------------------------------------------------------------------------
    def _source_file(self, source: Path) -> Path:
        return source / self.schema.read.file if source.is_dir() else source

    def _read_clean(self, source: Path) -> tuple[pd.DataFrame, dict[str, Any], RowReport]:
        """Read, derive columns and apply the row filters (never the outlier rules).

        Refused rows are checked against ``project.data``'s refusal policy as soon as the file is
        read; rows the schema's filters remove are counted in the report as filtered, by rule.
        """
        policy = RefusalPolicy.from_config(self.cfg.project.data)
        path = self._source_file(source)
        frame, rows = read_table(self.schema.read, path, policy.max_field_length)
        ReadLedger(policy).add(rows)
        rows_read = len(frame)
        frame = derive_columns(frame, self.schema.derive)
        frame, filtered = apply_filters(frame, self.schema.filters)
        for step in filtered:
            rows.filter(step["filter"], step["rows_removed"])
        target = self.schema.target.name
        if target not in frame.columns:
            raise ConfigError(f"target column {target!r} is not in the table")
        usable = frame[target].notna() & (frame[target] > 0)
        rows.filter(f"{target} > 0", int((~usable).sum()))
        frame = frame[usable].reset_index(drop=True)
        report = {"rows_read": rows_read, "filters": filtered, "rows_kept": len(frame)}
        return frame, report, rows

    def prepare(self, source: Path, output: Path) -> dict[str, Any]:
        frame, report, rows = self._read_clean(source)
        split = split_table(frame, self.schema.split)
        bounds = fit_outlier_bounds(split.train, self.schema.outliers)
        train, outliers = drop_outliers(split.train, bounds)
        for step in outliers:
            rows.filter(f"outlier rule on {step['column']} (training rows)", step["rows_removed"])
        split = type(split)(train=train, val=split.val, test=split.test)
        files = write_prepared(split, output, self.schema)
        summary = {
            "source": str(self._source_file(source)),
            **report,
            "outliers_removed_from_train": outliers,
            "outlier_bounds": bounds,
            "rows": {"train": len(split.train), "val": len(split.val), "test": len(split.test)},
            "reading": {rows.source: rows.to_json()},
            "files": files,
        }
        (output / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n")
        return summary

    def training_files(self, raw: Path) -> list[Path]:
        return [raw / self.schema.read.file]

    # -- model --------------------------------------------------------------------------------
    def datamodule(self) -> TabularDataModule:
        return TabularDataModule(
            prepared_dir=Path(self.cfg.paths.prepared),
            schema=self.schema,
            batch_size=int(self.cfg.project.data.batch_size),
            seed=int(self.cfg.seed),
            num_workers=self.cfg.project.data.get("num_workers", 0),
        )

    def build_model(self, datamodule: L.LightningDataModule) -> TrainedModel:
        """The model ``model.kind`` names (a key of :data:`MODEL_BUILDERS`)."""
        assert isinstance(datamodule, TabularDataModule)
        kind = str(self.cfg.model.get("kind", ""))
        if kind not in MODEL_BUILDERS:
            known = ", ".join(sorted(MODEL_BUILDERS))
            raise ConfigError(
                f"model.kind must be one of {known} for a tabular project, not {kind!r}"
            )
        return MODEL_BUILDERS[kind](self.cfg, datamodule)

    def load_model(self, run_dir: RunDir) -> TrainedModel:
        """The run's LightGBM model when it saved one, else its MLP checkpoint."""
        trees = GradientBoostedRegressor.load(run_dir)
        if trees is not None:
            return trees
        return LightningModel.load(TabularRegressor, run_dir)

    def preprocessing(self, datamodule: L.LightningDataModule) -> dict[str, Any]:
        assert isinstance(datamodule, TabularDataModule) and datamodule.pipeline is not None
        first = read_prepared(Path(self.cfg.paths.prepared), "val", self.schema).head(1)
        columns = feature_columns(first, self.schema)
        return TabularContract(
            schema=self.schema,
            features=datamodule.pipeline,
            target=datamodule.target_params,
            baseline=datamodule.baseline,
            example_row={name: _json_value(values[0]) for name, values in columns.items()},
            limits=TabularLimits.from_serving_config(self.cfg.project.get("serving")),
        ).to_preprocessing()

    def example_input(self, preprocessing: dict[str, Any], batch: int) -> np.ndarray:
        pipeline = TabularContract.parse(preprocessing).features
        test = read_prepared(Path(self.cfg.paths.prepared), "test", self.schema).head(batch)
        return pipeline.transform(feature_columns(test, self.schema))

    def tensor_specs(
        self, preprocessing: dict[str, Any]
    ) -> tuple[list[TensorSpec], list[TensorSpec]]:
        width = len(TabularContract.parse(preprocessing).features.output_names)
        return (
            [TensorSpec(name="features", dtype="float32", shape=["batch", width])],
            [TensorSpec(name="score", dtype="float32", shape=["batch", 1])],
        )

    def headline(self, metrics: dict[str, Any]) -> dict[str, Any]:
        keep = ("mae", "mdape", "within_10pct")
        return {
            who: {k: round(float(metrics[who][k]), 4) for k in keep}
            for who in ("model", "baseline")
            if who in metrics
        }

    def gate_metrics(self, metrics: dict[str, Any]) -> dict[str, GateMetric]:
        """Median absolute percentage error and the share within +-10 % of the true value."""
        model = metrics["model"]
        return {
            "mdape": GateMetric(float(model["mdape"]), higher_is_better=False),
            "within_10pct": GateMetric(float(model["within_10pct"]), higher_is_better=True),
        }

    def reference_profile(
        self, run: RunDir, preprocessing: dict[str, Any], onnx_model: Path
    ) -> ReferenceProfile:
        """Training rows valued by the serving adapter over ``onnx_model`` (see
        :mod:`.reference`), seeded with the run's seed."""
        adapter = export_adapter(self, preprocessing, onnx_model)
        assert isinstance(adapter, TabularServing)
        train = read_prepared(Path(self.cfg.paths.prepared), "train", adapter.schema)
        return reference_profile(train, adapter.schema, adapter, seed=int(self.cfg.seed))

    def examples(self, preprocessing: dict[str, Any]) -> list[ExampleFile]:
        """A few test rows as a request CSV (see :mod:`.examples`)."""
        schema = TabularContract.parse(preprocessing).schema
        test = read_prepared(Path(self.cfg.paths.prepared), "test", schema)
        return example_rows(test, schema)

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(
        self,
        model: InferenceModel,
        preprocessing: dict[str, Any],
        source: Path | None,
        output_dir: Path,
    ) -> dict[str, Any]:
        if source is None:
            frame = read_prepared(Path(self.cfg.paths.prepared), "test", self.schema)
        else:
            frame, _, _ = self._read_clean(source)
        if frame.empty:
            raise DataError("no rows to evaluate on")
        contract = TabularContract.parse(preprocessing)
        scores = model.predict(contract.features.transform(feature_columns(frame, self.schema)))
        predicted = decode_target(contract.target, scores.reshape(-1))
        truth = frame[self.schema.target.name].to_numpy(dtype=np.float64)
        if contract.baseline is None:
            raise BundleError("the model's preprocessing has no baseline; re-export it")
        baseline = predict_group_medians(contract.baseline, group_keys(frame, self.schema))
        unit = self.schema.target.unit or self.schema.target.name
        plot = plot_predicted_vs_true(
            output_dir / "plots" / "predicted_vs_true.png", truth, predicted, baseline, unit
        )
        model_scores = valuation_scores(truth, predicted)
        baseline_scores = valuation_scores(truth, baseline)
        return {
            "task": "tabular",
            "source": str(source) if source is not None else str(self.cfg.paths.prepared),
            "target": self.schema.target.name,
            "model": model_scores,
            "baseline": {
                "kind": f"median per {self.schema.baseline_group or 'table'}",
                **baseline_scores,
            },
            "mdape_reduction_vs_baseline": 1.0 - model_scores["mdape"] / baseline_scores["mdape"],
            "plots": [str(plot)],
        }


def _mlp(cfg: DictConfig, datamodule: TabularDataModule) -> TrainedModel:
    model = cfg.model
    try:
        network = TabularRegressor(
            inputs=datamodule.n_inputs,
            target=datamodule.target_params,
            hidden=list(model.hidden),
            dropout=float(model.dropout),
            lr=float(model.lr),
            weight_decay=float(model.weight_decay),
        )
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from exc
    return LightningModel(network)


def _lightgbm(cfg: DictConfig, datamodule: TabularDataModule) -> TrainedModel:
    model = cfg.model
    return GradientBoostedRegressor(
        params=dict(model.params),
        n_estimators=int(model.n_estimators),
        early_stopping_rounds=int(model.early_stopping_rounds),
        target=datamodule.target_params,
        seed=int(cfg.seed),
    )


#: The tabular models by ``model.kind``: a new model is one more builder here.
MODEL_BUILDERS: dict[str, Callable[[DictConfig, TabularDataModule], TrainedModel]] = {
    "mlp": _mlp,
    "lightgbm": _lightgbm,
}


def _json_value(value: Any) -> Any:
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
