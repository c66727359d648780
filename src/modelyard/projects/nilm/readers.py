"""Readers for household power recordings.

Every reader returns a *house frame*: a ``pandas.DataFrame`` indexed by a tz-naive, sorted,
duplicate-free ``DatetimeIndex`` (local time of the recording), with a float column ``aggregate``
(whole-house mains power, W) and one float column per appliance (W), named in snake_case
(``kettle``, ``microwave``, ``dishwasher``, ``washing_machine``). Missing readings are NaN; aligning
to a fixed interval is the job of :mod:`modelyard.projects.nilm.preparation`, not of the readers.

Two layouts are supported:

* the 1-minute CSV layout: one directory per house holding ``YYYY-MM.csv.gz`` (or ``.csv``) files
  with columns ``Time, Aggregate, <Appliance>...`` (:func:`read_csv_house`);
* the NILMTK HDF5 layout used by ``ukdale.h5`` (:mod:`modelyard.projects.nilm.hdf5_reader`).
"""

import re
import zlib
from pathlib import Path

import pandas as pd

from modelyard.core.errors import DataError

AGGREGATE = "aggregate"
TIME_COLUMN = "Time"
CSV_PATTERNS = ("*.csv.gz", "*.csv", "*.gzip")


def snake_case(name: str) -> str:
    """``WashingMachine`` -> ``washing_machine``; ``Aggregate`` -> ``aggregate``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip())
    return re.sub(r"[^0-9a-zA-Z]+", "_", spaced).strip("_").lower()


def csv_files(house_dir: Path) -> list[Path]:
    """The monthly files of one house directory, in name (= time) order."""
    files = {path for pattern in CSV_PATTERNS for path in house_dir.glob(pattern)}
    return sorted(files)


def discover_houses(root: Path) -> dict[str, Path]:
    """Map house name -> directory for every directory under ``root`` holding CSV files.

    ``root`` may itself be a house directory, in which case it is the only house.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"data source not found: {root}")
    if not root.is_dir():
        raise DataError(f"expected a directory of houses, got a file: {root}")
    if csv_files(root):
        return {root.name: root}
    houses = {child.name: child for child in sorted(root.iterdir()) if child.is_dir()}
    houses = {name: path for name, path in houses.items() if csv_files(path)}
    if not houses:
        raise DataError(
            f"no houses found in {root}: expected sub-directories holding "
            f"monthly files matching {', '.join(CSV_PATTERNS)}"
        )
    return houses


def read_csv_file(path: Path) -> pd.DataFrame:
    """Read one monthly CSV file into a house frame, with a clear error when it is unreadable."""
    try:
        frame = pd.read_csv(path, compression="infer" if path.suffix != ".gzip" else "gzip")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path} is empty") from exc
    if TIME_COLUMN not in frame.columns:
        raise DataError(f"{path} has no '{TIME_COLUMN}' column (columns: {list(frame.columns)})")
    frame.columns = [c if c == TIME_COLUMN else snake_case(str(c)) for c in frame.columns]
    if AGGREGATE not in frame.columns:
        raise DataError(f"{path} has no 'Aggregate' column (columns: {list(frame.columns)})")
    try:
        index = pd.to_datetime(frame.pop(TIME_COLUMN), errors="raise")
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: column '{TIME_COLUMN}' holds values that are not times") from exc
    if getattr(index.dt, "tz", None) is not None:
        index = index.dt.tz_localize(None)
    frame.index = pd.DatetimeIndex(index, name="time")
    try:
        return frame.astype("float64")
    except ValueError as exc:
        raise DataError(f"{path}: power columns hold values that are not numbers") from exc


def read_csv_house(house_dir: Path) -> pd.DataFrame:
    """Read every monthly file of one house and return one sorted, duplicate-free house frame."""
    files = csv_files(Path(house_dir))
    if not files:
        raise DataError(f"no CSV files in {house_dir}")
    frame = pd.concat([read_csv_file(path) for path in files])
    frame = frame[~frame.index.duplicated(keep="first")].sort_index()
    return frame
