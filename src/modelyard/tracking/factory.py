"""Open the tracker a configuration asks for, or resume the one a run directory records."""

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from modelyard.core.errors import ConfigError
from modelyard.core.runs import default_workdir
from modelyard.tracking.base import NullTracker, TrackedRun, Tracker, TrackingError

BACKENDS = ("mlflow", "wandb", "none")
logger = logging.getLogger(__name__)


def start_tracking(
    cfg: DictConfig, run_dir: Path, tags: Mapping[str, str] | None = None
) -> Tracker:
    """A new tracked run for the training run in ``run_dir`` (recorded in its tracking.json)."""
    settings: Any = cfg.get("tracking") or {"backend": "none"}
    backend = str(settings.get("backend", "none"))
    tracker: Tracker
    if backend == "none":
        return NullTracker()
    if backend == "mlflow":
        from modelyard.tracking.mlflow_backend import MlflowTracker

        tracker = MlflowTracker.start(
            uri=str(settings.uri),
            experiment=str(settings.experiment),
            artifacts=str(settings.get("artifacts") or "") or None,
            run_name=run_dir.name,
            tags=tags,
        )
    elif backend == "wandb":
        from modelyard.tracking.wandb_backend import WandbTracker

        tracker = WandbTracker.open(
            project=str(settings.project),
            entity=settings.get("entity"),
            mode=str(settings.get("mode", "auto")),
            directory=Path(str(settings.get("dir") or cfg.paths.workdir)),
            run_name=run_dir.name,
        )
        if tags:
            tracker.set_tags(tags)
    else:
        raise ConfigError(f"tracking.backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if tracker.run is not None:
        tracker.run.save(run_dir)
    return tracker


def resume_tracking(directory: Path, required: bool = False) -> Tracker:
    """The tracker of the run recorded in ``directory`` (a run dir), or a NullTracker.

    A run directory can travel without its tracking store (``dvc pull``, a copy from a
    colleague): unless ``required``, a tracked run that cannot be reached is reported as a
    warning and the stage goes on untracked, rather than failing an evaluation or an export.
    """
    run = TrackedRun.read(directory)
    if run is None:
        return NullTracker()
    try:
        return _resume(run)
    except TrackingError as exc:
        if required:
            raise
        logger.warning("%s; going on without tracking", exc)
        return NullTracker()


def _resume(run: TrackedRun) -> Tracker:
    if run.backend == "mlflow":
        from modelyard.tracking.mlflow_backend import MlflowTracker

        return MlflowTracker.resume(run)
    if run.backend == "wandb":
        from modelyard.tracking.wandb_backend import WandbTracker

        offline = Path(run.location).is_absolute()
        # offline runs live in <dir>/wandb/offline-run-*; online ones need a local scratch dir
        directory = Path(run.location).parent.parent if offline else default_workdir()
        return WandbTracker.open(
            project=run.experiment,
            entity=None,
            mode="offline" if offline else "online",
            directory=directory,
            run_id=run.run_id,
        )
    raise TrackingError(f"unknown tracking backend {run.backend!r}")
