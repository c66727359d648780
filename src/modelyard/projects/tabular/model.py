"""A multilayer perceptron for tabular regression, trained with Lightning like every project.

The network sees the feature matrix of :mod:`.features` and predicts the standardised (log)
target; validation also reports the median absolute percentage error in target units, which
selects the checkpoint (it is what a valuer reads, and robust to a few absurd sales).
"""

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import nn

from modelyard.projects.distributed import gather_rows
from modelyard.projects.tabular.target_scaling import decode_target


class MLP(nn.Module):
    def __init__(self, inputs: int, hidden: Sequence[int], dropout: float) -> None:
        super().__init__()
        if inputs < 1 or not hidden:
            raise ValueError("an MLP needs at least one input and one hidden layer")
        layers: list[nn.Module] = []
        width = inputs
        for size in hidden:
            layers += [nn.Linear(width, size), nn.BatchNorm1d(size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(batch, inputs) float32 -> (batch, 1) standardised target."""
        return self.layers(features)  # type: ignore[no-any-return]


class TabularRegressor(L.LightningModule):
    def __init__(
        self,
        inputs: int,
        target: dict[str, Any],
        hidden: Sequence[int] = (256, 128, 64),
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = MLP(inputs, list(hidden), dropout)
        self.loss_fn = nn.HuberLoss(delta=1.0)
        self._relative_errors: list[torch.Tensor] = []

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)  # type: ignore[no-any-return]

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        loss: torch.Tensor = self.loss_fn(self(x), y)
        self.log("train_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._relative_errors = []

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        prediction = self(x)
        loss = self.loss_fn(prediction, y)
        self.log("val_loss", loss, prog_bar=True, batch_size=len(x), sync_dist=True)
        target = self.hparams["target"]
        true = decode_target(target, y.detach().cpu().numpy())
        predicted = decode_target(target, prediction.detach().cpu().numpy())
        self._relative_errors.append(torch.from_numpy(abs(predicted - true) / abs(true)))

    def on_validation_epoch_end(self) -> None:
        local = [e.flatten() for e in self._relative_errors] or [torch.zeros(0)]
        errors = gather_rows(torch.cat(local))  # every rank's share under DDP
        if errors.numel():
            self.log("val_mdape", errors.median().float(), prog_bar=True)

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )
