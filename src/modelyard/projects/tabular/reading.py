"""Reading and cleaning a source table as its :class:`TableSchema` declares.

The steps mirror the schema sections, in the order a training run applies them: read the file
(:func:`read_table`), compute derived columns (:func:`derive_columns`), keep the rows the filters
accept (:func:`apply_filters`), then fit outlier bounds on the training rows
(:func:`fit_outlier_bounds`) and drop training rows outside them (:func:`drop_outliers`). Every
cleaning step returns a report of what it removed, so a run records why its row count shrank.

Reading is deliberately explicit rather than left to pandas' type inference: every cell is read
as text, stripped, and only then converted with the declared thousands and decimal separators.
Inference would read Danish ``8.427`` (eight thousand) as 8.427 and ``89 `` (trailing space) as
text; converting ourselves makes the Danish number format reliable.

Training-side code (pandas); the server only needs the pure helpers :func:`danish_floor` and
:func:`danish_side`, which take and return plain Python values.
"""

import codecs
import re
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modelyard.core.csv_records import Table, read_frame
from modelyard.core.errors import ConfigError, DataError
from modelyard.core.row_accounting import DEFAULT_MAX_FIELD_LENGTH, RowReport
from modelyard.projects.tabular.schema import Derivation, OutlierRule, ReadSpec, RowFilter

NUMERIC_SHARE = 0.95
"""A column is numeric when at least this share of its non-empty cells parse as numbers.

A few stray cells (``-``, ``n/a``, a scraping glitch) must not turn a price column into text, but a
text column with the odd number-like value (a house number) must stay text.
"""

SNIFF_BYTES = 8192
"""Bytes inspected for NUL characters: text files never hold them, binary files almost always do."""

# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Danish addresses
# ---------------------------------------------------------------------------------------------

_HOUSE = re.compile(r"\d+[a-zæøå]?", re.IGNORECASE)
_FLOOR = re.compile(r"(st|kl|\d{1,2})\.?", re.IGNORECASE)
_DOOR = re.compile(r"[a-z0-9æøå]{1,6}\.?", re.IGNORECASE)
_SIDE = re.compile(r"(th|tv|mf)\.?", re.IGNORECASE)
_NAMED_FLOORS = {"st": 0.0, "kl": -1.0}


def danish_floor(address: str) -> float | None:
    """The floor of a Danish address: ``st.`` 0, ``kl.`` -1, ``3.`` 3; None when it has none.

    A Danish address is ``<street> <house number>[ <floor>[ <door>]]`` where the house number is
    digits with an optional letter (``12C``), the floor is ``st``/``kl``/digits (usually with a
    dot) and the door is ``th``/``tv``/``mf``, a number or a short code (``b``, ``t2``). Street
    names may contain numbers too (``H. C. Andersens Boulevard``, ``Frederik 7.s Vej``), so the
    house number is the first house-number-like token after which the rest of the address is a
    valid floor-and-door tail.
    An address without a floor is not an apartment.
    """
    tokens = address.replace(",", " ").split()
    for index in range(1, len(tokens)):
        if not _HOUSE.fullmatch(tokens[index]):
            continue
        tail = tokens[index + 1 :]
        if not tail:
            return None
        if _is_floor_tail(tail):
            return _floor_value(tail[0])
    return None


def _is_floor_tail(tail: list[str]) -> bool:
    """Whether ``tail`` is a floor followed by at most two door tokens (``2. tv c``)."""
    if len(tail) > 3 or not _FLOOR.fullmatch(tail[0]):
        return False
    return all(_DOOR.fullmatch(token) for token in tail[1:])


def _floor_value(token: str) -> float:
    word = token.rstrip(".").lower()
    return _NAMED_FLOORS[word] if word in _NAMED_FLOORS else float(word)


def danish_side(address: str) -> str | None:
    """``th``/``tv``/``mf`` (lower case) when the address ends with one, else None."""
    tokens = address.split()
    if len(tokens) < 2 or not _SIDE.fullmatch(tokens[-1]):
        return None
    return tokens[-1].rstrip(".").lower()


# ---------------------------------------------------------------------------------------------
# Derived columns
# ---------------------------------------------------------------------------------------------


def derive_columns(frame: pd.DataFrame, derivations: Sequence[Derivation]) -> pd.DataFrame:
    """A new frame with every derivation's column added, in order (later ones may use earlier)."""
    result = frame.copy()
    for derivation in derivations:
        result[derivation.name] = _DERIVERS[derivation.op](result, derivation)
    return result


def _source_column(frame: pd.DataFrame, derivation: Derivation, column: str) -> pd.Series:
    if column not in frame.columns:
        raise ConfigError(
            f"derivation {derivation.name!r}: source column {column!r} is not in the table "
            f"(columns: {list(frame.columns)})"
        )
    return frame[column]


def _single_source(frame: pd.DataFrame, derivation: Derivation) -> pd.Series:
    """The one source column of an op that reads one column."""
    source = derivation.source
    if isinstance(source, list):
        if len(source) != 1:
            raise ConfigError(
                f"derivation {derivation.name!r}: op {derivation.op} takes one source column, "
                f"got {source}"
            )
        source = source[0]
    return _source_column(frame, derivation, source)


def _map_text(column: pd.Series, function: Callable[[str], Any]) -> pd.Series:
    """``function`` applied to the text of each present cell; None for missing cells."""
    values = [None if text is None else function(text) for text in map(_as_text, column)]
    return pd.Series(values, index=column.index, dtype=object)


def _derive_regex(frame: pd.DataFrame, derivation: Derivation) -> pd.Series:
    try:
        pattern = re.compile(derivation.pattern or "")
    except re.error as exc:
        raise ConfigError(f"derivation {derivation.name!r}: invalid pattern: {exc}") from exc
    if pattern.groups < 1:
        raise ConfigError(
            f"derivation {derivation.name!r}: pattern {pattern.pattern!r} has no capture group"
        )

    def first_group(text: str) -> str | None:
        match = pattern.search(text)
        return None if match is None else match.group(1)

    return _map_text(_single_source(frame, derivation), first_group)


def _derive_floor(frame: pd.DataFrame, derivation: Derivation) -> pd.Series:
    return _map_text(_single_source(frame, derivation), danish_floor).astype(float)


def _derive_side(frame: pd.DataFrame, derivation: Derivation) -> pd.Series:
    return _map_text(_single_source(frame, derivation), danish_side)


def _derive_ratio(frame: pd.DataFrame, derivation: Derivation) -> pd.Series:
    """``source[0] / source[1]``; NaN where the divisor is 0 or missing (never inf)."""
    numerator, denominator = (
        _numeric(_source_column(frame, derivation, name), f"derivation {derivation.name!r}")
        for name in derivation.source
    )
    return numerator / denominator.where(denominator != 0)


def _derive_copy(frame: pd.DataFrame, derivation: Derivation) -> pd.Series:
    return _single_source(frame, derivation).copy()


def _derive_concat(frame: pd.DataFrame, derivation: Derivation) -> pd.Series:
    """The sources' text joined with `` | ``; missing when any source is missing."""
    sources = derivation.source if isinstance(derivation.source, list) else [derivation.source]
    columns = [list(map(_as_text, _source_column(frame, derivation, name))) for name in sources]
    values = [
        None if any(part is None for part in parts) else " | ".join(str(p) for p in parts)
        for parts in zip(*columns, strict=True)
    ]
    return pd.Series(values, index=frame.index, dtype=object)


_DERIVERS: dict[str, Callable[[pd.DataFrame, Derivation], pd.Series]] = {
    "regex": _derive_regex,
    "danish_floor": _derive_floor,
    "danish_side": _derive_side,
    "ratio": _derive_ratio,
    "copy": _derive_copy,
    "concat": _derive_concat,
}


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def _as_text(value: Any) -> str | None:
    """A cell as text for comparisons and group keys: ``2100.0`` reads ``2100``; missing is None.

    Numeric columns hold floats, but configuration (``allowed: ["2100"]``) and JSON group keys
    are written the way people write the value.
    """
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _numeric(column: pd.Series, what: str) -> pd.Series:
    """The column as floats, or a ConfigError: numeric operations on text are a config mistake."""
    if not pd.api.types.is_numeric_dtype(column):
        raise ConfigError(f"{what}: column {column.name!r} is not numeric (dtype {column.dtype})")
    return column.astype(float)


def _require(frame: pd.DataFrame, column: str, what: str) -> pd.Series:
    if column not in frame.columns:
        raise ConfigError(
            f"{what}: column {column!r} is not in the table (columns: {list(frame.columns)})"
        )
    return frame[column]


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------


def apply_filters(
    frame: pd.DataFrame, filters: Sequence[RowFilter]
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Keep the rows every filter accepts, in order; report per filter how many rows it removed.

    The original index is kept, so removed rows can be traced back to the source file.
    """
    report: list[dict[str, Any]] = []
    for row_filter in filters:
        description = describe_filter(row_filter)
        column = _require(frame, row_filter.column, f"filter {description!r}")
        keep = _filter_mask(column, row_filter, description)
        report.append(
            {
                "filter": description,
                "column": row_filter.column,
                "rows_before": len(frame),
                "rows_removed": int((~keep).sum()),
            }
        )
        frame = frame.loc[keep]
    return frame.copy(), report


def describe_filter(row_filter: RowFilter) -> str:
    """A readable condition such as ``10 <= area_m2 <= 500 and area_m2 is not null``."""
    name = row_filter.column
    low, high = row_filter.min, row_filter.max
    parts: list[str] = []
    if low is not None and high is not None:
        parts.append(f"{low:g} <= {name} <= {high:g}")
    elif low is not None:
        parts.append(f"{name} >= {low:g}")
    elif high is not None:
        parts.append(f"{name} <= {high:g}")
    if row_filter.not_null:
        parts.append(f"{name} is not null")
    if row_filter.allowed is not None:
        parts.append(f"{name} in {row_filter.allowed}")
    return " and ".join(parts) if parts else f"{name} (no condition)"


def _filter_mask(column: pd.Series, row_filter: RowFilter, description: str) -> pd.Series:
    """True for rows the filter keeps; NaN fails min/max (comparisons with NaN are False)."""
    keep = pd.Series(True, index=column.index)
    if row_filter.min is not None or row_filter.max is not None:
        values = _numeric(column, f"filter {description!r}")
        if row_filter.min is not None:
            keep &= values >= row_filter.min
        if row_filter.max is not None:
            keep &= values <= row_filter.max
    if row_filter.not_null:
        keep &= column.notna()
    if row_filter.allowed is not None:
        keep &= column.map(_as_text).isin(set(row_filter.allowed))
    return keep


# ---------------------------------------------------------------------------------------------
# Outliers
# ---------------------------------------------------------------------------------------------


def fit_outlier_bounds(frame: pd.DataFrame, rules: Sequence[OutlierRule]) -> list[dict[str, Any]]:
    """Bounds per rule, JSON-serialisable, to be saved with the run and applied to training rows.

    Each entry is ``{"column", "method", "group_by", "global": [lo, hi], "groups": {key: [lo,
    hi]}}``; group keys are the group values as text (see :func:`_as_text`), and only groups with
    at least ``min_group_size`` values get their own bounds: a handful of sales says little about
    what is typical in a zip code.
    """
    return [_fit_rule(frame, rule) for rule in rules]


def _fit_rule(frame: pd.DataFrame, rule: OutlierRule) -> dict[str, Any]:
    what = f"outlier rule on {rule.column!r}"
    _check_rule(rule, what)
    values = _numeric(_require(frame, rule.column, what), what)
    if not np.isfinite(values.to_numpy()).any():
        raise DataError(f"{what}: the column has no values to fit bounds on")
    groups: dict[str, list[float]] = {}
    if rule.group_by is not None:
        keys = _group_keys(_require(frame, rule.group_by, what))
        for key, group in values.groupby(keys, sort=True):
            if int(np.isfinite(group.to_numpy()).sum()) >= rule.min_group_size:
                groups[str(key)] = _bounds(group, rule)
    return {
        "column": rule.column,
        "method": rule.method,
        "group_by": rule.group_by,
        "global": _bounds(values, rule),
        "groups": groups,
    }


def _check_rule(rule: OutlierRule, what: str) -> None:
    if rule.method == "iqr" and rule.k < 0:
        raise ConfigError(f"{what}: k must not be negative, got {rule.k}")
    if rule.method == "quantile" and not 0 <= rule.lower < rule.upper <= 1:
        raise ConfigError(
            f"{what}: need 0 <= lower < upper <= 1, got lower={rule.lower}, upper={rule.upper}"
        )
    if rule.group_by is not None and rule.min_group_size < 1:
        raise ConfigError(f"{what}: min_group_size must be at least 1")


def _bounds(values: pd.Series, rule: OutlierRule) -> list[float]:
    """[lo, hi] from the finite values (linear-interpolated quantiles, as numpy and pandas do)."""
    array = values.to_numpy(dtype=float)
    finite = array[np.isfinite(array)]
    if rule.method == "iqr":
        q1, q3 = np.quantile(finite, [0.25, 0.75])
        spread = rule.k * (q3 - q1)
        return [float(q1 - spread), float(q3 + spread)]
    low, high = np.quantile(finite, [rule.lower, rule.upper])
    return [float(low), float(high)]


def _group_keys(column: pd.Series) -> pd.Series:
    """Group values as text (None when missing): JSON keys must be strings, and equal on reload."""
    return column.map(_as_text).astype(object)


def drop_outliers(
    frame: pd.DataFrame, bounds: list[dict[str, Any]]
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Drop rows outside each rule's bounds (inclusive), in order; report rows removed per rule.

    Rows whose group has no bounds of its own (small, unseen or missing group) use the global
    bounds; rows with a missing value in the rule's column are dropped, since an outlier rule is
    always on a column the model needs.
    """
    report: list[dict[str, Any]] = []
    for fitted in bounds:
        keep = _within_bounds(frame, fitted)
        report.append(
            {
                "column": fitted["column"],
                "group_by": fitted.get("group_by"),
                "rows_before": len(frame),
                "rows_removed": int((~keep).sum()),
            }
        )
        frame = frame.loc[keep]
    return frame.copy(), report


def _within_bounds(frame: pd.DataFrame, fitted: dict[str, Any]) -> pd.Series:
    try:
        column, group_by = str(fitted["column"]), fitted.get("group_by")
        global_low, global_high = (float(bound) for bound in fitted["global"])
        groups: dict[str, list[float]] = dict(fitted.get("groups") or {})
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"malformed outlier bounds {fitted!r}: {exc}") from exc
    what = f"outlier bounds on {column!r}"
    values = _numeric(_require(frame, column, what), what)
    low = pd.Series(global_low, index=frame.index)
    high = pd.Series(global_high, index=frame.index)
    if group_by is not None and groups:
        keys = _group_keys(_require(frame, str(group_by), what))
        low = _group_bound(keys, groups, 0).fillna(low)
        high = _group_bound(keys, groups, 1).fillna(high)
    return (values >= low) & (values <= high)


def _group_bound(keys: pd.Series, groups: dict[str, list[float]], side: int) -> pd.Series:
    """Each row's group bound (NaN where its group has none), by mapping keys to bounds."""
    lookup: dict[Hashable, float] = {key: float(pair[side]) for key, pair in groups.items()}
    return keys.map(lookup).astype(float)
