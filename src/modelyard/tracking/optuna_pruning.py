"""The Lightning callback of a sweep's trials (``stages.sweep``): it reports the monitored metric
to the Optuna trial after each validation and stops the run when the pruner says so.

Beside ``tracking.optuna_storage`` rather than in the sweep stage, so that ``stages.sweep``
checks a sweep's configuration and storage without importing torch and Lightning first.
"""

from typing import Any

import lightning as L


class PruningCallback(L.Callback):
    """Report the monitored metric to the trial after each validation; stop if it is pruned.

    The trial is stopped through ``trainer.should_stop`` (not an exception), so the run ends
    cleanly with its best checkpoint, and the sweep marks the trial pruned afterwards.
    """

    def __init__(self, trial: Any, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        epoch = int(trainer.current_epoch)
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            trainer.should_stop = True
