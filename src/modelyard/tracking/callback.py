"""A Lightning callback that sends each epoch's logged metrics to the tracker."""

from typing import Any

import lightning as L

from modelyard.tracking.base import Tracker


class EpochMetricsCallback(L.Callback):
    """Per-epoch metrics (train and validation) with the epoch number as the step.

    Logged when the training epoch ends: validation has run by then, and the module's own
    ``on_validation_epoch_end`` (which computes epoch-level scores) has updated the metrics.
    """

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def _log(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking or trainer.global_rank != 0:
            return
        metrics: dict[str, float] = {}
        for name, value in trainer.callback_metrics.items():
            if name.endswith("_step"):
                continue
            scalar: Any = value.item() if hasattr(value, "item") else value
            if isinstance(scalar, int | float):
                metrics[name.removesuffix("_epoch")] = float(scalar)
        if metrics:
            self.tracker.log_metrics(metrics, step=int(trainer.current_epoch))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer)
