"""Stage: train a model with Lightning; the run directory holds everything needed to reproduce it.

Run directory layout (``paths.runs/<run name>``)::

    config.yaml            the resolved configuration
    environment.json       Python, platform and every installed package version
    preprocessing.json     parameters fitted on the training data (plain JSON)
    checkpoints/best.ckpt  the best epoch by the project's monitored validation metric
    logs/metrics.csv       per-step / per-epoch metrics
    training_curves.png    loss per epoch
    profile/               profiler report, when ``trainer.profiler`` is set
    tracking.json          where the run is tracked (MLflow / W&B run id), when it is
    train.json             summary: best score, epochs, duration, energy, data fingerprint, git

Under DDP, Lightning starts the other local processes by running the same command again; they
find the run directory through ``MODELYARD_RUN_NAME`` and leave every file to rank 0.
"""

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, WeightAveraging
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.profilers import (
    AdvancedProfiler,
    Profiler,
    PyTorchProfiler,
    SimpleProfiler,
)
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from modelyard.core.config import save_config, to_plain
from modelyard.core.energy import EnergyMeter
from modelyard.core.environment import environment_report, key_versions
from modelyard.core.errors import ConfigError
from modelyard.core.gitinfo import git_state
from modelyard.core.hashing import fingerprint_files
from modelyard.core.runs import mark_latest, timestamp_name
from modelyard.core.seeding import seed_everything
from modelyard.projects.base import Estimator
from modelyard.projects.registry import load_task
from modelyard.stages.curves import plot_training_curves
from modelyard.stages.model_source import CHECKPOINT
from modelyard.tracking.base import NullTracker, Tracker, flatten
from modelyard.tracking.callback import EpochMetricsCallback
from modelyard.tracking.factory import start_tracking

#: Keys of the ``trainer`` config group that modelyard handles itself (not lightning.Trainer args).
_OWN_TRAINER_KEYS = {"early_stopping_patience", "ema_decay", "num_threads", "profiler"}
#: Environment variable through which DDP worker processes find rank 0's run directory.
RUN_NAME_ENV = "MODELYARD_RUN_NAME"
PROFILERS = ("simple", "advanced", "pytorch")
PROFILE_DIR = "profile"


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


def _profiler_name(cfg: DictConfig) -> str | None:
    """``trainer.profiler``, checked (None when profiling is off)."""
    name = cfg.trainer.get("profiler")
    if name in (None, "", False):
        return None
    if name not in PROFILERS:
        raise ConfigError(f"trainer.profiler must be one of {', '.join(PROFILERS)}, not {name!r}")
    return str(name)


def _profiler(cfg: DictConfig, run_dir: Path) -> Profiler | None:
    """``trainer.profiler=simple|advanced|pytorch``: a report in ``<run>/profile/``."""
    name = _profiler_name(cfg)
    if name is None:
        return None
    dirpath, filename = run_dir / PROFILE_DIR, "report"
    if name == "simple":
        return SimpleProfiler(dirpath=dirpath, filename=filename, extended=True)
    if name == "advanced":
        return AdvancedProfiler(dirpath=dirpath, filename=filename)
    return PyTorchProfiler(
        dirpath=dirpath, filename=filename, sort_by_key="cpu_time_total", row_limit=40
    )


def _trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    kwargs = {str(k): v for k, v in cfg.trainer.items() if k not in _OWN_TRAINER_KEYS}
    return kwargs


def _ema_callback(cfg: DictConfig) -> WeightAveraging | None:
    """An exponential moving average of the weights when ``trainer.ema_decay`` is in (0, 1).

    Validation, checkpoint selection and the saved checkpoint then use the averaged weights
    (batch-norm statistics included), which are steadier than the last step's. The decay warms
    up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early epochs are not judged
    on an average still dominated by the random initial weights.
    """
    decay = float(cfg.trainer.get("ema_decay", 0) or 0)
    if decay == 0:
        return None
    if not 0 < decay < 1:
        raise ConfigError(f"trainer.ema_decay must be 0 (off) or in (0, 1), got {decay}")
    return WeightAveraging(use_buffers=True, avg_fn=warmed_up_ema(decay))


def warmed_up_ema(decay: float) -> Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]:
    """``avg_fn`` of torch's ``AveragedModel``: EMA whose decay warms up with the update count."""

    def average(averaged: torch.Tensor, current: torch.Tensor, updates: Any) -> torch.Tensor:
        n = float(updates)
        rate = min(decay, (1 + n) / (10 + n))
        return rate * averaged + (1 - rate) * current

    return average


def _fit_lightning(
    cfg: DictConfig,
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    run_dir: Path,
    monitor: str,
    extra_callbacks: Sequence[L.Callback],
) -> tuple[Path, float | None, int]:
    """``lightning.Trainer.fit`` with best-checkpoint selection and early stopping."""
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / CHECKPOINT.parent,
        filename=CHECKPOINT.stem,
        monitor=monitor,
        mode="min",
        save_top_k=1,
        enable_version_counter=False,
    )
    callbacks: list[L.Callback] = [checkpoint, *extra_callbacks]
    patience = int(cfg.trainer.get("early_stopping_patience", 0))
    if patience > 0:
        callbacks.append(EarlyStopping(monitor=monitor, mode="min", patience=patience))
    ema = _ema_callback(cfg)
    if ema is not None:
        callbacks.append(ema)
    try:
        trainer = L.Trainer(
            **_trainer_kwargs(cfg),
            callbacks=callbacks,
            logger=CSVLogger(run_dir, name="logs", version=""),
            default_root_dir=run_dir,
            profiler=_profiler(cfg, run_dir),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"trainer: {exc}") from exc
    trainer.fit(model, datamodule=datamodule)
    best = checkpoint.best_model_score
    path = Path(checkpoint.best_model_path or run_dir / CHECKPOINT)
    return path, float(best) if best is not None else None, int(trainer.current_epoch)


def _start_tracking(
    cfg: DictConfig, run_dir: Path, fingerprint: str, parent_run_id: str | None
) -> Tracker:
    git = git_state()
    tags = {
        "project": str(cfg.project.name),
        "model": str(cfg.model.name),
        "git_commit": str(git.commit),
        "git_dirty": str(git.dirty),
        "data_fingerprint": fingerprint,
        "run_dir": str(run_dir.resolve()),
    }
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    tracker = start_tracking(cfg, run_dir, tags)
    versions = {f"version.{k}": v for k, v in key_versions().items()}
    tracker.log_params(flatten(to_plain(cfg)) | versions)
    for name in ("config.yaml", "environment.json"):
        tracker.log_artifact(run_dir / name)
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
    _profiler_name(cfg)  # a typo fails now, not after the data is set up
    seed_everything(int(cfg.seed), int(cfg.trainer.get("num_threads", 0)))
    task = load_task(cfg)
    main = is_main_process()
    run_dir = Path(cfg.paths.runs) / _run_name(cfg)
    os.environ[RUN_NAME_ENV] = run_dir.name  # inherited by the processes DDP starts
    fingerprint = fingerprint_files(task.training_files(Path(cfg.paths.raw)), Path(cfg.paths.raw))
    datamodule = task.datamodule()
    datamodule.setup("fit")  # bad data fails here, before a tracked run is opened
    tracker: Tracker = NullTracker()
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        (run_dir / "environment.json").write_text(json.dumps(environment_report(), indent=2) + "\n")
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
    task: Any,
    datamodule: L.LightningDataModule,
    run_dir: Path,
    fingerprint: str,
    tracker: Tracker,
    callbacks: Sequence[L.Callback],
    main: bool,
) -> TrainResult:
    model = task.build_model(datamodule)
    preprocessing = task.preprocessing(datamodule)
    if main:
        (run_dir / "preprocessing.json").write_text(json.dumps(preprocessing, indent=2) + "\n")

    monitor = str(cfg.project.get("monitor", "val_loss"))
    started = time.perf_counter()
    with EnergyMeter() as meter:
        if isinstance(model, Estimator):
            outcome = model.fit(datamodule, run_dir / CHECKPOINT)
            checkpoint_path, best, epochs = (
                run_dir / CHECKPOINT,
                outcome["best_score"],
                outcome["iterations"],
            )
            monitor = str(outcome.get("monitor", monitor))
        else:
            extra = [EpochMetricsCallback(tracker), *callbacks]
            checkpoint_path, best, epochs = _fit_lightning(
                cfg, model, datamodule, run_dir, monitor, extra
            )
    duration = time.perf_counter() - started
    energy = meter.report.as_dict() if meter.report else {}

    git = git_state()
    result = TrainResult(
        run_dir=run_dir,
        checkpoint=checkpoint_path,
        monitor=monitor,
        best_score=float(best) if best is not None else None,
        epochs=int(epochs),
        duration_s=duration,
        data_fingerprint=fingerprint,
        energy=energy,
        tracking=None if tracker.run is None else asdict(tracker.run),
    )
    if not main:
        return result
    summary = asdict(result) | {"git_commit": git.commit, "git_dirty": git.dirty}
    (run_dir / "train.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    plot_training_curves(run_dir / "logs" / "metrics.csv", run_dir / "training_curves.png")
    _track_outcome(tracker, run_dir, result)
    mark_latest(run_dir)
    return result


def _track_outcome(tracker: Tracker, run_dir: Path, result: TrainResult) -> None:
    final = {"train_duration_s": result.duration_s, "epochs": float(result.epochs)}
    if result.best_score is not None:
        final[f"best_{result.monitor}"] = result.best_score
    if result.energy.get("total_joules") is not None:
        final["energy_joules"] = float(result.energy["total_joules"])
    tracker.log_metrics(final)
    tracker.set_tags({"energy_measured": str(bool(result.energy.get("measured")))})
    for name in ("train.json", "preprocessing.json", "training_curves.png", "logs", PROFILE_DIR):
        path = run_dir / name
        if path.exists():
            tracker.log_artifact(path, name if path.is_dir() else None)
