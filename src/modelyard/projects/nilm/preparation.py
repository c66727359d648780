"""Turn a raw house frame into an aligned, gap-aware series ready for windowing.

Steps, in order:

1. **Align** readings to a fixed interval (mean of the readings in each interval). Timestamps are
   floored to the interval, so 12:00:30 and 12:00:59 both land in the 12:00 bin.
2. **Clip impossible values**: negative power becomes 0, readings above a configured physical
   limit (a house fuse, an appliance's rating) become NaN: they are sensor faults, not load.
3. **Fill short gaps** (at most ``max_fill_s`` long) by linear interpolation.
4. **Mark long gaps**: any interval still missing a reading is invalid. Windows are later drawn only
   from runs of valid intervals, so no window crosses a long gap.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from modelyard.core.errors import DataError
from modelyard.projects.nilm.readers import AGGREGATE


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
    """What preparation did to one house, for the prepare summary and for tests."""

    rows_in: int
    intervals: int
    clipped_negative: int
    dropped_over_limit: int
    filled: int
    invalid: int


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


def fill_short_gaps(frame: pd.DataFrame, max_fill_steps: int) -> tuple[pd.DataFrame, int]:
    """Linearly interpolate runs of at most ``max_fill_steps`` missing values, column by column.

    Longer runs are left entirely missing (pandas' ``limit`` would fill the first part of a long
    gap, which would hide where the gap starts), as are gaps at the edges.
    """
    if max_fill_steps <= 0:
        return frame, 0
    filled = frame.copy()
    count = 0
    for column in frame.columns:
        series = frame[column]
        missing = series.isna().to_numpy()
        if not missing.any():
            continue
        run_id = np.cumsum(~missing)
        run_length = pd.Series(missing).groupby(run_id).transform("sum").to_numpy()
        interior = series.interpolate(method="linear", limit_area="inside").to_numpy()
        fillable = missing & (run_length <= max_fill_steps) & ~np.isnan(interior)
        values = series.to_numpy(copy=True)
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
) -> tuple[PreparedHouse, PreparationReport]:
    """Align, clip, fill and validate one house; see the module docstring for the order."""
    missing = [c for c in (AGGREGATE, *appliances) if c not in frame.columns]
    if missing:
        raise DataError(f"house {name!r} has no column(s) {missing}; it has {list(frame.columns)}")
    selected = frame[[AGGREGATE, *appliances]]
    aligned = align(selected, interval_s)
    clipped, negative, over = clip_impossible(aligned, limits_w)
    filled, n_filled = fill_short_gaps(clipped, max_fill_s // interval_s)
    values = filled.to_numpy(dtype="float32")
    valid = ~np.isnan(values).any(axis=1)
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
    )
    return house, report
