"""Date features: imputed with the training median day, then split into calendar parts.

A date ``d`` (``datetime.date``, ``datetime.datetime``, ``numpy.datetime64`` or an ISO
``YYYY-MM-DD`` string; times are dropped) that is missing is imputed with the training median
day, then each of ``parts`` in the listed order gives

- ``ordinal``: days since 1970-01-01, standardised with the training mean/std -> ``d__ordinal``;
- ``year``: the calendar year, standardised likewise -> ``d__year``;
- ``month``: ``sin``/``cos`` of ``2*pi*(month-1)/12`` -> ``d__month_sin``, ``d__month_cos``;
- ``day_of_year``: ``sin``/``cos`` of ``2*pi*(day_of_year-1)/365.25``;
- ``day_of_week``: ``sin``/``cos`` of ``2*pi*weekday/7`` with Monday = 0.

Standardised parts are clipped to ``[-10, 10]`` like numeric values. ``required=False`` adds a
``d__missing`` indicator after the parts.

The cyclic parts are looked up in tables built once with :mod:`math`, never computed by vectorised
numpy on the batch: the result of a row then cannot depend on how many rows it travels with (SIMD
kernels may round the tail of a batch differently), so one-row serving equals batch training.
"""

import math
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from modelyard.core.errors import DataError
from modelyard.projects.tabular.feature_values import Block, is_missing
from modelyard.projects.tabular.scaling import standardise, stats
from modelyard.projects.tabular.schema import DateFeature

_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_STANDARDISED_PARTS: Final = ("ordinal", "year")


def _cycle_table(size: int, period: float) -> NDArray[np.float64]:
    """``[sin, cos]`` of ``2*pi*i/period`` for ``i < size``, computed once with :mod:`math`."""
    angles = [2.0 * math.pi * i / period for i in range(size)]
    return np.array([[math.sin(a), math.cos(a)] for a in angles], dtype=np.float64)


#: Cyclic part -> (its ``[sin, cos]`` table, the part's first value, which indexes row 0).
_CYCLES: Final = {
    "month": (_cycle_table(12, 12.0), 1),
    "day_of_year": (_cycle_table(366, 365.25), 1),
    "day_of_week": (_cycle_table(7, 7.0), 0),
}


def _day(value: Any) -> int | None:
    """Days since 1970-01-01 of one date value, ``None`` when missing; ValueError if unreadable."""
    if is_missing(value):
        return None
    if isinstance(value, datetime):
        return value.date().toordinal() - _EPOCH_ORDINAL
    if isinstance(value, date):
        return value.toordinal() - _EPOCH_ORDINAL
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[D]").astype(np.int64))
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            parsed = date.fromisoformat(text)
        except ValueError:
            parsed = datetime.fromisoformat(text).date()
        return parsed.toordinal() - _EPOCH_ORDINAL
    raise ValueError("not a date")


def read_days(
    name: str, values: Sequence[Any] | NDArray[Any]
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """A date column as (days since 1970-01-01, missing mask); missing days hold 0."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "M":
        as_days = values.astype("datetime64[D]").reshape(-1)
        missing = np.isnat(as_days)
        days = np.where(missing, 0, as_days.astype(np.int64)).astype(np.int64)
        return days, missing
    days = np.zeros(len(values), dtype=np.int64)
    missing = np.zeros(len(values), dtype=np.bool_)
    for row, value in enumerate(values):
        try:
            day = _day(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise DataError(
                f"feature {name!r}, row {row}: cannot read {value!r} as a date ({exc})"
            ) from exc
        if day is None:
            missing[row] = True
        else:
            days[row] = day
    return days, missing


def _calendar(days: NDArray[np.int64]) -> dict[str, NDArray[np.int64]]:
    """Year, month (1-12), day of year (1-366) and weekday (Monday = 0) of day numbers."""
    stamps = days.astype("datetime64[D]")
    years = stamps.astype("datetime64[Y]")
    return {
        "year": years.astype(np.int64) + 1970,
        "month": stamps.astype("datetime64[M]").astype(np.int64) % 12 + 1,
        "day_of_year": (stamps - years.astype("datetime64[D]")).astype(np.int64) + 1,
        "day_of_week": (days + 3) % 7,  # 1970-01-01 was a Thursday
    }


def fit_date(
    feature: DateFeature, days: NDArray[np.int64], missing: NDArray[np.bool_]
) -> dict[str, Any]:
    """Median day (the lower median: an actual training day), ordinal and year statistics."""
    observed = np.sort(days[~missing])
    median_day = int(observed[(observed.size - 1) // 2]) if observed.size else 0
    ordinal_mean, ordinal_std = stats(observed.astype(np.float64))
    year_mean, year_std = stats(_calendar(observed)["year"].astype(np.float64))
    return {
        "name": feature.name,
        "required": feature.required,
        "parts": list(dict.fromkeys(feature.parts)),
        "median_day": median_day,
        "ordinal_mean": ordinal_mean,
        "ordinal_std": ordinal_std,
        "year_mean": year_mean,
        "year_std": year_std,
    }


def _date_part(
    spec: dict[str, Any], part: str, days: NDArray[np.int64], calendar: dict[str, NDArray[np.int64]]
) -> Block:
    if part in _STANDARDISED_PARTS:
        values = (days if part == "ordinal" else calendar[part]).astype(np.float64)
        return [standardise(values, spec[f"{part}_mean"], spec[f"{part}_std"])]
    table, offset = _CYCLES[part]
    rows = table[calendar[part] - offset]
    return [rows[:, 0], rows[:, 1]]


def date_block(spec: dict[str, Any], days: NDArray[np.int64], missing: NDArray[np.bool_]) -> Block:
    filled = np.where(missing, spec["median_day"], days).astype(np.int64)
    calendar = _calendar(filled)
    block: Block = []
    for part in spec["parts"]:
        block.extend(_date_part(spec, part, filled, calendar))
    if not spec["required"]:
        block.append(missing.astype(np.float64))
    return block


def date_names(spec: dict[str, Any]) -> list[str]:
    name: str = spec["name"]
    names: list[str] = []
    for part in spec["parts"]:
        if part in _STANDARDISED_PARTS:
            names.append(f"{name}__{part}")
        else:
            names.extend([f"{name}__{part}_sin", f"{name}__{part}_cos"])
    return names if spec["required"] else [*names, f"{name}__missing"]
