"""Reading feature values from columns, the same way for a data frame and for one request.

The feature pipeline and its encoders take columns as plain sequences or numpy arrays
(:data:`Columns`); this module turns their cells into numbers, category keys and row counts, with
one rule for what "missing" means. numpy and the standard library only: the prediction server
runs it, and pandas' ``NA``/``NaT`` are recognised by type name so that frame columns pass
through without importing pandas.
"""

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from modelyard.core.errors import DataError

Columns = Mapping[str, Sequence[Any] | NDArray[Any]]
"""Column name -> values, one per row (a list, tuple or numpy array)."""

Block = list[NDArray[np.float64]]
"""Output columns of one feature, in output order, each one value per row."""

_PANDAS_MISSING_TYPES: Final = frozenset({"NAType", "NaTType"})


def is_missing(value: Any) -> bool:
    """``None``, NaN and NaT are missing; pandas' ``NA``/``NaT`` are recognised by type name.

    The type-name check lets columns straight from a data frame through without importing pandas
    (``pd.NA`` refuses comparison and ``pd.NaT`` poses as a ``datetime``).
    """
    if value is None or type(value).__name__ in _PANDAS_MISSING_TYPES:
        return True
    if isinstance(value, np.datetime64):
        return bool(np.isnat(value))
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return math.isnan(float(value))
    return False


def _number(value: Any) -> float:
    """One numeric value as a float (NaN when missing); ValueError when it is not a number."""
    if is_missing(value):
        return math.nan
    if isinstance(value, str):
        text = value.strip()
        number = float(text) if text else math.nan
    elif isinstance(value, numbers.Real):
        number = float(value)
    else:
        raise ValueError("not a number")
    if math.isinf(number):
        raise ValueError("not finite")
    return number


def read_numbers(name: str, values: Sequence[Any] | NDArray[Any]) -> NDArray[np.float64]:
    """A numeric column as float64 with NaN for missing values."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        array = values.astype(np.float64).reshape(-1)
        infinite = np.flatnonzero(np.isinf(array))
        if infinite.size:
            row = int(infinite[0])
            raise DataError(f"feature {name!r}, row {row}: {array[row]!r} is not a finite number")
        return array
    out = np.empty(len(values), dtype=np.float64)
    for row, value in enumerate(values):
        try:
            out[row] = _number(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise DataError(
                f"feature {name!r}, row {row}: cannot read {value!r} as a number ({exc})"
            ) from exc
    return out


def category_key(value: Any) -> str | None:
    """The category string of one value, ``None`` when missing.

    Whole numbers become integer strings (2100.0 -> "2100") because a zip code read as a float
    from one file and as text from another must still be the same category.
    """
    if is_missing(value):
        return None
    if isinstance(value, str | bool | np.bool_):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    return str(value)


def read_categories(values: Sequence[Any] | NDArray[Any]) -> list[str | None]:
    """A categorical column as category keys (:func:`category_key`)."""
    return [category_key(value) for value in values]


def row_count(columns: Columns, names: Sequence[str], missing: type[Exception]) -> int:
    """The common length of the named columns; ``missing`` is raised for an absent one."""
    absent = [name for name in names if name not in columns]
    if absent:
        raise missing(f"feature column(s) missing from the data: {', '.join(absent)}")
    lengths = {name: len(columns[name]) for name in names}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}={length}" for name, length in lengths.items())
        raise DataError(f"feature columns have different lengths: {detail}")
    return next(iter(lengths.values()), 0)
