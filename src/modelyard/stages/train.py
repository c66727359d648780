"""Stage: train a model with Lightning; the run directory holds everything needed to reproduce it.

Run directory layout (``paths.runs/<run name>``)::

    config.yaml            the resolved configuration
    preprocessing.json     parameters fitted on the training data (plain JSON)
    checkpoints/best.ckpt  the best epoch by the project's monitored validation metric
    logs/metrics.csv       per-step / per-epoch metrics
    training_curves.png    loss per epoch
    train.json             summary: best score, epochs, duration, data fingerprint, git commit
"""

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig

from modelyard.core.config import save_config
from modelyard.core.errors import ConfigError
from modelyard.core.gitinfo import git_state
from modelyard.core.hashing import fingerprint_files
from modelyard.core.runs import mark_latest, timestamp_name
from modelyard.core.seeding import seed_everything
from modelyard.projects.base import Estimator
from modelyard.projects.registry import load_task
from modelyard.stages.curves import plot_training_curves
from modelyard.stages.model_source import CHECKPOINT

#: Keys of the ``trainer`` config group that modelyard handles itself (not lightning.Trainer args).
_OWN_TRAINER_KEYS = {"early_stopping_patience", "num_threads"}


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    checkpoint: Path
    monitor: str
    best_score: float | None
    epochs: int
    duration_s: float
    data_fingerprint: str


def _trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    kwargs = {str(k): v for k, v in cfg.trainer.items() if k not in _OWN_TRAINER_KEYS}
    return kwargs


def _fit_lightning(
    cfg: DictConfig,
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    run_dir: Path,
    monitor: str,
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
    callbacks: list[L.Callback] = [checkpoint]
    patience = int(cfg.trainer.get("early_stopping_patience", 0))
    if patience > 0:
        callbacks.append(EarlyStopping(monitor=monitor, mode="min", patience=patience))
    try:
        trainer = L.Trainer(
            **_trainer_kwargs(cfg),
            callbacks=callbacks,
            logger=CSVLogger(run_dir, name="logs", version=""),
            default_root_dir=run_dir,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"trainer: {exc}") from exc
    trainer.fit(model, datamodule=datamodule)
    best = checkpoint.best_model_score
    path = Path(checkpoint.best_model_path or run_dir / CHECKPOINT)
    return path, float(best) if best is not None else None, int(trainer.current_epoch)


def run(cfg: DictConfig) -> TrainResult:
    """Train ``cfg.project`` with ``cfg.model`` and ``cfg.trainer``; return where the run lives."""
    seed_everything(int(cfg.seed), int(cfg.trainer.get("num_threads", 0)))
    task = load_task(cfg)
    run_dir = Path(cfg.paths.runs) / str(cfg.run_name or timestamp_name())
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    fingerprint = fingerprint_files(task.training_files(Path(cfg.paths.raw)), Path(cfg.paths.raw))

    datamodule = task.datamodule()
    datamodule.setup("fit")
    model = task.build_model(datamodule)
    preprocessing = task.preprocessing(datamodule)
    (run_dir / "preprocessing.json").write_text(json.dumps(preprocessing, indent=2) + "\n")

    monitor = str(cfg.project.get("monitor", "val_loss"))
    started = time.perf_counter()
    if isinstance(model, Estimator):
        outcome = model.fit(datamodule, run_dir / CHECKPOINT)
        checkpoint_path, best, epochs = (
            run_dir / CHECKPOINT,
            outcome["best_score"],
            outcome["iterations"],
        )
        monitor = str(outcome.get("monitor", monitor))
    else:
        checkpoint_path, best, epochs = _fit_lightning(cfg, model, datamodule, run_dir, monitor)
    duration = time.perf_counter() - started

    git = git_state()
    result = TrainResult(
        run_dir=run_dir,
        checkpoint=checkpoint_path,
        monitor=monitor,
        best_score=float(best) if best is not None else None,
        epochs=int(epochs),
        duration_s=duration,
        data_fingerprint=fingerprint,
    )
    summary = asdict(result) | {"git_commit": git.commit, "git_dirty": git.dirty}
    (run_dir / "train.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    plot_training_curves(run_dir / "logs" / "metrics.csv", run_dir / "training_curves.png")
    mark_latest(run_dir)
    return result
