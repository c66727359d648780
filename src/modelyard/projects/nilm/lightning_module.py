"""Lightning wrapper around :class:`Seq2Point`: loss, optimiser and the metrics logged per epoch."""

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import nn

from modelyard.projects.nilm.model import Parts, Seq2Point, Seq2PointEnsemble, mean_heads

_LOSSES: dict[str, nn.Module] = {
    "mse": nn.MSELoss(reduction="none"),
    "l1": nn.L1Loss(reduction="none"),
    "huber": nn.HuberLoss(reduction="none"),
}


class Seq2PointModule(L.LightningModule):
    """Trains seq2point on normalised targets; also logs validation MAE in watts for people."""

    target_std: torch.Tensor
    on_threshold_z: torch.Tensor

    def __init__(
        self,
        window: int,
        appliances: Sequence[str],
        target_std: Sequence[float],
        channels: Sequence[int] = (30, 30, 40, 50, 50),
        kernels: Sequence[int] = (10, 8, 6, 5, 5),
        hidden: int = 1024,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        loss: str = "mse",
        gated: bool = False,
        target_mean: Sequence[float] | None = None,
        on_threshold_w: Sequence[float] | None = None,
        on_loss_weight: float = 1.0,
        on_power_weight: float = 0.0,
        hard_gate: bool = False,
        members: int = 1,
    ) -> None:
        super().__init__()
        if loss not in _LOSSES:
            raise ValueError(f"model.loss must be one of {sorted(_LOSSES)}, got {loss!r}")
        if isinstance(members, bool) or not isinstance(members, int) or members < 1:
            raise ValueError(f"model.members must be a whole number >= 1, got {members!r}")
        self.save_hyperparameters()
        std = torch.tensor(list(target_std), dtype=torch.float32)
        mean = torch.tensor(list(target_mean or [0.0] * len(appliances)), dtype=torch.float32)
        thresholds = torch.tensor(list(on_threshold_w or [0.0] * len(appliances)))
        options: dict[str, Any] = {
            "channels": channels,
            "kernels": kernels,
            "hidden": hidden,
            "dropout": dropout,
            "gated": gated,
            "zero_level": (-mean / std).tolist(),
            "hard_gate": hard_gate,
        }
        # One network keeps its parameters at the top level (net.features...), as before
        # ensembles existed, so its checkpoints and exported graphs are unchanged.
        self.net: Seq2Point | Seq2PointEnsemble = (
            Seq2Point(window, len(appliances), **options)
            if members == 1
            else Seq2PointEnsemble(members, window, len(appliances), **options)
        )
        self.loss_fn = _LOSSES[loss]
        self.on_loss = nn.BCEWithLogitsLoss()
        self.register_buffer("target_std", std)
        # "On" in z-score units, to label the on/off head from the normalised targets.
        self.register_buffer("on_threshold_z", (thresholds - mean) / std)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.net(windows)  # type: ignore[no-any-return]

    def members(self) -> list[Seq2Point]:
        """The networks combined into the prediction (one unless ``members`` > 1)."""
        if isinstance(self.net, Seq2PointEnsemble):
            return self.net.networks()
        return [self.net]

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training loss and the prediction, computed from one forward pass of every member.

        Each member is trained on its own loss (the mean over members is returned, so each
        member's gradient comes from its loss alone); the prediction combines the members as at
        inference.
        """
        networks = self.members()
        heads = [net.heads(x) for net in networks]
        losses = [
            self.member_loss(net.output(h), y) for net, h in zip(networks, heads, strict=True)
        ]
        prediction = networks[0].output(mean_heads(heads))[0]
        return torch.stack(losses).mean(), prediction

    def member_loss(self, parts: Parts, y: torch.Tensor) -> torch.Tensor:
        """One network's loss, from its (prediction, logit, power if on).

        Plain: the regression loss of the prediction. Gated: plus ``on_loss_weight`` times the
        on/off classification loss, plus ``on_power_weight`` times the regression loss of the
        power head on the readings where the appliance is truly on (its amplitude is then
        learnt from on-readings only, however rare they are).
        """
        prediction, logits, power_if_on = parts
        loss: torch.Tensor = self.loss_fn(prediction, y).mean()
        if logits is not None and power_if_on is not None:
            on = y > self.on_threshold_z
            loss = loss + self.hparams["on_loss_weight"] * self.on_loss(logits, on.float())
            if self.hparams["on_power_weight"] > 0 and bool(on.any()):
                on_error = self.loss_fn(power_if_on, y)[on].mean()
                loss = loss + self.hparams["on_power_weight"] * on_error
        return loss

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        loss, _ = self.compute_loss(x, y)
        # Epoch-level only and off the progress bar: per-step logging costs Lightning ~5 % of a
        # small network's step time (measured by benchmarks/train_throughput.py).
        self.log("train_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def on_validation_epoch_start(self) -> None:
        n = len(self.hparams["appliances"])
        self._abs_error = torch.zeros(n, dtype=torch.float64)
        self._abs_baseline = torch.zeros(n, dtype=torch.float64)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        loss, prediction = self.compute_loss(x, y)
        self.log("val_loss", loss, prog_bar=True, batch_size=len(x), sync_dist=True)
        mae_w = ((prediction - y).abs() * self.target_std).mean()
        self.log("val_mae_w", mae_w, prog_bar=True, batch_size=len(x), sync_dist=True)
        # Targets are z-scores around the training mean, so |y| is the error of the
        # always-predict-the-mean baseline; the std factor cancels in the ratio below.
        self._abs_error += (prediction - y).abs().sum(dim=0).double().cpu()
        self._abs_baseline += y.abs().sum(dim=0).double().cpu()

    def on_validation_epoch_end(self) -> None:
        """``val_rel_mae``: MAE relative to the mean baseline, averaged over appliances.

        Unlike the loss, it weighs a rare appliance as much as a frequent one, and a network
        that predicts "always off" does not score well on it. Checkpoints are selected on it.
        """
        error, baseline = self._abs_error, self._abs_baseline
        if self._trainer is not None and self.trainer.world_size > 1:
            # under DDP each rank saw a share of the validation windows: add them all up
            error = self.trainer.strategy.reduce(error, reduce_op="sum")
            baseline = self.trainer.strategy.reduce(baseline, reduce_op="sum")
        ratio = error / baseline.clamp_min(1e-12)
        self.log("val_rel_mae", ratio.mean().float(), prog_bar=True)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(
            self.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )
