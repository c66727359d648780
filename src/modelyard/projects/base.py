"""The one interface between the shared stages and a project.

Stages (train, evaluate, export, ...) never look at a project's name; they call a :class:`Task`.
A task knows how to read and prepare its data, build and reload its model, describe the tensors
it exchanges with ONNX, and score predictions. Its serving half lives in a separate, torch-free
module (see :mod:`modelyard.serving.adapter`).
"""

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from omegaconf import DictConfig

from modelyard.core.bundle import TensorSpec

if TYPE_CHECKING:
    import lightning as L

#: A model as the stages see it: a float32 input batch in, a float32 output batch out.
Predictor = Callable[[np.ndarray], np.ndarray]


def load_lightning_checkpoint(module_class: Any, checkpoint: Path) -> Any:
    """A LightningModule subclass restored from ``checkpoint`` on the CPU, in eval mode."""
    module = module_class.load_from_checkpoint(checkpoint, map_location="cpu")
    module.eval()
    return module


@runtime_checkable
class Estimator(Protocol):
    """A model trained without Lightning (e.g. gradient-boosted trees).

    The train stage calls :meth:`fit` instead of ``lightning.Trainer.fit``; export calls
    :meth:`export_onnx` instead of the torch exporter. Everything else (parity check, bundle,
    serving) is the same for both kinds of model.
    """

    def fit(self, datamodule: Any, checkpoint: Path) -> dict[str, Any]:
        """Train, write the best model to ``checkpoint`` (no pickles), return
        ``{"monitor": name, "best_score": value, "iterations": n}``."""
        ...

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Float32 (batch, inputs) -> float32 (batch, outputs)."""
        ...

    def export_onnx(self, path: Path, input_name: str, output_name: str, inputs: int) -> None:
        """Write an ONNX graph with a dynamic batch axis and the given tensor names."""
        ...


@dataclass(frozen=True)
class GateMetric:
    """One score a promotion compares between a candidate model and the current one."""

    value: float
    higher_is_better: bool


class Task(ABC):
    """A project's domain knowledge behind a small, stage-facing interface."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    @abstractmethod
    def prepare(self, source: Path, output: Path) -> dict[str, Any]:
        """Read raw data from ``source``, write prepared data under ``output``; return a summary."""

    @abstractmethod
    def training_files(self, raw: Path) -> list[Path]:
        """The raw files training reads, fingerprinted into every run and bundle."""

    @abstractmethod
    def datamodule(self) -> "L.LightningDataModule":
        """The training/validation data, set up lazily by Lightning."""

    @abstractmethod
    def build_model(self, datamodule: "L.LightningDataModule") -> "L.LightningModule | Estimator":
        """A fresh model for the configured architecture (after ``datamodule.setup``)."""

    @abstractmethod
    def load_model(self, checkpoint: Path) -> "L.LightningModule | Estimator":
        """A trained model from its checkpoint, ready for inference (eval mode)."""

    @abstractmethod
    def preprocessing(self, datamodule: "L.LightningDataModule") -> dict[str, Any]:
        """Plain-JSON parameters that turn raw inputs into model inputs (fitted on training)."""

    @abstractmethod
    def example_input(self, preprocessing: dict[str, Any], batch: int) -> np.ndarray:
        """A realistic model input batch, used for ONNX export and the parity check."""

    @abstractmethod
    def tensor_specs(
        self, preprocessing: dict[str, Any]
    ) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """The model's input and output tensors, for the ONNX export and the manifest."""

    @abstractmethod
    def headline(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The few numbers of an evaluation a person reads first (for summaries)."""

    @abstractmethod
    def gate_metrics(self, metrics: dict[str, Any]) -> dict[str, GateMetric]:
        """The scores a promotion must not make worse (from an evaluation's metrics)."""

    @abstractmethod
    def evaluate(
        self,
        predictor: Predictor,
        preprocessing: dict[str, Any],
        source: Path | None,
        output_dir: Path,
        embedder: Predictor | None = None,
    ) -> dict[str, Any]:
        """Score the model on ``source`` (default: the configured test data); write plots.

        ``embedder``, when the model offers one, maps the same inputs to penultimate-layer
        features (for embedding plots); bundles have none.
        """
