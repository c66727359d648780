"""What ``modelyard init nilm`` reads from a user's own NILM data before writing a project.

A CSV source (one folder per house of CSV / CSV.gz files, :mod:`.readers`) is read with the very
reader ``data prepare`` uses, so a file init accepts is one prepare accepts: every house's
appliances, rows, time span, the spacing of its readings and the power levels of each appliance
(for thresholds of appliances the shipped project does not know). A NILMTK HDF5 file is only
inventoried from its metadata (:func:`.hdf5_reader.building_inventories`): its meter tables are
gigabytes, so no reading is looked at.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from modelyard.core.errors import DataError
from modelyard.core.row_accounting import ReadLedger
from modelyard.projects.nilm.readers import AGGREGATE, csv_files, discover_houses, read_csv_file

#: Quantile of an appliance's readings taken as its typical "on" power, and of all of them taken
#: as its highest real reading (above it: glitches).
ON_POWER_QUANTILE = 0.995
HIGHEST_QUANTILE = 0.9999
#: An inferred on-threshold is this fraction of the typical on power (the shipped appliances'
#: thresholds are 10-25 % of their running power), never below MIN_ON_THRESHOLD_W.
ON_FRACTION = 0.1
MIN_ON_THRESHOLD_W = 10.0
#: An inferred limit is the highest real reading times this margin, rounded up to LIMIT_STEP_W.
LIMIT_MARGIN = 1.5
LIMIT_STEP_W = 100.0


@dataclass
class HouseSurvey:
    """One house of a CSV source as init found it."""

    name: str
    folder: Path
    files: list[Path]
    #: Appliance columns (snake_case), in column order.
    appliances: list[str]
    rows: int
    start: str
    end: str
    #: Median spacing of consecutive readings, seconds.
    interval_s: float
    #: Every appliance's non-missing readings (W), for inferred thresholds.
    readings: dict[str, np.ndarray] = field(repr=False, default_factory=dict)


def survey_csv_houses(root: Path, mains: str) -> list[HouseSurvey]:
    """Read every house under ``root``; a bad file or inconsistent columns are one DataError."""
    houses = []
    for name, folder in discover_houses(root).items():
        files = csv_files(folder)
        ledger = ReadLedger()
        frames: list[pd.DataFrame] = []
        for path in files:
            frame = read_csv_file(path, ledger, mains)
            if frames and list(frame.columns) != list(frames[0].columns):
                raise DataError(
                    f"house {name!r}: {path.name} has columns {list(frame.columns)} but "
                    f"{files[0].name} has {list(frames[0].columns)} (snake_case, mains as "
                    f"{AGGREGATE!r}); every file of a house needs the same columns"
                )
            frames.append(frame)
        times = np.sort(np.concatenate([f.index.to_numpy(dtype="datetime64[ns]") for f in frames]))
        if times.size < 2:
            raise DataError(f"house {name!r}: {times.size} reading(s) in {len(files)} file(s)")
        steps = np.diff(times.astype(np.int64))
        steps = steps[steps > 0]
        appliances = [c for c in frames[0].columns if c != AGGREGATE]
        readings = {
            column: np.concatenate([f[column].dropna().to_numpy() for f in frames])
            for column in appliances
        }
        houses.append(
            HouseSurvey(
                name=name,
                folder=folder,
                files=files,
                appliances=appliances,
                rows=int(times.size),
                start=str(times[0])[:16].replace("T", " "),
                end=str(times[-1])[:16].replace("T", " "),
                interval_s=float(np.median(steps)) / 1e9 if steps.size else 0.0,
                readings=readings,
            )
        )
    return houses


@dataclass(frozen=True)
class InferredLevels:
    """An appliance's thresholds read from its data, with what they came from."""

    on_threshold_w: float
    limit_w: float
    on_power_w: float
    highest_w: float


def infer_levels(readings: list[np.ndarray], ceiling_w: float) -> InferredLevels:
    """On-threshold and limit of an appliance from its readings in every house.

    On-threshold: ``ON_FRACTION`` of its typical on power (the ``ON_POWER_QUANTILE`` of its
    readings), rounded to 5 W, at least ``MIN_ON_THRESHOLD_W``. Limit: ``LIMIT_MARGIN`` times its
    ``HIGHEST_QUANTILE`` reading, rounded up to ``LIMIT_STEP_W``, at most ``ceiling_w`` (the
    mains limit: no appliance draws more than the house).
    """
    values = np.concatenate(readings) if readings else np.zeros(0)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return InferredLevels(MIN_ON_THRESHOLD_W, LIMIT_STEP_W, 0.0, 0.0)
    on_power = float(np.quantile(values, ON_POWER_QUANTILE))
    highest = float(np.quantile(values, HIGHEST_QUANTILE))
    on_threshold = max(MIN_ON_THRESHOLD_W, 5.0 * round(ON_FRACTION * on_power / 5.0))
    limit = LIMIT_STEP_W * math.ceil(LIMIT_MARGIN * highest / LIMIT_STEP_W)
    limit = min(ceiling_w, max(limit, LIMIT_STEP_W, 2 * on_threshold))
    return InferredLevels(on_threshold, limit, on_power, highest)
