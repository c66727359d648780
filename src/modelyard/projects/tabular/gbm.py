"""Gradient-boosted trees (LightGBM) as a first-class tabular model: same features, same bundle.

Trained on the feature matrix of :mod:`.features` (so preprocessing, serving and the API are the
ones the MLP uses), with early stopping on the validation rows. The saved model is LightGBM's own
text format (``RunDir.lightgbm_model``), not a pickle; export converts the booster to ONNX
(onnxmltools) and the usual parity check compares it with LightGBM's predictions.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.core.errors import ConfigError
from modelyard.core.run_dir import RunDir
from modelyard.projects.tabular.target_scaling import decode_target
from modelyard.projects.trained_model import FitOutcome, FitRequest

#: First bytes of a LightGBM text model. Runs written before LightGBM had a file name of its own
#: saved it as the Lightning checkpoint (a zip); these bytes tell the two apart.
TEXT_MODEL_MAGIC = b"tree"
ONNX_OPSET = 15  # the highest onnxmltools' LightGBM converter supports


class GradientBoostedRegressor:
    """Implements :class:`modelyard.projects.trained_model.TrainedModel` with LightGBM."""

    def __init__(
        self,
        params: dict[str, Any],
        n_estimators: int,
        early_stopping_rounds: int,
        target: dict[str, Any],
        seed: int,
        booster: Any = None,
    ) -> None:
        self.params = dict(params)
        self.n_estimators = n_estimators
        self.early_stopping_rounds = early_stopping_rounds
        self.target = target
        self.seed = seed
        self.booster = booster

    def fit(self, request: FitRequest) -> FitOutcome:
        """Boost with early stopping on the validation rows; scored by their median APE."""
        import lightgbm as lgb

        datamodule: Any = request.datamodule
        x_train, y_train = (t.numpy() for t in datamodule.train_set.tensors)
        x_val, y_val = (t.numpy() for t in datamodule.val_set.tensors)
        params = {**self.params, "seed": self.seed, "verbosity": -1, "deterministic": True}
        try:
            self.booster = lgb.train(
                params,
                lgb.Dataset(x_train, y_train.ravel()),
                num_boost_round=self.n_estimators,
                valid_sets=[lgb.Dataset(x_val, y_val.ravel())],
                callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
            )
        except lgb.basic.LightGBMError as exc:
            raise ConfigError(f"model (lightgbm): {exc}") from exc
        iterations = int(self.booster.best_iteration or self.booster.current_iteration())
        text = float32_exact_thresholds(self.booster.model_to_string(num_iteration=iterations))
        self.booster = lgb.Booster(model_str=text)
        checkpoint = request.run_dir.lightgbm_model
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_text(text)
        true = decode_target(self.target, y_val.ravel())
        predicted = decode_target(self.target, self.predict(x_val).ravel())
        return FitOutcome(
            checkpoint=checkpoint,
            monitor="val_mdape",
            best_score=float(np.median(np.abs(predicted - true) / np.abs(true))),
            epochs=iterations,
        )

    def predict(self, batch: np.ndarray) -> np.ndarray:
        assert self.booster is not None, "fit or load the model first"
        scores = self.booster.predict(batch)
        return np.asarray(scores, dtype=np.float32).reshape(-1, 1)

    def embed(self, batch: np.ndarray) -> np.ndarray | None:
        return None  # trees have no feature layer

    def predict_outputs(self, batch: np.ndarray) -> list[np.ndarray]:
        return [self.predict(batch)]

    def export_onnx(
        self, path: Path, example: np.ndarray, input_name: str, output_names: Sequence[str]
    ) -> None:
        import onnx
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType

        model = onnxmltools.convert_lightgbm(
            self.booster,
            initial_types=[(input_name, FloatTensorType([None, example.shape[1]]))],
            target_opset=ONNX_OPSET,
        )
        (output_name,) = output_names  # a regressor has one output, its prediction
        produced = model.graph.output[0].name
        if produced != output_name:  # give the output the name the manifest declares
            model.graph.node.append(onnx.helper.make_node("Identity", [produced], [output_name]))
            model.graph.output[0].name = output_name
        onnx.save_model(model, str(path))

    @classmethod
    def load(cls, run_dir: RunDir) -> "GradientBoostedRegressor | None":
        """The run's LightGBM model, or None when the run holds another kind of model."""
        import lightgbm as lgb

        checkpoint = saved_text_model(run_dir)
        if checkpoint is None:
            return None
        target = run_dir.read_preprocessing()["target"]
        booster = lgb.Booster(model_file=str(checkpoint))
        return cls(
            params={},
            n_estimators=0,
            early_stopping_rounds=0,
            target=target,
            seed=0,
            booster=booster,
        )


def float32_exact_thresholds(model_text: str) -> str:
    """Move every split threshold down to the largest float32 not above it.

    LightGBM keeps thresholds as doubles and goes left when ``x <= threshold``; ONNX tree
    ensembles store them as float32. A double threshold that rounds *up* to float32 would send a
    float32 input equal to the rounded value left in ONNX and right in LightGBM. With the
    threshold moved down to a float32 value, ``x <= t32`` and ``x <= t`` agree for every float32
    input, so the trees decide identically in both runtimes (the parity check then holds).
    """
    # The header's byte sizes of each tree no longer hold once numbers are rewritten; without
    # them LightGBM parses the trees one after another.
    lines = [
        line for line in model_text.splitlines(keepends=True) if not line.startswith("tree_sizes=")
    ]
    for i, line in enumerate(lines):
        if line.startswith("threshold="):
            values = np.array(line[len("threshold=") :].split(), dtype=np.float64)
            rounded = values.astype(np.float32)
            too_high = rounded.astype(np.float64) > values
            rounded[too_high] = np.nextafter(rounded[too_high], np.float32(-np.inf))
            lines[i] = "threshold=" + " ".join(repr(float(v)) for v in rounded) + "\n"
    return "".join(lines)


def saved_text_model(run_dir: RunDir) -> Path | None:
    """Where ``run_dir`` keeps a LightGBM text model: its own file, or (runs written before that
    file existed) the Lightning checkpoint's name; None for a run of another model."""
    if run_dir.lightgbm_model.is_file():
        return run_dir.lightgbm_model
    legacy = run_dir.checkpoint
    if legacy.is_file():
        with legacy.open("rb") as handle:
            if handle.read(len(TEXT_MODEL_MAGIC)) == TEXT_MODEL_MAGIC:
                return legacy
    return None
