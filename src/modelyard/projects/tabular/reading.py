"""Reading a source table file into a data frame as its :class:`ReadSpec` declares.

This is the first of the cleaning steps a training run applies in schema order: read the file
(:func:`read_table`, with a report of every line it refused), compute derived columns
(:func:`.derived.columns.derive_columns`), keep the rows the filters accept
(:func:`.row_filters.apply_filters`), then fit outlier bounds on the training rows and drop
training rows outside them (:mod:`.outliers`). Every step reports what it removed, so a run
records why its row count shrank.

Reading is deliberately explicit rather than left to pandas' type inference: every cell is read
as text, stripped, and only then converted with the declared thousands and decimal separators.
Inference would read Danish ``8.427`` (eight thousand) as 8.427 and ``89 `` (trailing space) as
text; converting ourselves makes the Danish number format reliable. Training side (pandas).
"""

import codecs
import re
from pathlib import Path

import pandas as pd

from modelyard.core.csv_records import Table, read_frame
from modelyard.core.errors import ConfigError, DataError
from modelyard.core.row_accounting import DEFAULT_MAX_FIELD_LENGTH, RowReport
from modelyard.projects.tabular.schema import ReadSpec

NUMERIC_SHARE = 0.95
"""A column is numeric when at least this share of its non-empty cells parse as numbers.

A few stray cells (``-``, ``n/a``, a scraping glitch) must not turn a price column into text, but a
text column with the odd number-like value (a house number) must stay text.
"""

SNIFF_BYTES = 8192
"""Bytes inspected for NUL characters: text files never hold them, binary files almost always do."""


def read_table(
    spec: ReadSpec, path: Path, max_field_length: int = DEFAULT_MAX_FIELD_LENGTH
) -> tuple[pd.DataFrame, RowReport]:
    """Read ``path`` as ``spec`` describes: named columns, floats, text and ``datetime64[ns]``.

    Returns the table and the report of what reading did with every line: malformed lines (an
    unclosed quote, two records glued together by a lost newline, a field longer than
    ``max_field_length``) are refused one by one with their line numbers, never dropped silently
    and never allowed to swallow the lines after them (see :mod:`modelyard.core.csv_records`).
    Whether refused rows stop the run is the caller's :class:`RefusalPolicy` decision.
    """
    table, report = _read_records(spec, path, max_field_length)
    frame = _name_columns(table, spec, path)
    for column in spec.dates:
        if column not in frame.columns:
            raise ConfigError(
                f"read.dates names column {column!r}, which {path.name} does not have "
                f"(columns: {list(frame.columns)})"
            )
    frame = pd.DataFrame({name: _convert_column(frame[name], spec) for name in frame.columns})
    return frame, report


def _read_records(spec: ReadSpec, path: Path, max_field_length: int) -> tuple[Table, RowReport]:
    """Every record as text (missing where a short line lacks a cell), with the line report."""
    _check_readable(path, _codec_name(spec.encoding))
    try:
        text = path.read_text(encoding=spec.encoding)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} cannot be decoded as {spec.encoding}: {exc}") from exc
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    report = RowReport(source=path.name)
    table = read_frame(text, spec.separator, spec.header, max_field_length, report)
    if table.header is None and table.frame.empty:
        raise DataError(f"{path} is empty")
    return table, report


def _codec_name(encoding: str) -> str:
    """The canonical codec name; an unknown encoding is a configuration mistake."""
    try:
        return codecs.lookup(encoding).name
    except LookupError as exc:
        raise ConfigError(f"read.encoding {encoding!r} is not a known encoding") from exc


def _check_readable(path: Path, codec: str) -> None:
    """Fail with a clear DataError for a missing, non-regular or binary file.

    NUL bytes mark a binary file, except in UTF-16/32 text, where they are ordinary.
    """
    if not path.exists():
        raise DataError(f"table file not found: {path}")
    if not path.is_file():
        raise DataError(f"table path is not a file: {path}")
    try:
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if not head.strip():
        raise DataError(f"{path} is empty")
    if b"\x00" in head and not codec.startswith(("utf-16", "utf-32")):
        raise DataError(f"{path} looks like a binary file, not a CSV table")


def _name_columns(table: Table, spec: ReadSpec, path: Path) -> pd.DataFrame:
    """Name the columns from ``read.columns``, else from the header line."""
    width = len(table.header) if table.header is not None else table.frame.shape[1]
    if spec.columns:
        names = list(spec.columns)
        if len(names) != width:
            raise DataError(
                f"{path.name}: read.columns names {len(names)} columns, "
                f"but the file has {width}: expected {names}"
            )
        _reject_duplicates(names, ConfigError, "read.columns")
    else:
        names = [cell.strip() for cell in table.header or []]
        _reject_duplicates(names, DataError, f"the header of {path.name}")
    body = table.frame.reindex(columns=range(width))
    body.columns = pd.Index(names)
    return body


def _reject_duplicates(names: list[str], error: type[Exception], where: str) -> None:
    """Duplicate names would make ``frame[name]`` a frame instead of a column."""
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise error(f"{where} names these columns more than once: {duplicates}")


def _convert_column(cells: pd.Series, spec: ReadSpec) -> pd.Series:
    """Stripped text to dates (declared), floats (mostly numeric) or text with None for missing."""
    text = _stripped(cells)
    name = str(cells.name)
    if name in spec.dates:
        dates = pd.to_datetime(text, format=spec.dates[name], errors="coerce")
        return dates.astype("datetime64[ns]")
    numbers = _parse_numbers(text, spec)
    present = int(text.notna().sum())
    if present == 0 or int(numbers.notna().sum()) >= NUMERIC_SHARE * present:
        return numbers
    return text


def _stripped(cells: pd.Series) -> pd.Series:
    """Cells without surrounding whitespace; empty and absent cells become None."""
    text = cells.astype(object).str.strip().to_numpy(dtype=object)
    text[pd.isna(text) | (text == "")] = None
    return pd.Series(text, index=cells.index, name=cells.name, dtype=object)


def _number_pattern(thousands: str | None, decimal: str) -> re.Pattern[str]:
    """A strict number syntax for the given separators.

    Thousands separators must group digits by three (``1.340.000``), so with Danish separators a
    stray ``2.5`` fails to parse (and counts against the column being numeric) instead of
    silently becoming 25.
    """
    if thousands and thousands == decimal:
        raise ConfigError(f"read.thousands and read.decimal are both {decimal!r}")
    dec = re.escape(decimal)
    integer = r"\d+"
    if thousands:
        integer = rf"\d{{1,3}}(?:{re.escape(thousands)}\d{{3}})+|\d+"
    return re.compile(rf"[+-]?(?:(?:{integer})(?:{dec}\d*)?|{dec}\d+)(?:[eE][+-]?\d+)?")


def _parse_numbers(text: pd.Series, spec: ReadSpec) -> pd.Series:
    """Floats where a cell matches :func:`_number_pattern`, NaN elsewhere."""
    pattern = _number_pattern(spec.thousands, spec.decimal)
    valid = text.str.fullmatch(pattern, na=False).astype(bool)
    plain = text.where(valid)
    if spec.thousands:
        plain = plain.str.replace(spec.thousands, "", regex=False)
    if spec.decimal != ".":
        plain = plain.str.replace(spec.decimal, ".", regex=False)
    return pd.to_numeric(plain, errors="coerce").astype(float)
