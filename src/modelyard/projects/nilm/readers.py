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

import gzip
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from modelyard.core.csv_records import read_frame
from modelyard.core.errors import DataError
from modelyard.core.row_accounting import ReadLedger, RowReport

AGGREGATE = "aggregate"
TIME_COLUMN = "Time"
#: The mains column of the CSV layout, unless ``project.data.mains_column`` names another.
MAINS_COLUMN = "Aggregate"
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


def read_csv_file(
    path: Path, ledger: ReadLedger | None = None, mains: str = MAINS_COLUMN
) -> pd.DataFrame:
    """Read one monthly CSV file into a house frame, with a clear error when it is unreadable.

    ``mains`` is the whole-house column (it becomes ``aggregate``); every other column but
    ``Time`` is an appliance, named in snake_case.

    Lines are parsed one by one (:mod:`modelyard.core.csv_records`) and every malformed one is
    refused with its line number into the file's :class:`RowReport`, which ``ledger`` checks
    against the refusal policy: an unclosed quote, a glued or oversized line, a time that is not
    a time (``not_a_time``) or a power value that is not a number (``not_a_number``). Empty and
    ``NaN``-like cells are missing readings, which preparation handles.
    """
    ledger = ledger if ledger is not None else ReadLedger()
    report = RowReport(source=f"{path.parent.name}/{path.name}")
    table = read_frame(
        _read_text(path), ",", True, ledger.policy.max_field_length, report, infer_types=True
    )
    if table.header is None:
        raise DataError(f"{path} is empty")
    names = column_names(table.header, mains)
    frame = table.frame
    frame.columns = pd.Index(names)
    if TIME_COLUMN not in frame.columns:
        raise DataError(f"{path} has no '{TIME_COLUMN}' column (columns: {table.header})")
    # a lower-case or spaced "aggregate" is the mains too when no other column is named
    if mains not in table.header and (mains != MAINS_COLUMN or AGGREGATE not in names):
        raise DataError(f"{path} has no {mains!r} column (the mains; columns: {table.header})")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataError(
            f"{path}: columns {table.header} give the name(s) {repeated} more than once "
            f"(the mains column {mains!r} is read as {AGGREGATE!r}, the others in snake_case)"
        )
    lines = pd.Series(table.line_numbers, dtype="int64")
    index = _parse_times(frame.pop(TIME_COLUMN), path)
    refused = index.isna().to_numpy()
    report.refuse_many("not_a_time", int(refused.sum()), lines[refused].tolist())
    values = pd.DataFrame({name: _numbers(frame[name]) for name in frame.columns})
    bad = ~refused & _not_numbers(frame, values)
    report.refuse_many("not_a_number", int(bad.sum()), lines[bad].tolist())
    keep = ~(refused | bad)
    ledger.add(report)
    kept: pd.DataFrame = values.loc[keep].astype("float64")
    kept.index = pd.DatetimeIndex(index[keep], name="time")
    return kept


def column_names(header: list[str], mains: str = MAINS_COLUMN) -> list[str]:
    """The house-frame name of each CSV column: ``Time`` kept, ``mains`` read as ``aggregate``,
    every other column in snake_case."""
    return [
        name if name == TIME_COLUMN else AGGREGATE if name == mains else snake_case(name)
        for name in header
    ]


_MISSING = frozenset({"", "na", "n/a", "nan", "-nan", "null", "none", "#n/a", "<na>"})


def _is_missing(cell: object) -> bool:
    """Whether a cell is an empty or NaN-like marker (a missing reading, not a bad one)."""
    return cell is None or str(cell).strip().lower() in _MISSING


def _numbers(cells: pd.Series) -> pd.Series:
    """Floats; NaN where a cell is missing or not a number (pandas already parsed most)."""
    if pd.api.types.is_float_dtype(cells):
        return cells
    return pd.to_numeric(cells, errors="coerce").astype("float64")


def _not_numbers(cells: pd.DataFrame, values: pd.DataFrame) -> np.ndarray:
    """Rows with a cell that failed to parse and is not a missing-value marker.

    Only the (few) cells that parsed as NaN are looked at in Python: the real files have
    millions of cells.
    """
    failed = values.isna().to_numpy()
    rows, columns = np.nonzero(failed)
    bad = np.zeros(len(cells), dtype=bool)
    for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
        if not _is_missing(cells.iat[row, column]):
            bad[row] = True
    return bad


def _parse_times(cells: pd.Series, path: Path) -> pd.Series:
    """Tz-naive local times (an offset is dropped, keeping wall-clock time); NaT: not a time."""
    try:
        times = pd.to_datetime(cells, errors="coerce", format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: column '{TIME_COLUMN}' cannot be read as times: {exc}") from exc
    if not pd.api.types.is_datetime64_any_dtype(times):
        raise DataError(f"{path}: column '{TIME_COLUMN}' mixes time zones")
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_localize(None)
    return times.reset_index(drop=True)


def _read_text(path: Path) -> str:
    """The file's text, gunzipped when its name says it is compressed."""
    try:
        data = path.read_bytes()
        if path.suffix in (".gz", ".gzip"):
            data = gzip.decompress(data)
        return data.decode("utf-8")
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


DUPLICATE_RULE = "repeated time (first reading kept)"


def read_csv_house(
    house_dir: Path, ledger: ReadLedger | None = None, mains: str = MAINS_COLUMN
) -> pd.DataFrame:
    """Read every monthly file of one house and return one sorted, duplicate-free house frame.

    A time read twice (within a file or across two files) keeps its first reading; the others
    are counted as filtered in their file's report.
    """
    files = csv_files(Path(house_dir))
    if not files:
        raise DataError(f"no CSV files in {house_dir}")
    ledger = ledger if ledger is not None else ReadLedger()
    frames = [read_csv_file(path, ledger, mains) for path in files]
    frame = pd.concat(frames)
    repeated = frame.index.duplicated(keep="first")
    start = 0
    for path, part in zip(files, frames, strict=True):
        count = int(repeated[start : start + len(part)].sum())
        ledger.reports[f"{path.parent.name}/{path.name}"].filter(DUPLICATE_RULE, count)
        start += len(part)
    return frame[~repeated].sort_index()
