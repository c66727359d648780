"""A training run's directory: the one place that names its files.

Training writes these files, evaluation, export, sweeps and the registry read them back; all of
them go through :class:`RunDir`, so a file is renamed here or nowhere. Layout
(``paths.runs/<run name>``)::

    config.yaml                   the resolved configuration
    environment.json              Python, platform and every installed package version
    preprocessing.json            parameters fitted on the training data (plain JSON)
    checkpoints/best.ckpt         a Lightning model: the best epoch by the monitored metric
    checkpoints/model.lgbm.txt    a LightGBM model: LightGBM's own text format (no pickle)
    logs/metrics.csv              per-step / per-epoch metrics
    training_curves.png           loss per epoch
    profile/                      profiler report, when ``trainer.profiler`` is set
    evaluation/metrics.json       scores of ``modelyard evaluate`` (also inside a bundle)
    train.json                    summary: best score, epochs, duration, energy, data, git

Runs written before LightGBM had a file of its own hold its text model as
``checkpoints/best.ckpt``; :func:`modelyard.projects.tabular.gbm.saved_text_model` still finds it.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from modelyard.core.config import read_saved_config
from modelyard.core.errors import ModelyardError

#: The evaluation scores, relative to a run directory or a bundle.
METRICS_FILE = Path("evaluation") / "metrics.json"


@dataclass(frozen=True)
class RunDir:
    """Paths and readers of one training run's files."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def environment(self) -> Path:
        return self.path / "environment.json"

    @property
    def preprocessing(self) -> Path:
        return self.path / "preprocessing.json"

    @property
    def train_summary(self) -> Path:
        return self.path / "train.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def checkpoint(self) -> Path:
        """A Lightning model's best checkpoint."""
        return self.checkpoints / "best.ckpt"

    @property
    def lightgbm_model(self) -> Path:
        """A LightGBM model in LightGBM's text format."""
        return self.checkpoints / "model.lgbm.txt"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def metrics_csv(self) -> Path:
        return self.logs / "metrics.csv"

    @property
    def curves(self) -> Path:
        return self.path / "training_curves.png"

    @property
    def profile(self) -> Path:
        return self.path / "profile"

    @property
    def evaluation_metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def model_files(self) -> tuple[Path, ...]:
        """Every file a trained model may be saved as (one of them exists once training ends)."""
        return (self.checkpoint, self.lightgbm_model)

    def is_trained(self) -> bool:
        return any(path.is_file() for path in self.model_files)

    def require_trained(self) -> "RunDir":
        """This run, or a clear error when it is not a finished training run."""
        if not self.path.is_dir():
            raise ModelyardError(f"model not found: {self.path} (expected a run directory)")
        if not self.is_trained():
            names = " or ".join(str(p.relative_to(self.path)) for p in self.model_files)
            raise ModelyardError(f"{self.path} is not a finished training run ({names} missing)")
        return self

    def read_config(self) -> DictConfig:
        return read_saved_config(self.config)

    def read_preprocessing(self) -> dict[str, Any]:
        return _read_object(self.preprocessing)

    def read_train_summary(self) -> dict[str, Any]:
        return _read_object(self.train_summary)

    def project(self) -> str:
        """The project the run was trained for, from its saved configuration."""
        return str(self.read_config().project.name)


def _read_object(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelyardError(f"{path} is missing; the run is incomplete, train it again") from exc
    except json.JSONDecodeError as exc:
        raise ModelyardError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ModelyardError(f"{path} does not hold a JSON object")
    return loaded


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON (``default=str`` for dates and paths)."""
    path.write_text(json.dumps(value, indent=2, default=str) + "\n")
