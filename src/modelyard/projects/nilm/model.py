"""seq2point (Zhang et al., AAAI 2018): 1-D CNN, mains window -> appliance power at its midpoint.

One network predicts every configured appliance at once (one output per appliance): the
convolutional features of the mains window are shared, which costs one forward pass instead of one
per appliance.
"""

from collections.abc import Sequence

import torch
from torch import nn


class Seq2Point(nn.Module):
    """Conv1d stack (valid padding, ReLU) -> dense -> one output per appliance."""

    def __init__(
        self,
        window: int,
        n_outputs: int,
        channels: Sequence[int] = (30, 30, 40, 50, 50),
        kernels: Sequence[int] = (10, 8, 6, 5, 5),
        hidden: int = 1024,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if len(channels) != len(kernels) or not channels:
            raise ValueError("model.channels and model.kernels must be non-empty and equally long")
        length = window - sum(k - 1 for k in kernels)
        if length < 1:
            raise ValueError(
                f"window {window} is too short for kernels {list(kernels)}: "
                f"it needs at least {sum(k - 1 for k in kernels) + 1} readings"
            )
        layers: list[nn.Module] = []
        in_channels = 1
        for out_channels, kernel in zip(channels, kernels, strict=True):
            layers += [nn.Conv1d(in_channels, out_channels, kernel), nn.ReLU()]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(in_channels * length, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_outputs),
        )

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(batch, window) normalised mains -> (batch, n_outputs) normalised appliance power."""
        return self.head(self.features(windows.unsqueeze(1)))  # type: ignore[no-any-return]
