"""The one interface between the shared stages and a project.

Stages (train, evaluate, export, ...) never look at a project's name; they call a :class:`Task`.
A task knows how to read and prepare its data, build and reload its model, describe the tensors
it exchanges with ONNX, and score predictions. Its serving half lives in a separate, torch-free
module (see :mod:`modelyard.serving.adapter`).
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig

from modelyard.core.bundle import TensorSpec
from modelyard.core.bundle_examples import ExampleFile
from modelyard.core.reference_profile import ReferenceProfile
from modelyard.core.run_dir import RunDir
from modelyard.projects.trained_model import InferenceModel, TrainedModel

if TYPE_CHECKING:
    import lightning as L


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
    def build_model(self, datamodule: "L.LightningDataModule") -> TrainedModel:
        """A fresh model for the configured architecture (after ``datamodule.setup``)."""

    @abstractmethod
    def load_model(self, run_dir: RunDir) -> TrainedModel:
        """The model a finished training run saved, ready for inference (eval mode)."""

    @abstractmethod
    def preprocessing(self, datamodule: "L.LightningDataModule") -> dict[str, Any]:
        """Plain-JSON parameters that turn raw inputs into model inputs (fitted on training)."""

    def fitted_preprocessing(self, run: RunDir) -> dict[str, Any] | None:
        """The run's preprocessing completed with facts that need the trained model (vision: a
        two-class model's decision threshold, chosen on the validation split), written over
        ``preprocessing.json`` after training; None (the default): nothing to add."""
        return None

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
        model: InferenceModel,
        preprocessing: dict[str, Any],
        source: Path | None,
        output_dir: Path,
    ) -> dict[str, Any]:
        """Score ``model`` on ``source`` (default: the configured test data); write plots.

        A task that plots embeddings asks ``model.embed``, which a bundle answers with None.
        """

    @abstractmethod
    def reference_profile(
        self, run: RunDir, preprocessing: dict[str, Any], onnx_model: Path
    ) -> ReferenceProfile:
        """What drift is measured against: a bounded sample of the training split, described
        by the family's drift features (``drift_features``) exactly as the server logs a
        request, predictions made with the exported ``onnx_model``."""

    def examples(self, preprocessing: dict[str, Any]) -> list[ExampleFile]:
        """A few real inputs from the test split, shipped in the bundle for people to try (the
        web UI's "pick an example"): as a user would upload or type them, bounded in size (see
        :mod:`modelyard.core.bundle_examples`). The default ships none."""
        return []
