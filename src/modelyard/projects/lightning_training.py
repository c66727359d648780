"""Training a LightningModule the way every modelyard project does.

``lightning.Trainer`` built from the ``trainer`` config group, with best-checkpoint selection on
the project's monitored metric, optional early stopping, an optional exponential moving average of
the weights (``trainer.ema_decay``) and an optional profiler (``trainer.profiler``).
"""

from collections.abc import Callable
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
from omegaconf import DictConfig

from modelyard.core.errors import ConfigError
from modelyard.core.run_dir import RunDir
from modelyard.projects.trained_model import FitOutcome, FitRequest

#: Keys of the ``trainer`` config group that modelyard handles itself (not lightning.Trainer args).
_OWN_TRAINER_KEYS = {"early_stopping_patience", "ema_decay", "num_threads", "profiler"}
PROFILERS = ("simple", "advanced", "pytorch")


def profiler_name(cfg: DictConfig) -> str | None:
    """``trainer.profiler``, checked (None when profiling is off)."""
    name = cfg.trainer.get("profiler")
    if name in (None, "", False):
        return None
    if name not in PROFILERS:
        raise ConfigError(f"trainer.profiler must be one of {', '.join(PROFILERS)}, not {name!r}")
    return str(name)


def profiler(cfg: DictConfig, run_dir: RunDir) -> Profiler | None:
    """``trainer.profiler=simple|advanced|pytorch``: a report in ``<run>/profile/``."""
    name = profiler_name(cfg)
    if name is None:
        return None
    dirpath, filename = run_dir.profile, "report"
    if name == "simple":
        return SimpleProfiler(dirpath=dirpath, filename=filename, extended=True)
    if name == "advanced":
        return AdvancedProfiler(dirpath=dirpath, filename=filename)
    return PyTorchProfiler(
        dirpath=dirpath, filename=filename, sort_by_key="cpu_time_total", row_limit=40
    )


def _trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    return {str(k): v for k, v in cfg.trainer.items() if k not in _OWN_TRAINER_KEYS}


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


def fit_with_lightning(module: L.LightningModule, request: FitRequest) -> FitOutcome:
    """``lightning.Trainer.fit`` with best-checkpoint selection and early stopping."""
    cfg, run_dir, monitor = request.cfg, request.run_dir, request.monitor
    checkpoint = ModelCheckpoint(
        dirpath=run_dir.checkpoint.parent,
        filename=run_dir.checkpoint.stem,
        monitor=monitor,
        mode="min",
        save_top_k=1,
        enable_version_counter=False,
    )
    callbacks: list[L.Callback] = [checkpoint, *request.callbacks]
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
            logger=CSVLogger(run_dir.path, name=run_dir.logs.name, version=""),
            default_root_dir=run_dir.path,
            profiler=profiler(cfg, run_dir),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"trainer: {exc}") from exc
    trainer.fit(module, datamodule=request.datamodule)
    best = checkpoint.best_model_score
    return FitOutcome(
        checkpoint=Path(checkpoint.best_model_path or run_dir.checkpoint),
        monitor=monitor,
        best_score=float(best) if best is not None else None,
        epochs=int(trainer.current_epoch),
    )
