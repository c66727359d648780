"""Turn a raw house frame into an aligned, gap-aware series ready for windowing.

Steps, in order:

1. **Align** readings to a fixed interval (mean of the readings in each interval). Timestamps are
   floored to the interval, so 12:00:30 and 12:00:59 both land in the 12:00 bin.
2. **Clip impossible values**: negative power becomes 0, readings above a configured physical
   limit (a house fuse, an appliance's rating) become NaN: they are sensor faults, not load.
3. **Fill short gaps** (at most ``max_fill_s`` long) by linear interpolation.
4. **Mark long gaps**: any interval still missing a reading is invalid. Windows are later drawn only
   from runs of valid intervals, so no window crosses a long gap.
5. **Mark mains outages**: a run of mains readings at or below a floor that lasts at least a given
   time is a logger outage recorded as zeros (:mod:`.outages`), and invalid like a long gap. It is
   found before step 3, which neither fills it nor a gap that touches it (no reading is
   interpolated towards the zeros of a logger that was down).
   Appliance channels reading 0 are off, not missing, and stay valid.
"""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from modelyard.core.errors import DataError
from modelyard.projects.nilm.outages import MainsOutageRule, outage_mask
from modelyard.projects.nilm.readers import AGGREGATE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedHouse:
    """One house on a fixed time grid.

    ``times`` are int64 nanoseconds since the epoch (local time of the recording), ``aggregate``
    is float32 watts, ``targets`` is float32 watts with one column per appliance in ``appliances``
    order, and ``valid[i]`` says whether every series has a real (or short-gap-filled) reading at i.
    Invalid positions hold 0 in the arrays so that arithmetic on them stays finite.
    """

    name: str
    interval_s: int
    appliances: tuple[str, ...]
    times: np.ndarray
    aggregate: np.ndarray
    targets: np.ndarray
    valid: np.ndarray

    def __len__(self) -> int:
        return int(self.times.shape[0])

    def slice(self, start: int, stop: int) -> "PreparedHouse":
        """A contiguous sub-range [start, stop) of this house (views, no copy)."""
        return PreparedHouse(
            name=self.name,
            interval_s=self.interval_s,
            appliances=self.appliances,
            times=self.times[start:stop],
            aggregate=self.aggregate[start:stop],
            targets=self.targets[start:stop],
            valid=self.valid[start:stop],
        )


@dataclass(frozen=True)
class PreparationReport:
    """What preparation did to one house, for the prepare summary and for tests.

    ``invalid == long_gaps + outage_zeros``: every invalid interval is either missing a reading
    after filling or inside one of the ``outage_runs`` mains outages (never both).
    """

    rows_in: int
    intervals: int
    clipped_negative: int
    dropped_over_limit: int
    filled: int
    invalid: int
    long_gaps: int
    outage_zeros: int
    outage_runs: int


def align(frame: pd.DataFrame, interval_s: int) -> pd.DataFrame:
    """Average readings into fixed ``interval_s`` bins on a gap-free grid (empty bins are NaN)."""
    if interval_s <= 0:
        raise DataError(f"interval_s must be positive, got {interval_s}")
    if frame.empty:
        raise DataError("cannot prepare an empty recording")
    index = pd.DatetimeIndex(frame.index)
    binned = frame.groupby(index.floor(f"{interval_s}s")).mean()
    grid = pd.date_range(binned.index[0], binned.index[-1], freq=f"{interval_s}s")
    return binned.reindex(grid)


def clip_impossible(
    frame: pd.DataFrame, limits_w: Mapping[str, float]
) -> tuple[pd.DataFrame, int, int]:
    """Negative power -> 0; power above a column's limit -> NaN. Returns counts of each."""
    values = frame.to_numpy(dtype="float64", copy=True)
    negative = values < 0
    values[negative] = 0.0
    over = np.zeros_like(negative)
    for j, column in enumerate(frame.columns):
        limit = limits_w.get(str(column))
        if limit is not None:
            over[:, j] = values[:, j] > limit
    values[over] = np.nan
    clipped = pd.DataFrame(values, index=frame.index, columns=frame.columns)
    return clipped, int(negative.sum()), int(over.sum())


def fill_short_gaps(
    frame: pd.DataFrame, max_fill_steps: int, never_fill: np.ndarray | None = None
) -> tuple[pd.DataFrame, int]:
    """Linearly interpolate runs of at most ``max_fill_steps`` missing values, column by column.

    Longer runs are left entirely missing (pandas' ``limit`` would fill the first part of a long
    gap, which would hide where the gap starts), as are gaps at the edges. Rows marked in
    ``never_fill`` (mains outages) count as missing in every column but keep their values, and a
    gap that touches them is not filled either.
    """
    if max_fill_steps <= 0:
        return frame, 0
    barrier = np.zeros(len(frame), dtype=bool) if never_fill is None else never_fill
    filled = frame.copy()
    count = 0
    for column in frame.columns:
        series = frame[column].where(~barrier)
        missing = series.isna().to_numpy()
        if not missing.any():
            continue
        run_id = pd.Series(np.cumsum(~missing))
        run_length = pd.Series(missing).groupby(run_id).transform("sum").to_numpy()
        touches_barrier = pd.Series(barrier).groupby(run_id).transform("any").to_numpy()
        interior = series.interpolate(method="linear", limit_area="inside").to_numpy()
        fillable = missing & ~touches_barrier & (run_length <= max_fill_steps) & ~np.isnan(interior)
        values = frame[column].to_numpy(copy=True)
        values[fillable] = interior[fillable]
        filled[column] = values
        count += int(fillable.sum())
    return filled, count


def prepare_house(
    name: str,
    frame: pd.DataFrame,
    appliances: Sequence[str],
    interval_s: int,
    max_fill_s: int,
    limits_w: Mapping[str, float],
    outage_rule: MainsOutageRule | None,
) -> tuple[PreparedHouse, PreparationReport]:
    """Align, clip, fill and validate one house; see the module docstring for the order.

    ``outage_rule`` None: no mains reading is taken for an outage.
    """
    missing = [c for c in (AGGREGATE, *appliances) if c not in frame.columns]
    if missing:
        raise DataError(f"house {name!r} has no column(s) {missing}; it has {list(frame.columns)}")
    selected = frame[[AGGREGATE, *appliances]]
    aligned = align(selected, interval_s)
    clipped, negative, over = clip_impossible(aligned, limits_w)
    outage, outage_runs = outage_mask(clipped[AGGREGATE].to_numpy(), interval_s, outage_rule)
    filled, n_filled = fill_short_gaps(clipped, max_fill_s // interval_s, never_fill=outage)
    values = filled.to_numpy(dtype="float32")
    gap = np.isnan(values).any(axis=1) & ~outage
    valid = ~(gap | outage)
    values = np.nan_to_num(values, nan=0.0)
    house = PreparedHouse(
        name=name,
        interval_s=interval_s,
        appliances=tuple(appliances),
        times=filled.index.to_numpy(dtype="datetime64[ns]").astype(np.int64),
        aggregate=np.ascontiguousarray(values[:, 0]),
        targets=np.ascontiguousarray(values[:, 1:]),
        valid=valid,
    )
    report = PreparationReport(
        rows_in=len(frame),
        intervals=len(house),
        clipped_negative=negative,
        dropped_over_limit=over,
        filled=n_filled,
        invalid=int((~valid).sum()),
        long_gaps=int(gap.sum()),
        outage_zeros=int(outage.sum()),
        outage_runs=outage_runs,
    )
    if outage_rule is not None and outage_runs:
        logger.warning(
            "MAINS OUTAGE %s: %d of %d intervals (%.2f%%) in %d run(s) marked invalid: mains at "
            "or below %g W for at least %g s",
            name,
            report.outage_zeros,
            report.intervals,
            100 * report.outage_zeros / report.intervals,
            outage_runs,
            outage_rule.floor_w,
            outage_rule.min_s,
        )
    return house, report
