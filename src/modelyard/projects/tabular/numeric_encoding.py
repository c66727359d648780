"""Numeric features: median imputation, standardisation and a missing indicator.

A numeric feature ``x`` becomes the column ``x``: a missing value (``None``, NaN, empty string) is
imputed with the training median, then the value is standardised with the training mean and
standard deviation of the observed values (std floored at ``1e-6``) and clipped to ``[-10, 10]``
(:mod:`.scaling`). A feature with ``required=False`` also gets a 0/1 ``x__missing`` column. A
feature never observed in training imputes 0 and standardises with mean 0, std 1.
"""

from typing import Any

import numpy as np
from numpy.typing import NDArray

from modelyard.projects.tabular.feature_values import Block
from modelyard.projects.tabular.scaling import imputation_params, imputed_standardised
from modelyard.projects.tabular.schema import NumericFeature


def fit_numeric(feature: NumericFeature, values: NDArray[np.float64]) -> dict[str, Any]:
    """The stored parameters of one numeric feature: name, required, median, mean, std."""
    return {"name": feature.name, "required": feature.required, **imputation_params(values)}


def numeric_block(spec: dict[str, Any], values: NDArray[np.float64]) -> Block:
    block = [imputed_standardised(values, spec)]
    if not spec["required"]:
        block.append(np.isnan(values).astype(np.float64))
    return block


def numeric_names(spec: dict[str, Any]) -> list[str]:
    name: str = spec["name"]
    return [name] if spec["required"] else [name, f"{name}__missing"]
