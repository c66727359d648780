"""Synthetic appliance activations added to training windows (Kelly & Knottenbelt, 2015).

Rare appliances run a few hundred times in a house's history, always in the same context. Adding
real activations of an appliance, cut from the training houses, at random places in other training
windows (to both the mains input and the appliance target) shows the network that appliance's
signature on top of many different backgrounds. A random amplitude scale covers appliances of the
same kind drawing different power in other houses.

Augmentation is applied per batch, to training windows only, with its own seeded generator; each
DataLoader worker process and each DDP rank draws from its own stream of it
(:mod:`modelyard.projects.loading`).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modelyard.projects.loading import stream_seed
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
        self._padded = [_pad(pool) for pool in self.activations]

    def use_stream(self, rank: int, worker: int | None, base: int = 0) -> None:
        """Restart the generator on the stream of a DDP rank and DataLoader worker."""
        self.rng = np.random.default_rng(stream_seed(self.seed, rank, worker, base))

    def __call__(self, windows: np.ndarray, targets: np.ndarray) -> None:
        """Vectorised per appliance: no Python loop over the injected rows."""
        batch, window = windows.shape
        mid = window // 2
        for j, (traces, lengths) in enumerate(self._padded):
            if lengths.size == 0:
                continue
            rows = np.flatnonzero(self.rng.random(batch) < self.probability)
            if rows.size == 0:
                continue
            picks = self.rng.integers(0, lengths.size, size=rows.size)
            scales = self.rng.uniform(*self.scale_range, size=rows.size).astype(np.float32)
            length = lengths[picks]
            # Place each activation so that it covers the midpoint about half of the time: the
            # network must learn *when* the appliance is on, not only that it ran. The `length`
            # covering starts are mid - length + 1 .. mid; as many again that miss it are split
            # either side (before clipping to the window).
            first = np.maximum(0, mid - length - length // 2 + 1)
            last = np.minimum(window - length, mid + length - length // 2)
            start = self.rng.integers(first, last + 1)
            scaled = traces[picks] * scales[:, None]
            offsets = np.arange(traces.shape[1])
            inside = offsets < length[:, None]
            columns = start[:, None] + offsets
            row_index = np.broadcast_to(rows[:, None], columns.shape)
            # Each (row, column) pair occurs once per appliance, so a plain fancy += is exact.
            windows[row_index[inside], columns[inside]] += (
                scaled[inside] / self.normalisation.aggregate_std
            )
            covers = (start <= mid) & (mid < start + length)
            targets[rows[covers], j] += (
                scaled[covers, mid - start[covers]] / self.normalisation.target_std[j]
            )


def _pad(pool: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Activations of varying length as one zero-padded (n, longest) array plus their lengths."""
    if not pool:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    lengths = np.array([trace.shape[0] for trace in pool], dtype=np.int64)
    padded = np.zeros((len(pool), int(lengths.max())), dtype=np.float32)
    for k, trace in enumerate(pool):
        padded[k, : trace.shape[0]] = trace
    return padded, lengths
