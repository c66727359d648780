"""seq2point (Zhang et al., AAAI 2018): 1-D CNN, mains window -> appliance power at its midpoint.

One network predicts every configured appliance at once (one output per appliance): the
convolutional features of the mains window are shared, which costs one forward pass instead of one
per appliance.

With ``gated=True`` (and ``hard_gate=True`` at inference: on or off, nothing in between) each
appliance gets two heads (as in subtask-gated networks, Shin et al.,
AAAI 2019): an on/off logit and a non-negative power; the output is ``sigmoid(logit) * power``,
expressed as a z-score (``zero_level`` is the z-score of 0 W). The on/off head is trained with its
own classification loss, which keeps learning rare appliances that a regression loss alone would
rather predict as "always off".
"""

from collections.abc import Sequence

import torch
from torch import nn


class Seq2Point(nn.Module):
    """Conv1d stack (valid padding, ReLU) -> dense -> one output per appliance."""

    zero_level: torch.Tensor

    def __init__(
        self,
        window: int,
        n_outputs: int,
        channels: Sequence[int] = (30, 30, 40, 50, 50),
        kernels: Sequence[int] = (10, 8, 6, 5, 5),
        hidden: int = 1024,
        dropout: float = 0.1,
        gated: bool = False,
        zero_level: Sequence[float] | None = None,
        hard_gate: bool = False,
    ) -> None:
        super().__init__()
        if gated and (zero_level is None or len(zero_level) != n_outputs):
            raise ValueError("a gated seq2point needs one zero_level per output")
        self.gated = gated
        self.hard_gate = hard_gate
        self.n_outputs = n_outputs
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
            nn.Linear(hidden, 2 * n_outputs if gated else n_outputs),
        )
        self.register_buffer(
            "zero_level", torch.tensor(list(zero_level or [0.0] * n_outputs), dtype=torch.float32)
        )

    def parts(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Normalised power and, when gated, the on/off logits (batch, n_outputs) each."""
        prediction, logit, _ = self.gated_parts(windows)
        return prediction, logit

    def gated_parts(
        self, windows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Like :meth:`parts`, plus the power head alone: the power *if* the appliance is on."""
        raw: torch.Tensor = self.head(self.features(windows.unsqueeze(1)))
        if not self.gated:
            return raw, None, None
        power, logit = raw[:, : self.n_outputs], raw[:, self.n_outputs :]
        power_if_on = nn.functional.softplus(power)
        if self.hard_gate and not self.training:
            # At inference an appliance is either on (full predicted power) or off (0 W): a
            # 20 % on-probability must not leak 20 % of a kettle's power into every minute.
            gate = (logit > 0).to(power_if_on.dtype)
        else:
            gate = torch.sigmoid(logit)
        gated = gate * power_if_on + self.zero_level
        return gated, logit, power_if_on + self.zero_level

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(batch, window) normalised mains -> (batch, n_outputs) normalised appliance power."""
        return self.parts(windows)[0]
