"""The reference and current data as the tables Evidently compares: one column per profile
column, numerical columns as floats (missing = NaN), categorical ones as text (missing = None).

Current rows come from the family's ``log_rows(inputs, outputs)``; a key the profile does not
have is ignored and a column the rows lack is missing there (rows logged by older servers), so
old and new log rows mix in one window without an error.
"""

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from modelyard.core.reference_profile import Column, ReferenceProfile
from modelyard.monitoring.window import LoggedPrediction

if TYPE_CHECKING:
    import pandas as pd

#: ``log_rows(inputs, outputs)``: one logged prediction as drift rows named like the profile.
DriftRows = Callable[[Any, Any], list[dict[str, Any]]]


def _numerical(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _categorical(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return value if isinstance(value, str) else str(value)


def _converter(column: Column) -> Callable[[Any], float | str | None]:
    return _numerical if column.kind == "numerical" else _categorical


@dataclass
class CurrentData:
    """The window's drift rows, column by column, and what the window held."""

    columns: dict[str, list[float | str | None]]
    predictions: int = 0
    first_id: int | None = None
    last_id: int | None = None
    first_at: datetime | None = None
    last_at: datetime | None = None
    versions: set[str] = field(default_factory=set)
    unreadable: int = 0

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values()), []))


def collect(
    logged: Iterable[LoggedPrediction], log_rows: DriftRows, profile: ReferenceProfile
) -> CurrentData:
    """Turn logged predictions into drift rows as they stream past (no raw row is kept)."""
    converters = {name: _converter(column) for name, column in profile.columns.items()}
    current = CurrentData(columns={name: [] for name in profile.columns})
    for prediction in logged:
        current.predictions += 1
        current.versions.add(prediction.version)
        current.first_id = prediction.id  # newest first: the last one seen is the oldest
        current.last_id = current.last_id if current.last_id is not None else prediction.id
        current.first_at = prediction.created_at
        current.last_at = current.last_at or prediction.created_at
        try:
            rows = log_rows(prediction.inputs, prediction.outputs)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            current.unreadable += 1  # a malformed log row: counted, never fatal
            continue
        for row in rows:
            for name, convert in converters.items():
                current.columns[name].append(convert(row.get(name)))
    return current


def frame(profile: ReferenceProfile, data: Mapping[str, list[Any]]) -> "pd.DataFrame":
    """A table of ``data`` with one typed column per profile column."""
    import pandas as pd  # here: a check that fails early never pays for pandas

    columns = {}
    for name, column in profile.columns.items():
        values = data[name]
        if column.kind == "numerical":
            columns[name] = pd.Series(
                [math.nan if v is None else v for v in values], dtype="float64"
            )
        else:
            columns[name] = pd.Series(values, dtype="object")
    return pd.DataFrame(columns)


def reference_frame(profile: ReferenceProfile) -> "pd.DataFrame":
    return frame(profile, {name: list(values) for name, values in profile.data.items()})
