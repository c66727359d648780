"""``modelyard init table``: a table project drafted from a CSV file: its columns, their types,
value ranges and date formats, codes as categories, and a suggested target."""

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from modelyard.core.errors import ConfigError, DataError
from modelyard.core.hashing import sha256_file
from modelyard.core.project_drafts import ProjectDraft, plain_number, portable
from modelyard.projects.tabular.schema import parse_schema

#: Rows of a table read to infer its columns.
TABLE_SAMPLE_ROWS = 200_000
#: A text column with more distinct values than this (or than half its rows) is free text.
MAX_CATEGORIES = 200
#: Date formats a text column is tried with (all its values must parse).
DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%d-%m-%Y", "%d/%m/%Y")
#: Words that make an integer column a code (categorical): zip codes, types, classes.
CODE_HINTS = ("code", "zip", "postal", "type", "class", "category")
#: Words that make a numeric column a likely target, most telling first.
TARGET_HINTS = ("target", "price", "value", "label", "y")


def draft_table_project(
    name: str, source: Path, target: str | None = None, ignore: Sequence[str] = ()
) -> ProjectDraft:
    """A table project for a CSV file: columns, types, ranges and a target.

    ``ignore`` names columns that are not features (e.g. one that gives the target away).
    """
    source = source.expanduser()
    if not source.is_file():
        raise DataError(f"--source {source}: no such file (a CSV table with a header line)")
    separator = _separator(source)
    frame = _read_table(source, separator)
    columns = [str(c) for c in frame.columns]
    numeric = [c for c in columns if pd.api.types.is_numeric_dtype(frame[c])]
    if target is None:
        target = _suggest_target([column for column in numeric if column not in ignore])
        if target is None:
            raise DataError(f"{source}: no numeric column to predict among {columns}")
        suggested = True
    else:
        suggested = False
        if target not in columns:
            raise ConfigError(f"--target {target!r} is not a column of {source.name}: {columns}")
        if target not in numeric:
            raise ConfigError(
                f"--target {target!r} is not numeric (tables are regression): "
                f"numeric columns are {numeric}"
            )
    if target in ignore:
        raise ConfigError(f"--ignore {target!r}: it is the target")
    unknown = [column for column in ignore if column not in columns]
    if unknown:
        raise ConfigError(f"--ignore {unknown} not column(s) of {source.name}: {columns}")
    schema, facts = _table_schema(frame.drop(columns=list(ignore)), source.name, separator, target)
    parse_schema(schema)  # what training will check, checked now
    project: dict[str, Any] = {
        "name": name,
        "task": "tabular",
        "data": {
            "source": portable(source.parent),
            "files": [{"path": source.name, "sha256": sha256_file(source)}],
            "batch_size": 128,
            "num_workers": 0,
            "max_refused_fraction": 0.001,
            "on_refused": "fail",
            "max_field_length": 100000,
        },
        "monitor": "val_mdape",
        "table": schema,
        "serving": {"max_rows": 1000},
    }
    how = "suggested: pass --target COLUMN to choose another" if suggested else "from --target"
    header = (
        f"# Table project {name!r}, written by `modelyard init table` from {portable(source)}.\n"
        f"# Target {target!r} ({how}).\n"
        "# Feature ranges are the observed ones widened by half their span (the API refuses\n"
        "# values outside). Drop any feature that gives the target away (e.g. a total price when\n"
        "# the target is a price per m2). Every key is described in the shipped projects\n"
        "# (conf/project/kc_house.yaml). Model, schedule and sweep: the tabular family's defaults\n"
        "# (model/tabular.yaml, ...) unless conf/model/<name>.yaml etc. exist.\n"
    )
    text = header + yaml.safe_dump(project, sort_keys=False, width=100)
    facts.insert(0, f"target: {target} ({how})")
    if ignore:
        facts.append(f"ignored (--ignore): {list(ignore)}")
    return ProjectDraft(text, facts)


def _separator(source: Path) -> str:
    try:
        with source.open(newline="", encoding="utf-8") as handle:
            sample = handle.read(65536)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"--source {source}: cannot be read as UTF-8 text ({exc})") from exc
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _read_table(source: Path, separator: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(source, sep=separator, nrows=TABLE_SAMPLE_ROWS)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"--source {source}: not a readable CSV table ({exc})") from exc
    if frame.shape[1] < 2 or len(frame) < 10:
        raise DataError(
            f"--source {source}: {len(frame)} row(s) and {frame.shape[1]} column(s) read; "
            "a table needs a header line, a target and at least one feature, and 10+ rows"
        )
    return frame


def _suggest_target(numeric: list[str]) -> str | None:
    """A numeric column named like a target: a hint exactly, then ending in it, then holding it."""
    matches = (
        lambda name, hint: name == hint,
        lambda name, hint: len(hint) > 1 and name.endswith(hint),
        lambda name, hint: len(hint) > 1 and hint in name,
    )
    for match in matches:
        for hint in TARGET_HINTS:
            for column in numeric:
                if match(column.lower(), hint):
                    return column
    return numeric[-1] if numeric else None


def _is_code(frame: pd.DataFrame, column: str) -> bool:
    """An integer column named like a code (zip code, type, class): categories, not amounts."""
    lowered = column.lower()
    return pd.api.types.is_integer_dtype(frame[column]) and any(
        hint in lowered for hint in CODE_HINTS
    )


def _is_identifier(frame: pd.DataFrame, column: str) -> bool:
    lowered = column.lower()
    named = lowered == "id" or lowered.endswith("_id") or column.endswith("Id")
    values = frame[column].dropna()
    unique_integers = pd.api.types.is_integer_dtype(values) and values.nunique() == len(values) > 1
    return named or unique_integers


def _date_format(values: pd.Series) -> str | None:
    present = values.dropna().astype(str)
    if present.empty:
        return None
    for fmt in DATE_FORMATS:
        parsed = pd.to_datetime(present, format=fmt, errors="coerce")
        if parsed.notna().all():
            return fmt
    return None


def _numeric_entry(column: str, values: pd.Series) -> dict[str, Any]:
    """A numeric feature accepting the observed range widened by half its span (never below
    zero for a column that never is)."""
    low, high = float(values.min()), float(values.max())
    margin = (high - low) / 2
    lower = low - margin if low < 0 or low - margin >= 0 else 0.0
    return {
        "name": column,
        "min": plain_number(math.floor(lower)),
        "max": plain_number(math.ceil(high + margin)),
    }


def _column_entry(frame: pd.DataFrame, column: str) -> tuple[str, dict[str, Any], str | None]:
    """How a column is used: ``(kind, feature entry, date format)``, kind ``skip`` for none."""
    values = frame[column]
    optional = {} if values.notna().all() else {"required": False}
    if values.notna().sum() == 0 or _is_identifier(frame, column):
        return "skip", {}, None
    if _is_code(frame, column) and values.nunique() <= MAX_CATEGORIES:
        entry = {"name": column, "max_categories": max(int(values.nunique()), 2)}
        return "categorical", entry | optional, None
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return "numeric", _numeric_entry(column, values) | optional, None
    if (fmt := _date_format(values)) is not None:
        return "date", {"name": column} | optional, fmt
    distinct = int(values.nunique())
    if distinct > MAX_CATEGORIES or distinct > len(values) / 2:
        return "skip", {}, None
    return "categorical", {"name": column, "max_categories": max(distinct, 2)} | optional, None


def _table_schema(
    frame: pd.DataFrame, file: str, separator: str, target: str
) -> tuple[dict[str, Any], list[str]]:
    kinds: dict[str, list[dict[str, Any]]] = {"numeric": [], "categorical": [], "date": []}
    date_formats: dict[str, str] = {}
    skipped: list[str] = []
    for column in (str(c) for c in frame.columns if str(c) != target):
        kind, entry, fmt = _column_entry(frame, column)
        if kind == "skip":
            skipped.append(column)
            continue
        kinds[kind].append(entry)
        if fmt is not None:
            date_formats[column] = fmt
    numeric, categorical, dates = kinds["numeric"], kinds["categorical"], kinds["date"]
    if not numeric and not categorical and not dates:
        raise DataError(f"{file}: no usable feature besides the target {target!r}")
    dropped = int((~(frame[target] > 0)).sum())  # NaN too: the family keeps target > 0 only
    read: dict[str, Any] = {"file": file, "header": True}
    if separator != ",":
        read["separator"] = separator
    if date_formats:
        read["dates"] = date_formats
    schema: dict[str, Any] = {
        "read": read,
        "features": kinds,
        "target": {"name": target, "log": True},
        "split": {"method": "random", "test_fraction": 0.2, "val_fraction": 0.1, "seed": 0},
        # the finest grouping makes the most telling baseline (zip codes rather than types)
        "baseline_group": (
            max(categorical, key=lambda f: int(f["max_categories"]))["name"]
            if categorical
            else None
        ),
    }
    facts = [
        f"{len(frame)} rows read; features: {len(numeric)} numeric, "
        f"{len(categorical)} categorical, {len(dates)} date",
        f"numeric: {[f['name'] for f in numeric]}",
        f"categorical: {[f['name'] for f in categorical]}",
    ]
    if dates:
        facts.append(f"dates: {date_formats}")
    if skipped:
        facts.append(f"not used (identifiers, free text or empty): {skipped}")
    if dropped:
        facts.append(
            f"{dropped} row(s) with {target} missing or <= 0 will be dropped "
            "(table projects predict positive amounts, in log space)"
        )
    return schema, facts
