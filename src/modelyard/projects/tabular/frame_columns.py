"""Column access shared by the cleaning steps (derived columns, row filters, outlier rules).

Each step names columns in configuration; these helpers give one meaning to "the column as text"
and "the column as numbers" and one error for a column the table lacks. pandas, training side.
"""

from typing import Any

import pandas as pd

from modelyard.core.errors import ConfigError


def as_text(value: Any) -> str | None:
    """A cell as text for comparisons and group keys: ``2100.0`` reads ``2100``; missing is None.

    Numeric columns hold floats, but configuration (``allowed: ["2100"]``) and JSON group keys
    are written the way people write the value.
    """
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def numeric_column(column: pd.Series, what: str) -> pd.Series:
    """The column as floats, or a ConfigError: numeric operations on text are a config mistake."""
    if not pd.api.types.is_numeric_dtype(column):
        raise ConfigError(f"{what}: column {column.name!r} is not numeric (dtype {column.dtype})")
    return column.astype(float)


def require_column(frame: pd.DataFrame, column: str, what: str) -> pd.Series:
    """``frame[column]``, or a ConfigError naming ``what`` needed it and the columns there are."""
    if column not in frame.columns:
        raise ConfigError(
            f"{what}: column {column!r} is not in the table (columns: {list(frame.columns)})"
        )
    return frame[column]
