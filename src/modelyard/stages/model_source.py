"""Resolve "the model to use" for evaluate/export: a training run directory or a bundle."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from modelyard.core.bundle import MANIFEST_FILE, load_bundle
from modelyard.core.errors import ConfigError, ModelyardError
from modelyard.core.runs import resolve_latest
from modelyard.projects.base import Estimator, Predictor, Task
from modelyard.serving.runtime import OnnxModel

CHECKPOINT = Path("checkpoints") / "best.ckpt"


@dataclass(frozen=True)
class ModelSource:
    """A loaded model as a numpy predictor plus the preprocessing it was trained with."""

    path: Path
    kind: str  # "run" | "bundle"
    predictor: Predictor
    preprocessing: dict[str, Any]
    project: str
    embedder: Predictor | None = None


def is_bundle(path: Path) -> bool:
    return (path / MANIFEST_FILE).is_file()


def latest_run(cfg: DictConfig) -> Path:
    return resolve_latest(Path(cfg.paths.runs), "training run")


def run_project(run_dir: Path) -> str:
    """The project a run was trained for, read from its saved config."""
    import yaml

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    return str(saved["project"]["name"])


def predictor_for(model: torch.nn.Module | Estimator) -> Predictor:
    """The numpy predictor of a trained model of either kind."""
    if isinstance(model, Estimator):
        return model.predict
    return torch_predictor(model)


def embedder_for(model: torch.nn.Module | Estimator) -> Predictor | None:
    """Penultimate-layer features of a torch model that defines ``embed``, else None."""
    embed = getattr(model, "embed", None)
    if isinstance(model, Estimator) or embed is None:
        return None

    def features(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return embed(torch.from_numpy(batch)).numpy()  # type: ignore[no-any-return]

    return features


def torch_predictor(module: torch.nn.Module) -> Predictor:
    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(batch)).numpy()  # type: ignore[no-any-return]

    return predict


def load_model_source(cfg: DictConfig, task: Task, path: Path | None) -> ModelSource:
    """Load ``path`` (default: the latest run) as a predictor, checking it fits ``cfg.project``."""
    path = Path(path) if path is not None else latest_run(cfg)
    if not path.is_dir():
        raise ModelyardError(f"model not found: {path} (expected a run directory or a bundle)")
    if is_bundle(path):
        bundle = load_bundle(path)
        onnx_model = OnnxModel(bundle.model_path)
        source = ModelSource(
            path, "bundle", onnx_model.run, bundle.manifest.preprocessing, bundle.manifest.project
        )
    else:
        checkpoint = path / CHECKPOINT
        if not checkpoint.is_file():
            raise ModelyardError(
                f"{path} is neither a bundle nor a training run ({CHECKPOINT} missing)"
            )
        preprocessing = json.loads((path / "preprocessing.json").read_text())
        model = task.load_model(checkpoint)
        source = ModelSource(
            path,
            "run",
            predictor_for(model),
            preprocessing,
            run_project(path),
            embedder=embedder_for(model),
        )
    if source.project != str(cfg.project.name):
        raise ConfigError(
            f"{path} holds a {source.project!r} model but the configuration is for project "
            f"{cfg.project.name!r}; add project={source.project}"
        )
    return source
