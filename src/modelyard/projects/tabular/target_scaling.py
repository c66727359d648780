"""The regression target in model space: logged (when the schema says so) and standardised.

The network learns a unit-scale output; :func:`decode_target` turns its scores back into target
units. The parameters (``{"log", "mean", "std"}``) are stored in a bundle's preprocessing, so a
malformed copy is a :class:`BundleError`. numpy and the standard library only: the prediction
server decodes with this.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from modelyard.core.errors import BundleError, DataError
from modelyard.projects.tabular.scaling import stats
from modelyard.projects.tabular.schema import Target


def _target_params(params: Mapping[str, Any]) -> tuple[bool, float, float]:
    """``(log, mean, std)`` from stored target parameters; BundleError when malformed."""
    if not isinstance(params, Mapping):
        raise BundleError("target parameters are malformed: not an object")
    try:
        log = params["log"]
        mean, std = float(params["mean"]), float(params["std"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"target parameters are malformed: {exc}") from exc
    if not isinstance(log, bool) or not math.isfinite(mean) or not (math.isfinite(std) and std > 0):
        raise BundleError(f"target parameters are malformed: {dict(params)!r}")
    return log, mean, std


def model_space(values: Sequence[float] | NDArray[Any], log: bool) -> NDArray[np.float64]:
    """Target values as float64, logged when asked; DataError for non-finite or non-positive."""
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"target values are not numbers: {exc}") from exc
    invalid = ~np.isfinite(array)
    if log:
        invalid |= array <= 0
    bad = np.flatnonzero(invalid)
    if bad.size:
        row = int(bad[0])
        need = "a finite positive number (the target is modelled in log)" if log else "finite"
        raise DataError(f"target row {row}: {array[row]!r} is not {need}")
    return np.log(array) if log else array


def fit_target(target: Target, values: Sequence[float] | NDArray[Any]) -> dict[str, Any]:
    """Mean and std of the (log) training target: the network then learns a unit-scale output."""
    space = model_space(values, target.log)
    if space.size == 0:
        raise DataError("cannot fit the target on zero rows")
    mean, std = stats(space)
    return {"log": target.log, "mean": mean, "std": std}


def encode_target(params: dict[str, Any], values: NDArray[Any]) -> NDArray[np.float32]:
    """Target units -> standardised (log) target, float32 for training."""
    log, mean, std = _target_params(params)
    return ((model_space(values, log) - mean) / std).astype(np.float32)


def decode_target(params: dict[str, Any], scores: NDArray[Any]) -> NDArray[np.float64]:
    """Model output -> target units, float64 (``exp`` undoes the log when the target was logged)."""
    log, mean, std = _target_params(params)
    space = np.asarray(scores, dtype=np.float64) * std + mean
    return np.exp(space) if log else space
