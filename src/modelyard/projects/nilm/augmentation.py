"""Synthetic appliance activations added to training windows (Kelly & Knottenbelt, 2015).

Rare appliances run a few hundred times in a house's history, always in the same context. Adding
real activations of an appliance, cut from the training houses, at random places in other training
windows (to both the mains input and the appliance target) shows the network that appliance's
signature on top of many different backgrounds. A random amplitude scale covers appliances of the
same kind drawing different power in other houses.

Augmentation is applied per batch, to training windows only, with its own seeded generator.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modelyard.projects.nilm.normalisation import Normalisation


def find_activations(
    power_w: np.ndarray,
    valid: np.ndarray,
    on_threshold_w: float,
    max_length: int,
    merge_gap: int = 3,
    pad: int = 1,
) -> list[np.ndarray]:
    """Cut every activation of one appliance out of its power series.

    An activation is a run of readings above ``on_threshold_w``; runs separated by at most
    ``merge_gap`` readings are one activation (a washing machine pauses between phases).
    ``pad`` readings either side are kept so the ramp is included. Activations touching an
    invalid reading, or longer than ``max_length``, are dropped.
    """
    on = (power_w > on_threshold_w) & valid
    indices = np.flatnonzero(on)
    if indices.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) > merge_gap + 1)
    starts = np.concatenate([[indices[0]], indices[breaks + 1]])
    ends = np.concatenate([indices[breaks], [indices[-1]]]) + 1
    activations = []
    for start, end in zip(starts, ends, strict=True):
        lo, hi = max(0, start - pad), min(power_w.shape[0], end + pad)
        if hi - lo <= max_length and valid[lo:hi].all():
            activations.append(power_w[lo:hi].astype(np.float32))
    return activations


@dataclass
class ActivationInjector:
    """Adds activations to a batch of normalised windows and midpoint targets, in place."""

    activations: Sequence[Sequence[np.ndarray]]  # per appliance
    probability: float
    scale_range: tuple[float, float]
    normalisation: Normalisation
    seed: int

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, windows: np.ndarray, targets: np.ndarray) -> None:
        batch, window = windows.shape
        mid = window // 2
        agg_std = self.normalisation.aggregate_std
        for j, pool in enumerate(self.activations):
            if not pool:
                continue
            rows = np.flatnonzero(self.rng.random(batch) < self.probability)
            picks = self.rng.integers(0, len(pool), size=rows.size)
            scales = self.rng.uniform(*self.scale_range, size=rows.size)
            target_std = self.normalisation.target_std[j]
            for row, pick, scale in zip(rows, picks, scales, strict=True):
                trace = pool[pick] * np.float32(scale)
                length = trace.shape[0]
                # Place the activation so that it covers the midpoint about half of the time:
                # the network must learn *when* the appliance is on, not only that it ran.
                # The `length` covering starts are mid - length + 1 .. mid; as many again that
                # miss it are split either side (before clipping to the window).
                first = max(0, mid - length - length // 2 + 1)
                last = min(window - length, mid + length - length // 2)
                start = int(self.rng.integers(first, last + 1))
                windows[row, start : start + length] += trace / agg_std
                if start <= mid < start + length:
                    targets[row, j] += trace[mid - start] / target_std
