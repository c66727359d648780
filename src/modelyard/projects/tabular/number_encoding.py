"""The ``number`` encoding of a categorical feature: the category read as a number.

Some categories carry order: Danish zip codes are assigned by region, so ``2100`` and ``2200`` are
neighbours. ``c__number`` is the category key read as a number (missing or not a number: the
training median), standardised and clipped like a numeric feature (:mod:`.scaling`).
"""

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from modelyard.core.errors import ConfigError
from modelyard.projects.tabular.feature_values import Block
from modelyard.projects.tabular.scaling import imputation_params, imputed_standardised


def category_numbers(values: list[str | None]) -> NDArray[np.float64]:
    """Category keys read as numbers; NaN for a missing key or one that is not a finite number."""
    out = np.full(len(values), np.nan, dtype=np.float64)
    for row, value in enumerate(values):
        if value is not None:
            try:
                number = float(value)
            except ValueError:
                continue
            if math.isfinite(number):
                out[row] = number
    return out


def fit_number(name: str, values: list[str | None]) -> dict[str, float]:
    """Median, mean and std of the categories that read as numbers; ConfigError when none do."""
    numbers = category_numbers(values)
    if np.isnan(numbers).all():
        raise ConfigError(
            f"categorical {name!r} has the number encoding but no training value reads as a number"
        )
    return imputation_params(numbers)


def number_block(spec: dict[str, Any], values: list[str | None]) -> Block:
    return [imputed_standardised(category_numbers(values), spec["number"])]


def number_names(spec: dict[str, Any]) -> list[str]:
    return [f"{spec['name']}__number"]
