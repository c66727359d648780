"""Prepared tables on disk (CSV, readable by people and by pandas) and their conversion into the
column mapping the feature pipeline takes.

Text cells are written spreadsheet-safe (a cell starting with ``=``, ``+``, ``-``, ``@`` gets a
leading quote, see :mod:`modelyard.core.spreadsheet`) because people open these files; reading
them back removes exactly that quote, so training sees the source's text unchanged."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from modelyard.core.errors import DataError
from modelyard.core.spreadsheet import spreadsheet_original, spreadsheet_safe
from modelyard.projects.tabular.feature_values import Columns, category_key
from modelyard.projects.tabular.schema import TableSchema
from modelyard.projects.tabular.splitting import TableSplit

PARTS = ("train", "val", "test")
ALL_ROWS = "__all__"


def _categorical_names(schema: TableSchema) -> list[str]:
    names = [f.name for f in schema.features.categorical]
    if schema.baseline_group and schema.baseline_group not in names:
        names.append(schema.baseline_group)
    return names


def write_prepared(
    split: TableSplit, output: Path, schema: TableSchema | None = None
) -> dict[str, str]:
    """Write the parts as CSV; with ``schema``, categorical columns are written as category keys.

    A categorical column read as numbers (a zip code column of a headed CSV) holds floats, which
    pandas writes as ``2100.0``; read back as text that would be the category "2100.0", while a
    request sending 2100 or "2100" is the category "2100". Writing :func:`category_key` of every
    value makes training and serving agree (and keeps text such as "0800" unchanged).
    """
    output.mkdir(parents=True, exist_ok=True)
    written = {}
    for part in PARTS:
        path = output / f"{part}.csv"
        frame: pd.DataFrame = getattr(split, part)
        frame = frame.copy()
        if schema is not None:
            for name in _categorical_names(schema):
                if name in frame.columns:
                    frame[name] = frame[name].map(category_key).astype(object)
        _map_text(frame, spreadsheet_safe)
        frame.to_csv(path, index=False, date_format="%Y-%m-%d")
        written[part] = str(path)
    return written


def read_prepared(directory: Path, part: str, schema: TableSchema) -> pd.DataFrame:
    """One prepared part with the schema's types (categories as text, dates as datetimes)."""
    path = Path(directory) / f"{part}.csv"
    if not path.is_file():
        raise DataError(f"prepared table not found: {path} (run `modelyard data prepare` first)")
    frame = pd.read_csv(path, dtype=dict.fromkeys(_categorical_names(schema), str))
    _map_text(frame, spreadsheet_original)
    for feature in schema.features.date:
        frame[feature.name] = pd.to_datetime(frame[feature.name], errors="coerce")
    return frame


def _map_text(frame: pd.DataFrame, function: Callable[[Any], Any]) -> None:
    """Apply ``function`` to every cell of the text (object) columns, in place."""
    for name in frame.select_dtypes(include="object").columns:
        frame[name] = frame[name].map(function).astype(object)


def feature_columns(frame: pd.DataFrame, schema: TableSchema) -> Columns:
    """The feature columns as plain Python values (None for missing), as a request would send."""
    missing = [name for name in schema.features.names() if name not in frame.columns]
    if missing:
        raise DataError(f"the table has no column(s) {missing} needed as features")
    columns: dict[str, list[Any]] = {}
    for name in (f.name for f in schema.features.numeric):
        columns[name] = [None if pd.isna(v) else float(v) for v in frame[name]]
    for name in (f.name for f in schema.features.categorical):
        columns[name] = [None if pd.isna(v) else v for v in frame[name]]
    for name in (f.name for f in schema.features.date):
        columns[name] = [None if pd.isna(v) else v.date() for v in frame[name]]
    return columns


def group_keys(frame: pd.DataFrame, schema: TableSchema) -> list[str]:
    """Baseline group of every row (e.g. its zip code); one group when the schema names none."""
    if not schema.baseline_group:
        return [ALL_ROWS] * len(frame)
    return [category_key(v) or ALL_ROWS for v in frame[schema.baseline_group]]
