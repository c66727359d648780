"""Row filters: keep the rows every ``filters`` entry of the schema accepts, and say how many went.

A filter keeps rows whose column is within ``[min, max]``, present (``not_null``) and/or one of
``allowed``. Filters apply to every row (training, validation, test alike), before the split.
"""

from collections.abc import Sequence
from typing import Any

import pandas as pd

from modelyard.projects.tabular.frame_columns import as_text, numeric_column, require_column
from modelyard.projects.tabular.schema import RowFilter


def apply_filters(
    frame: pd.DataFrame, filters: Sequence[RowFilter]
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Keep the rows every filter accepts, in order; report per filter how many rows it removed.

    The original index is kept, so removed rows can be traced back to the source file.
    """
    report: list[dict[str, Any]] = []
    for row_filter in filters:
        description = describe_filter(row_filter)
        column = require_column(frame, row_filter.column, f"filter {description!r}")
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
        values = numeric_column(column, f"filter {description!r}")
        if row_filter.min is not None:
            keep &= values >= row_filter.min
        if row_filter.max is not None:
            keep &= values <= row_filter.max
    if row_filter.not_null:
        keep &= column.notna()
    if row_filter.allowed is not None:
        keep &= column.map(as_text).isin(set(row_filter.allowed))
    return keep
