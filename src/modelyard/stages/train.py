"""Stage: train the configured model; the run directory holds everything needed to reproduce it.

The run directory's files are named by :class:`modelyard.core.run_dir.RunDir`; the model trains
itself through :class:`modelyard.projects.trained_model.TrainedModel` (Lightning or not).

Under DDP, Lightning starts the other local processes by running the same command again; they
find the run directory through ``MODELYARD_RUN_NAME`` and leave every file to rank 0.
"""

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from modelyard.core.config import save_config, to_plain
from modelyard.core.energy import EnergyMeter
from modelyard.core.environment import environment_report, key_versions
from modelyard.core.errors import ConfigError
from modelyard.core.families import load_task
from modelyard.core.gitinfo import git_state
from modelyard.core.hashing import fingerprint_files
from modelyard.core.run_dir import RunDir, write_json
from modelyard.core.runs import mark_latest, timestamp_name
from modelyard.core.seeding import seed_everything
from modelyard.projects.base import Task
from modelyard.projects.lightning_training import profiler_name
from modelyard.projects.trained_model import FitRequest
from modelyard.tracking.base import NullTracker, Tracker, flatten
from modelyard.tracking.callback import EpochMetricsCallback
from modelyard.tracking.factory import start_tracking
from modelyard.tracking.training_curves import plot_training_curves

#: Environment variable through which DDP worker processes find rank 0's run directory.
RUN_NAME_ENV = "MODELYARD_RUN_NAME"


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    checkpoint: Path
    monitor: str
    best_score: float | None
    epochs: int
    duration_s: float
    data_fingerprint: str
    energy: dict[str, Any] = field(default_factory=dict)
    tracking: dict[str, str] | None = None


def is_main_process() -> bool:
    """True in the process that owns the run's files (global rank 0, or no distribution)."""
    return int(getattr(rank_zero_only, "rank", 0) or 0) == 0


def _run_name(cfg: DictConfig) -> str:
    if cfg.get("run_name"):
        return str(cfg.run_name)
    shared = os.environ.get(RUN_NAME_ENV)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1 or not is_main_process()
    if distributed and not shared:  # torchrun/SLURM started every rank: no shared timestamp
        raise ConfigError(
            "distributed run started outside modelyard (torchrun, SLURM): set run_name=... "
            "(e.g. the job id) so that every rank writes to the same run"
        )
    if not is_main_process():
        return str(shared)
    return timestamp_name()


def _start_tracking(
    cfg: DictConfig, run_dir: RunDir, fingerprint: str, parent_run_id: str | None
) -> Tracker:
    git = git_state()
    tags = {
        "project": str(cfg.project.name),
        "model": str(cfg.model.name),
        "git_commit": str(git.commit),
        "git_dirty": str(git.dirty),
        "data_fingerprint": fingerprint,
        "run_dir": str(run_dir.path.resolve()),
    }
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    tracker = start_tracking(cfg, run_dir.path, tags)
    versions = {f"version.{k}": v for k, v in key_versions().items()}
    tracker.log_params(flatten(to_plain(cfg)) | versions)
    for path in (run_dir.config, run_dir.environment):
        tracker.log_artifact(path)
    return tracker


def run(
    cfg: DictConfig,
    callbacks: Sequence[L.Callback] = (),
    parent_run_id: str | None = None,
) -> TrainResult:
    """Train ``cfg.project`` with ``cfg.model`` and ``cfg.trainer``; return where the run lives.

    ``callbacks`` are added to the Lightning trainer (e.g. a sweep's pruning callback);
    ``parent_run_id`` nests the tracked run under another one (the sweep's).
    """
    profiler_name(cfg)  # a typo fails now, not after the data is set up
    seed_everything(int(cfg.seed), int(cfg.trainer.get("num_threads", 0)))
    task = load_task(cfg)
    main = is_main_process()
    run_dir = RunDir(Path(cfg.paths.runs) / _run_name(cfg))
    os.environ[RUN_NAME_ENV] = run_dir.path.name  # inherited by the processes DDP starts
    fingerprint = fingerprint_files(task.training_files(Path(cfg.paths.raw)), Path(cfg.paths.raw))
    datamodule = task.datamodule()
    datamodule.setup("fit")  # bad data fails here, before a tracked run is opened
    tracker: Tracker = NullTracker()
    if main:
        run_dir.path.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir.config)
        write_json(run_dir.environment, environment_report())
        tracker = _start_tracking(cfg, run_dir, fingerprint, parent_run_id)
    try:
        result = _train(cfg, task, datamodule, run_dir, fingerprint, tracker, callbacks, main)
    except BaseException:
        tracker.finish(failed=True)
        raise
    tracker.finish()
    return result


def _train(
    cfg: DictConfig,
    task: Task,
    datamodule: L.LightningDataModule,
    run_dir: RunDir,
    fingerprint: str,
    tracker: Tracker,
    callbacks: Sequence[L.Callback],
    main: bool,
) -> TrainResult:
    model = task.build_model(datamodule)
    if main:
        write_json(run_dir.preprocessing, task.preprocessing(datamodule))

    request = FitRequest(
        cfg=cfg,
        datamodule=datamodule,
        run_dir=run_dir,
        monitor=str(cfg.project.get("monitor", "val_loss")),
        callbacks=[EpochMetricsCallback(tracker), *callbacks],
    )
    started = time.perf_counter()
    with EnergyMeter() as meter:
        outcome = model.fit(request)
    duration = time.perf_counter() - started
    energy = meter.report.as_dict() if meter.report else {}

    git = git_state()
    result = TrainResult(
        run_dir=run_dir.path,
        checkpoint=outcome.checkpoint,
        monitor=outcome.monitor,
        best_score=outcome.best_score,
        epochs=outcome.epochs,
        duration_s=duration,
        data_fingerprint=fingerprint,
        energy=energy,
        tracking=None if tracker.run is None else asdict(tracker.run),
    )
    if not main:
        return result
    fitted = task.fitted_preprocessing(run_dir)
    if fitted is not None:
        write_json(run_dir.preprocessing, fitted)
    write_json(
        run_dir.train_summary, asdict(result) | {"git_commit": git.commit, "git_dirty": git.dirty}
    )
    plot_training_curves(run_dir.metrics_csv, run_dir.curves)
    _track_outcome(tracker, run_dir, result)
    mark_latest(run_dir.path)
    return result


def _track_outcome(tracker: Tracker, run_dir: RunDir, result: TrainResult) -> None:
    final = {"train_duration_s": result.duration_s, "epochs": float(result.epochs)}
    if result.best_score is not None:
        final[f"best_{result.monitor}"] = result.best_score
    if result.energy.get("total_joules") is not None:
        final["energy_joules"] = float(result.energy["total_joules"])
    tracker.log_metrics(final)
    tracker.set_tags({"energy_measured": str(bool(result.energy.get("measured")))})
    for path in (
        run_dir.train_summary,
        run_dir.preprocessing,
        run_dir.curves,
        run_dir.logs,
        run_dir.profile,
    ):
        if path.exists():
            tracker.log_artifact(path, path.name if path.is_dir() else None)
