"""Resolve "the model to use" for evaluate/export: a training run directory or a bundle."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from modelyard.core.bundle import MANIFEST_FILE, load_bundle
from modelyard.core.errors import ConfigError, ModelyardError
from modelyard.core.run_dir import RunDir
from modelyard.core.runs import resolve_latest
from modelyard.projects.base import Task
from modelyard.projects.trained_model import InferenceModel, PredictorModel
from modelyard.serving.runtime import OnnxModel


@dataclass(frozen=True)
class ModelSource:
    """A loaded model plus the preprocessing it was trained with."""

    path: Path
    kind: str  # "run" | "bundle"
    model: InferenceModel
    preprocessing: dict[str, Any]
    project: str


def is_bundle(path: Path) -> bool:
    return (path / MANIFEST_FILE).is_file()


def latest_run(cfg: DictConfig) -> RunDir:
    return RunDir(resolve_latest(Path(cfg.paths.runs), "training run"))


def load_model_source(cfg: DictConfig, task: Task, path: Path | None) -> ModelSource:
    """Load ``path`` (default: the latest run), checking that it fits ``cfg.project``."""
    path = Path(path) if path is not None else latest_run(cfg).path
    if not path.is_dir():
        raise ModelyardError(f"model not found: {path} (expected a run directory or a bundle)")
    if is_bundle(path):
        bundle = load_bundle(path)
        _check_project(cfg, path, bundle.manifest.project)
        onnx_model = PredictorModel(OnnxModel(bundle.model_path).run)
        return ModelSource(
            path, "bundle", onnx_model, bundle.manifest.preprocessing, bundle.manifest.project
        )
    run_dir = RunDir(path)
    if not run_dir.is_trained():
        raise ModelyardError(f"{path} is neither a bundle nor a finished training run")
    project = run_dir.project()
    _check_project(cfg, path, project)
    return ModelSource(path, "run", task.load_model(run_dir), run_dir.read_preprocessing(), project)


def _check_project(cfg: DictConfig, path: Path, project: str) -> None:
    if project != str(cfg.project.name):
        raise ConfigError(
            f"{path} holds a {project!r} model but the configuration is for project "
            f"{cfg.project.name!r}; add project={project}"
        )
