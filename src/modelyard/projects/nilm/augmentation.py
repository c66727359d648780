"""Synthetic appliance activations added to training windows (Kelly & Knottenbelt, 2015).

Rare appliances run a few hundred times in a house's history, always in the same context. Adding
real activations of an appliance, cut from the training houses, at random places in other training
windows (to both the mains input and the appliance target) shows the network that appliance's
signature on top of many different backgrounds. A random amplitude scale covers appliances of the
same kind drawing different power in other houses.

How activations are cut matters. A washing machine drops to tens of watts while it tumbles; cut
at its on-threshold its cycle falls apart into bare 2 kW heating blocks, and a lone heating block
labelled "washing machine" teaches the network that any such block is one, so its activations
must be whole cycles. :class:`ActivationRule` says, per appliance, how activations are cut (after
the per-appliance thresholds of Kelly & Knottenbelt, 2015; the project config explains its
choices). Activations longer than the window are placed so that the window sees part of them, as
it does in real data. A rule may also stretch its activations in time by a random factor: the
same kind of machine runs shorter or longer programmes in other houses.

Augmentation is applied per batch, to training windows only, with its own seeded generator; each
DataLoader worker process and each DDP rank draws from its own stream of it
(:mod:`modelyard.projects.worker_seeding`).
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelyard.projects.nilm.normalisation import Normalisation
from modelyard.projects.worker_seeding import stream_seed


@dataclass(frozen=True)
class ActivationRule:
    """How one appliance's activations are cut, in readings of the prepared series."""

    min_power_w: float
    max_pause: int
    min_length: int
    max_length: int
    # Injected activations are resampled in time by a random factor from this range.
    stretch: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        if self.min_power_w < 0:
            raise ValueError(f"min_power_w must be >= 0, got {self.min_power_w}")
        if self.max_pause < 0:
            raise ValueError(f"max_pause_s must be >= 0, got {self.max_pause} readings")
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(
                f"need 1 reading <= min_on_s <= max_on_s, got {self.min_length} and "
                f"{self.max_length} readings"
            )
        low, high = self.stretch
        if not 0 < low <= high:
            raise ValueError(f"stretch needs 0 < low <= high, got [{low}, {high}]")

    def cut(self, power_w: np.ndarray, valid: np.ndarray) -> list[np.ndarray]:
        """Every activation of this appliance in a power series."""
        return find_activations(
            power_w,
            valid,
            self.min_power_w,
            max_length=self.max_length,
            merge_gap=self.max_pause,
            min_length=self.min_length,
        )


def find_activations(
    power_w: np.ndarray,
    valid: np.ndarray,
    on_threshold_w: float,
    max_length: int,
    merge_gap: int = 3,
    pad: int = 1,
    min_length: int = 1,
) -> list[np.ndarray]:
    """Cut every activation of one appliance out of its power series.

    An activation is a run of readings above ``on_threshold_w``; runs separated by at most
    ``merge_gap`` readings are one activation (a washing machine pauses between phases).
    ``pad`` readings either side are kept so the ramp is included. Activations touching an
    invalid reading, or whose padded length is outside ``min_length .. max_length``, are
    dropped.
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
        if min_length <= hi - lo <= max_length and valid[lo:hi].all():
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
    # Per appliance (empty: none), activations are resampled in time by a random factor from
    # this range: a machine of the same kind in another house runs shorter or longer programmes.
    stretch_ranges: Sequence[tuple[float, float]] = ()

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
            stretch = self.stretch_ranges[j] if self.stretch_ranges else (1.0, 1.0)
            scaled, length = self._resampled(traces, lengths[picks], picks, stretch)
            scaled *= scales[:, None]
            start = self._starts(length, window)
            offsets = np.arange(scaled.shape[1])
            columns = start[:, None] + offsets
            inside = (offsets < length[:, None]) & (columns >= 0) & (columns < window)
            row_index = np.broadcast_to(rows[:, None], columns.shape)
            # Each (row, column) pair occurs once per appliance, so a plain fancy += is exact.
            windows[row_index[inside], columns[inside]] += (
                scaled[inside] / self.normalisation.aggregate_std
            )
            covers = (start <= mid) & (mid < start + length)
            targets[rows[covers], j] += (
                scaled[covers, mid - start[covers]] / self.normalisation.target_std[j]
            )

    def _resampled(
        self,
        traces: np.ndarray,
        length: np.ndarray,
        picks: np.ndarray,
        stretch: tuple[float, float],
    ) -> tuple[np.ndarray, np.ndarray]:
        """The picked activations stretched in time (nearest reading), and their new lengths."""
        if tuple(stretch) == (1.0, 1.0):
            return traces[picks], length
        factor = self.rng.uniform(*stretch, size=picks.size)
        stretched = np.maximum(1, np.rint(length * factor)).astype(np.int64)
        offsets = np.arange(int(stretched.max()))
        source = np.minimum((offsets / factor[:, None]).astype(np.int64), length[:, None] - 1)
        return traces[picks[:, None], source], stretched

    def _starts(self, length: np.ndarray, window: int) -> np.ndarray:
        """Where each activation starts in its window (it may start before or end after it).

        An activation covers the midpoint about half of the time: the network must learn *when*
        the appliance is on, not only that it ran. The ``length`` covering starts are
        ``mid - length + 1 .. mid``; as many again that miss it are split either side, clipped so
        that an activation that fits in the window stays whole inside it. One longer than half
        the window always covers the midpoint; one longer than the window is cropped by it.
        """
        mid = window // 2
        first = np.maximum(np.minimum(0, mid - length + 1), mid - length - length // 2 + 1)
        last = np.minimum(np.maximum(window - length, mid), mid + length - length // 2)
        starts: np.ndarray = self.rng.integers(first, last + 1)
        return starts


def _pad(pool: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Activations of varying length as one zero-padded (n, longest) array plus their lengths."""
    if not pool:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    lengths = np.array([trace.shape[0] for trace in pool], dtype=np.int64)
    padded = np.zeros((len(pool), int(lengths.max())), dtype=np.float32)
    for k, trace in enumerate(pool):
        padded[k, : trace.shape[0]] = trace
    return padded, lengths


RULE_KEYS = ("min_power_w", "max_pause_s", "min_on_s", "max_on_s")
OPTIONAL_RULE_KEYS = ("stretch",)


def activation_rules(
    settings: Mapping[str, Mapping[str, Any]],
    appliances: Sequence[str],
    on_threshold_w: Sequence[float],
    interval_s: float,
    window: int,
) -> list[ActivationRule]:
    """Each appliance's rule from settings in watts and seconds (its ``activations`` in the
    ``project.appliances`` table, else ``data.augment.default_activations``).

    An appliance without an entry uses ``default``; a null ``min_power_w`` means the appliance's
    on-threshold and a null ``max_on_s`` the window's length. Raises ValueError naming the entry.
    """
    unknown = sorted(set(settings) - {"default", *appliances})
    if unknown:
        raise ValueError(f"activations for {unknown}, which are not among the appliances")
    rules = []
    for appliance, threshold in zip(appliances, on_threshold_w, strict=True):
        name = appliance if appliance in settings else "default"
        if name not in settings:
            raise ValueError(f"activations: no entry for {appliance} and no default")
        entry = dict(settings[name] or {})
        missing = [k for k in RULE_KEYS if k not in entry]
        extra = sorted(set(entry) - set(RULE_KEYS) - set(OPTIONAL_RULE_KEYS))
        if missing or extra:
            raise ValueError(
                f"activations.{name}: needs the keys {list(RULE_KEYS)}, may have "
                f"{list(OPTIONAL_RULE_KEYS)} (missing {missing}, unknown {extra})"
            )
        try:
            value = {k: None if entry[k] is None else float(entry[k]) for k in RULE_KEYS}
            negative = [k for k, v in value.items() if v is not None and v < 0]
            if negative or value["max_pause_s"] is None or value["min_on_s"] is None:
                raise ValueError(
                    f"min_power_w and max_on_s must be null or >= 0, max_pause_s and min_on_s "
                    f">= 0; got {entry}"
                )
            max_on = window if value["max_on_s"] is None else value["max_on_s"] / interval_s
            rules.append(
                ActivationRule(
                    min_power_w=threshold if value["min_power_w"] is None else value["min_power_w"],
                    max_pause=round(value["max_pause_s"] / interval_s),
                    min_length=max(1, math.ceil(value["min_on_s"] / interval_s)),
                    max_length=math.floor(max_on),
                    stretch=_pair(entry.get("stretch", (1.0, 1.0))),
                )
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"activations.{name} (for {appliance}): {exc}") from exc
    return rules


def _pair(value: Any) -> tuple[float, float]:
    """``[low, high]`` as two floats; ValueError for anything else."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"stretch must be [low, high], got {value!r}") from exc
    return low, high
