"""The one interface between the stages and a model, whatever trains it.

A task builds and loads :class:`TrainedModel` objects; the train stage calls :meth:`fit`, export
calls :meth:`export_onnx` and :meth:`predict_outputs` (the parity check, on every output the
graph has: a vision model also exports its compact embedding), evaluation reads
:class:`InferenceModel`. Lightning networks (:mod:`.torch_model`) and LightGBM trees
(:mod:`.tabular.gbm`) implement it, so no stage asks which kind of model it holds.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from omegaconf import DictConfig

from modelyard.core.errors import ModelyardError
from modelyard.core.run_dir import RunDir

if TYPE_CHECKING:
    import lightning as L

#: A model as evaluation sees it: a float32 input batch in, a float32 output batch out.
Predictor = Callable[[np.ndarray], np.ndarray]


class ExportError(ModelyardError):
    """The model cannot be exported, or the exported model does not reproduce it."""


@dataclass(frozen=True)
class FitRequest:
    """What a model needs to train itself into a run directory."""

    cfg: DictConfig
    datamodule: "L.LightningDataModule"
    run_dir: RunDir
    #: The validation metric that picks the best model (``project.monitor``).
    monitor: str
    #: Lightning callbacks from the stage (tracking, a sweep's pruning); other models ignore them.
    callbacks: Sequence["L.Callback"] = ()


@dataclass(frozen=True)
class FitOutcome:
    checkpoint: Path
    monitor: str
    best_score: float | None
    epochs: int


class InferenceModel(Protocol):
    """What evaluation asks of a model: predictions, and features when the model has them."""

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Float32 input batch -> float32 output batch."""
        ...

    def embed(self, batch: np.ndarray) -> np.ndarray | None:
        """Penultimate-layer features of ``batch`` for embedding plots; None when there are none."""
        ...


class TrainedModel(InferenceModel, Protocol):
    """A model a task builds (then fits) or loads from a run directory."""

    def fit(self, request: FitRequest) -> FitOutcome:
        """Train on ``request.datamodule``; save the best model into ``request.run_dir``."""
        ...

    def export_onnx(
        self, path: Path, example: np.ndarray, input_name: str, output_names: Sequence[str]
    ) -> None:
        """Write an ONNX graph with a dynamic batch axis and the given tensor names: one input
        and the outputs the task declares (``Task.tensor_specs``), the prediction first."""
        ...

    def predict_outputs(self, batch: np.ndarray) -> list[np.ndarray]:
        """What the exported graph must compute for ``batch``: every output, in order (the
        first is :meth:`predict`'s)."""
        ...


@dataclass(frozen=True)
class PredictorModel:
    """An :class:`InferenceModel` from a bare predictor (an ONNX bundle): no features."""

    run: Predictor

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.run(batch)

    def embed(self, batch: np.ndarray) -> np.ndarray | None:
        return None
