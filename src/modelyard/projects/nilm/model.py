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

:class:`Seq2PointEnsemble` combines several independently initialised networks (each trained on
its own loss), for mistakes that differ from one initialisation to the next. On the NILM benchmark
it scores about as well as its average member: there the mistakes come from the training data and
all members share them (docs/benchmarks.md).
"""

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

# (power if on, on/off logit) of a gated network; (prediction, None) of a plain one
Heads = tuple[torch.Tensor, torch.Tensor | None]
# (prediction, on/off logit, power if on) of a gated network; (prediction, None, None) plain
Parts = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]


def mean_heads(member_heads: Sequence[Heads]) -> Heads:
    """Several networks' heads averaged, one network's unchanged.

    :meth:`Seq2Point.output` turns the result into the combined prediction.
    """
    power = torch.stack([power for power, _ in member_heads]).mean(dim=0)
    logits = [logit for _, logit in member_heads if logit is not None]
    return power, torch.stack(logits).mean(dim=0) if logits else None


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

    def gated_parts(self, windows: torch.Tensor) -> Parts:
        """Like :meth:`parts`, plus the power head alone: the power *if* the appliance is on."""
        return self.output(self.heads(windows))

    def heads(self, windows: torch.Tensor) -> Heads:
        """The raw heads: (normalised power if on, counted from ``zero_level``; on/off logit).

        Ungated, the first is the normalised prediction itself and the logit is ``None``.
        """
        raw: torch.Tensor = self.head(self.features(windows.unsqueeze(1)))
        if not self.gated:
            return raw, None
        power, logit = raw[:, : self.n_outputs], raw[:, self.n_outputs :]
        return nn.functional.softplus(power), logit

    def output(self, heads: Heads) -> Parts:
        """(prediction, logit, power if on) from :meth:`heads`, the gate applied."""
        power_if_on, logit = heads
        if logit is None:
            return power_if_on, None, None
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


class Seq2PointEnsemble(nn.Module):
    """``members`` independent :class:`Seq2Point` networks combined into one prediction.

    Each member keeps its own initialisation and is trained on its own loss (see
    ``Seq2PointModule.compute_loss``); only the prediction combines them. Plain members: the mean
    of their outputs. Gated members: the mean of their on/off logits gates the mean of their
    power heads, so with ``hard_gate`` the ensemble still answers on or off (averaging the
    members' hard-gated outputs instead would leak a third of an appliance's power into every
    minute that one member of three calls "on"). One ONNX graph computes it all.
    """

    def __init__(self, members: int, window: int, n_outputs: int, **options: Any) -> None:
        super().__init__()
        if members < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {members}")
        self.members = nn.ModuleList(
            Seq2Point(window, n_outputs, **options) for _ in range(members)
        )

    def networks(self) -> list[Seq2Point]:
        return [member for member in self.members if isinstance(member, Seq2Point)]

    def gated_parts(self, windows: torch.Tensor) -> Parts:
        networks = self.networks()
        return networks[0].output(mean_heads([net.heads(windows) for net in networks]))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(batch, window) normalised mains -> the combined prediction (batch, n_outputs)."""
        return self.gated_parts(windows)[0]
