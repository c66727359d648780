"""Tabular drift features: the one definition of what the monitor compares, per request row.

A tabular request is already a list of feature rows, and the server logs them as validated
(every field of the schema, None for an optional one left out) with their predictions, so the
drift features are the request fields themselves, one drift row per request row:

* a number (a field the schema declares numeric; validated, it is always a JSON float) is
  numerical;
* a category (zip code, side, ...: a text, or a JSON integer such as ``2100``) is categorical,
  as its category key (``2100`` and ``"2100"`` are the same category ``"2100"``, as in training);
* a date (``YYYY-MM-DD``) is numerical, as a decimal year (2020-07-02 -> 2020.5), so that a
  window of sales from another period shows as drift of one number;
* each predicted number of the response (the target, e.g. ``price_per_m2``, and a derived total)
  is a numerical prediction column ``predicted_<name>``.

Logging needs no extra work: the kind of each value follows from its JSON type, which the
server's validation fixes (numbers are floats, categories texts or integers, dates ISO texts),
so :func:`log_rows` needs no schema and reads rows logged by any version of the server. The
reference profile (:mod:`.reference`) adds the true target (group ``target``, named like the
target) and is built by :func:`log_rows` from the rows as the server logs them.
numpy-free and pandas-free: the prediction server imports this module.
"""

import math
import re
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from modelyard.core.reference_profile import Column, Value, finite_number
from modelyard.projects.tabular.schema import TableSchema

PREDICTED_PREFIX = "predicted_"
#: Keys of a logged prediction that are not predicted numbers.
_NOT_PREDICTIONS = frozenset({"warnings"})
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


def predicted_column(name: str) -> str:
    return f"{PREDICTED_PREFIX}{name}"


def columns(schema: TableSchema) -> dict[str, Column]:
    """The profile's columns for ``schema``: every feature, the predictions, the target."""
    features = schema.features
    specs: dict[str, Column] = {}
    for numeric in features.numeric:
        specs[numeric.name] = Column(kind="numerical", group="input")
    for categorical in features.categorical:
        specs[categorical.name] = Column(kind="categorical", group="input")
    for day in features.date:
        specs[day.name] = Column(kind="numerical", group="input")
    specs[predicted_column(schema.target.name)] = Column(kind="numerical", group="prediction")
    if schema.total is not None:
        specs[predicted_column(schema.total.name)] = Column(kind="numerical", group="prediction")
    specs[schema.target.name] = Column(kind="numerical", group="target")
    return specs


def decimal_year(day: date) -> float:
    """2020-07-02 -> 2020.5: the year plus the share of it passed at the day's start."""
    days = (date(day.year + 1, 1, 1) - date(day.year, 1, 1)).days
    return round(day.year + (day.timetuple().tm_yday - 1) / days, 5)


def feature_value(value: Any) -> Value:
    """One logged request value as its drift value (see the module text); None if missing."""
    if isinstance(value, bool) or value is None:
        return None if value is None else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        match = _ISO_DATE.fullmatch(value)
        if match is None:
            return value
        try:
            return decimal_year(date(*(int(part) for part in match.groups())))
        except ValueError:
            return value
    return None


def log_rows(inputs: Any, outputs: Any) -> list[dict[str, Value]]:
    """One prediction-log record (its ``inputs``/``outputs`` JSON) as drift rows: one per
    request row, with the request's fields and ``predicted_*`` of the prediction at the same
    position (None when a value is missing or not usable). Anything but a list of rows (a
    record the log truncated is ``{"truncated": true, ...}``) gives no row; never an
    exception."""
    rows = inputs
    if not isinstance(rows, list):
        return []
    predictions = outputs if isinstance(outputs, list) else []
    drift: list[dict[str, Value]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            continue
        values: dict[str, Value] = {str(k): feature_value(v) for k, v in row.items()}
        prediction = predictions[i] if i < len(predictions) else None
        if isinstance(prediction, Mapping):
            for name, value in prediction.items():
                if name not in _NOT_PREDICTIONS:
                    values[predicted_column(str(name))] = finite_number(value)
        drift.append(values)
    return drift


def with_target(rows: Sequence[dict[str, Value]], name: str, truth: Sequence[float]) -> None:
    """Add the true target ``name`` to each drift row (the reference's target column)."""
    for row, value in zip(rows, truth, strict=True):
        row[name] = finite_number(value)
