"""The NILM task: how the shared stages read, train, export and score seq2point models.

The project's configuration is parsed into typed settings here, once (:meth:`NilmTask.__init__`);
what the trained model stands on leaves as a :class:`~.contract.NilmContract` (``preprocessing``),
which everything after training reads back through :meth:`~.contract.NilmContract.parse`.
"""

import json
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from omegaconf import DictConfig, OmegaConf
from pydantic import ValidationError

from modelyard.core.bundle import TensorSpec
from modelyard.core.bundle_examples import ExampleFile
from modelyard.core.config import to_plain
from modelyard.core.errors import ConfigError, first_error
from modelyard.core.reference_profile import ReferenceProfile
from modelyard.core.row_accounting import ReadLedger, RefusalPolicy
from modelyard.core.run_dir import RunDir
from modelyard.projects.base import GateMetric, Task
from modelyard.projects.nilm.augmentation import ActivationRule, activation_rules
from modelyard.projects.nilm.contract import (
    DEFAULT_MAX_LENGTH,
    Appliance,
    ApplianceSettings,
    NilmContract,
)
from modelyard.projects.nilm.datamodule import NilmDataModule
from modelyard.projects.nilm.evaluation import evaluate_houses
from modelyard.projects.nilm.examples import example_day
from modelyard.projects.nilm.lightning_module import Seq2PointModule
from modelyard.projects.nilm.normalisation import Normalisation
from modelyard.projects.nilm.outages import MainsOutageRule
from modelyard.projects.nilm.preparation import PreparedHouse, prepare_house
from modelyard.projects.nilm.readers import csv_files
from modelyard.projects.nilm.reference import reference_profile
from modelyard.projects.nilm.sources import iter_raw_houses
from modelyard.projects.nilm.splits import check_house_split, split_by_time
from modelyard.projects.nilm.storage import list_prepared, load_house, save_house
from modelyard.projects.nilm.windows import check_window, gather_windows, valid_window_starts
from modelyard.projects.torch_model import LightningModel
from modelyard.projects.trained_model import InferenceModel

SUMMARY_FILE = "prepare.json"


class NilmTask(Task):
    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.data = cfg.project.data
        self.appliance_settings = appliance_table(cfg.project.get("appliances"))
        self.appliances = list(self.appliance_settings)
        self.window = int(self.data.window)
        try:
            check_window(self.window)
        except ValueError as exc:
            raise ConfigError(f"project.data.window: {exc}") from exc
        self.on_thresholds = [a.on_threshold_w for a in self.appliance_settings.values()]
        self.activation_rules = self._activation_rules()
        check_house_split(list(self.data.train_houses), list(self.data.test_houses))

    # -- data ---------------------------------------------------------------------------------
    @cached_property
    def outage_rule(self) -> MainsOutageRule | None:
        """``project.data``'s mains outage rule, read when data is prepared (not in ``__init__``:
        a run saved before the rule existed still exports)."""
        return MainsOutageRule.from_config(self.data)

    def _prepare_frames(
        self, source: Path
    ) -> tuple[list[tuple[PreparedHouse, dict[str, Any]]], ReadLedger]:
        outage_rule = self.outage_rule  # a bad setting fails before any file is read
        prepared = []
        ledger = ReadLedger(RefusalPolicy.from_config(self.data))
        limits_w = {name: a.limit_w for name, a in self.appliance_settings.items()}
        limits_w["aggregate"] = float(self.data.aggregate_limit_w)
        for name, frame in iter_raw_houses(source, self.data, self.appliances, ledger):
            house, report = prepare_house(
                name,
                frame,
                self.appliances,
                interval_s=int(self.data.interval_s),
                max_fill_s=int(self.data.max_fill_s),
                limits_w=limits_w,
                outage_rule=outage_rule,
            )
            summary = asdict(report) | {
                "windows": int(valid_window_starts(house.valid, self.window).size),
                "start": str(np.datetime64(int(house.times[0]), "ns")),
                "end": str(np.datetime64(int(house.times[-1]), "ns")),
            }
            prepared.append((house, summary))
        return prepared, ledger

    def prepare(self, source: Path, output: Path) -> dict[str, Any]:
        summaries = {}
        houses, ledger = self._prepare_frames(source)
        for house, summary in houses:
            save_house(house, output)
            summaries[house.name] = summary
        result = {
            "source": str(source),
            "interval_s": int(self.data.interval_s),
            "mains_outage": self.outage_rule.to_json() if self.outage_rule else None,
            "appliances": self.appliances,
            "houses": summaries,
            "reading": ledger.to_json(),
        }
        (output / SUMMARY_FILE).write_text(json.dumps(result, indent=2) + "\n")
        return result

    def training_files(self, raw: Path) -> list[Path]:
        if str(self.data.format) != "csv":
            return [raw / str(self.data.hdf5.file)]
        return [f for house in self.data.train_houses for f in csv_files(raw / str(house))]

    # -- model --------------------------------------------------------------------------------
    def datamodule(self) -> NilmDataModule:
        return NilmDataModule(
            prepared_dir=Path(self.cfg.paths.prepared),
            train_houses=list(self.data.train_houses),
            appliances=self.appliances,
            window=self.window,
            val_fraction=float(self.data.val_fraction),
            batch_size=int(self.data.batch_size),
            seed=int(self.cfg.seed),
            num_workers=int(self.data.num_workers),
            on_threshold_w=self.on_thresholds,
            oversample_on=int(self.data.get("oversample_on", 1)),
            augment_probability=float(self.data.augment.probability),
            augment_scale=(float(self.data.augment.scale[0]), float(self.data.augment.scale[1])),
            activation_rules=self.activation_rules,
        )

    def _activation_rules(self) -> list[ActivationRule] | None:
        """How activations are cut for augmentation (None: runs above the on-threshold): each
        appliance's own ``activations``, else ``data.augment.default_activations``."""
        default = self.data.augment.get("default_activations")
        plain = (
            OmegaConf.to_container(default, resolve=True)
            if OmegaConf.is_config(default)
            else default
        )
        if plain is not None and not isinstance(plain, dict):
            raise ConfigError(
                "project.data.augment.default_activations must be null or a mapping "
                f"{{min_power_w, max_pause_s, min_on_s, max_on_s}}, got {plain!r}"
            )
        default_rule = {str(k): v for k, v in plain.items()} if plain is not None else {}
        if plain is None and not any(a.activations for a in self.appliance_settings.values()):
            return None
        rules = []
        for (name, row), threshold in zip(
            self.appliance_settings.items(), self.on_thresholds, strict=True
        ):
            where = f"project.appliances.{name}.activations"
            if row.activations is None:
                where = f"project.data.augment.default_activations (for {name})"
            try:
                (rule,) = activation_rules(
                    {name: row.activations or default_rule},
                    [name],
                    [threshold],
                    interval_s=float(self.data.interval_s),
                    window=self.window,
                )
            except ValueError as exc:
                detail = str(exc).split(": ", 1)[-1]
                raise ConfigError(f"{where}: {detail}") from exc
            rules.append(rule)
        return rules

    def build_model(self, datamodule: L.LightningDataModule) -> LightningModel:
        assert isinstance(datamodule, NilmDataModule) and datamodule.normalisation is not None
        model_cfg = self.cfg.model
        try:
            network = Seq2PointModule(
                window=self.window,
                appliances=self.appliances,
                target_std=datamodule.normalisation.target_std,
                channels=list(model_cfg.channels),
                kernels=list(model_cfg.kernels),
                hidden=int(model_cfg.hidden),
                dropout=float(model_cfg.dropout),
                lr=float(model_cfg.lr),
                weight_decay=float(model_cfg.weight_decay),
                loss=str(model_cfg.loss),
                gated=bool(model_cfg.get("gated", False)),
                target_mean=datamodule.normalisation.target_mean,
                on_threshold_w=self.on_thresholds,
                on_loss_weight=float(model_cfg.get("on_loss_weight", 1.0)),
                on_power_weight=float(model_cfg.get("on_power_weight", 0.0)),
                hard_gate=bool(model_cfg.get("hard_gate", False)),
                members=model_cfg.get("members", 1),
            )
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from exc
        return LightningModel(network)

    def load_model(self, run_dir: RunDir) -> LightningModel:
        return LightningModel.load(Seq2PointModule, run_dir)

    def preprocessing(self, datamodule: L.LightningDataModule) -> dict[str, Any]:
        assert isinstance(datamodule, NilmDataModule) and datamodule.normalisation is not None
        return self.contract(datamodule.normalisation).to_preprocessing()

    def contract(self, normalisation: Normalisation) -> NilmContract:
        """What the trained model stands on, from the settings and the fitted statistics."""
        serving = self.cfg.project.get("serving") or {}
        try:
            return NilmContract(
                window=self.window,
                interval_s=int(self.data.interval_s),
                appliances={
                    name: Appliance(on_threshold_w=a.on_threshold_w, limit_w=a.limit_w)
                    for name, a in self.appliance_settings.items()
                },
                normalisation=normalisation,
                min_length=max(1, int(serving.get("min_length", self.window))),
                max_length=int(serving.get("max_length", DEFAULT_MAX_LENGTH)),
                max_aggregate_w=float(self.data.aggregate_limit_w),
            )
        except ValidationError as exc:
            raise ConfigError(first_error(exc, "project (data or serving)")) from None

    def saved_contract(self, preprocessing: dict[str, Any]) -> NilmContract:
        """The contract of a run or bundle (``preprocessing``); this configuration completes
        runs written before limits and lengths were part of it."""
        return NilmContract.parse(preprocessing, to_plain(self.cfg))

    def example_input(self, preprocessing: dict[str, Any], batch: int) -> np.ndarray:
        """Real windows from a prepared test house when there is one, else N(0, 1) noise."""
        window = self.saved_contract(preprocessing).window
        prepared = Path(self.cfg.paths.prepared)
        houses = [h for h in self.data.test_houses if h in list_prepared(prepared)]
        if houses:
            house = load_house(prepared / f"{houses[0]}.npz")
            starts = valid_window_starts(house.valid, window)
            if starts.size:
                chosen = np.random.default_rng(0).choice(starts, size=batch)
                norm = self.saved_contract(preprocessing).normalisation
                return gather_windows(norm.normalise_aggregate(house.aggregate), chosen, window)
        return np.random.default_rng(0).standard_normal((batch, window)).astype(np.float32)

    def tensor_specs(
        self, preprocessing: dict[str, Any]
    ) -> tuple[list[TensorSpec], list[TensorSpec]]:
        contract = self.saved_contract(preprocessing)
        return (
            [TensorSpec(name="mains", dtype="float32", shape=["batch", contract.window])],
            [TensorSpec(name="power", dtype="float32", shape=["batch", len(contract.appliances)])],
        )

    def headline(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Per appliance: model MAE, mean-baseline MAE and on/off F1."""
        return {
            name: {
                "mae_w": round(scores["model"]["mae_w"], 2),
                "baseline_mae_w": round(scores["baseline_mean"]["mae_w"], 2),
                "always_off_mae_w": round(scores["baseline_off"]["mae_w"], 2),
                "f1": round(scores["model"]["f1"], 3),
            }
            for name, scores in metrics.get("overall", {}).items()
        }

    def gate_metrics(self, metrics: dict[str, Any]) -> dict[str, GateMetric]:
        """MAE of every appliance over all test houses (lower is better)."""
        return {
            f"{name}.mae_w": GateMetric(float(scores["model"]["mae_w"]), higher_is_better=False)
            for name, scores in metrics.get("overall", {}).items()
        }

    def reference_profile(
        self, run: RunDir, preprocessing: dict[str, Any], onnx_model: Path
    ) -> ReferenceProfile:
        """Window-long chunks of the training part of the training houses (see
        :mod:`.reference`), seeded with the run's seed."""
        prepared = Path(self.cfg.paths.prepared)
        houses = [load_house(prepared / f"{name}.npz") for name in self.data.train_houses]
        train = split_by_time(houses, float(self.data.val_fraction)).train
        contract = self.saved_contract(preprocessing)
        return reference_profile(train, contract, onnx_model, seed=int(self.cfg.seed))

    def examples(self, preprocessing: dict[str, Any]) -> list[ExampleFile]:
        """One day of a test house's mains with its metered appliances (see :mod:`.examples`)."""
        return example_day(self._evaluation_houses(None), self.saved_contract(preprocessing))

    # -- evaluation ---------------------------------------------------------------------------
    def _evaluation_houses(self, source: Path | None) -> list[PreparedHouse]:
        if source is None:
            prepared = Path(self.cfg.paths.prepared)
            return [load_house(prepared / f"{name}.npz") for name in self.data.test_houses]
        return [house for house, _ in self._prepare_frames(source)[0]]

    def evaluate(
        self,
        model: InferenceModel,
        preprocessing: dict[str, Any],
        source: Path | None,
        output_dir: Path,
    ) -> dict[str, Any]:
        metrics = evaluate_houses(
            self._evaluation_houses(source),
            model.predict,
            self.saved_contract(preprocessing),
            output_dir,
            plot_days=int(self.cfg.project.evaluation.plot_days),
        )
        return {
            "task": "nilm",
            "source": str(source) if source is not None else str(self.cfg.paths.prepared),
            **metrics,
        }


def appliance_table(table: Any) -> dict[str, ApplianceSettings]:
    """``project.appliances`` as typed rows, in order; a bad row is a one-line ConfigError."""
    plain = OmegaConf.to_container(table, resolve=True) if isinstance(table, DictConfig) else table
    if not isinstance(plain, dict) or not plain:
        raise ConfigError(
            "project.appliances must map each appliance to {on_threshold_w, limit_w}, "
            f"got {plain!r}"
        )
    rows = {}
    for key, row in plain.items():
        name = str(key)
        try:
            rows[name] = ApplianceSettings.model_validate(row)
        except ValidationError as exc:
            raise ConfigError(first_error(exc, f"project.appliances.{name}")) from None
    return rows
