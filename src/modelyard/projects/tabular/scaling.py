"""Standardising statistics shared by every encoder: mean/std, median and clipped scaling.

Each is computed so that stored parameters are always finite (JSON stays valid) and so that a
transformed value depends on its own row only (one-row serving equals batch training).
"""

import math
from typing import Final

import numpy as np
from numpy.typing import NDArray

CLIP: Final = 10.0
"""Standardised values are clipped to ``[-CLIP, CLIP]``: one wild value cannot explode a network."""
STD_FLOOR: Final = 1e-6


def stats(values: NDArray[np.float64]) -> tuple[float, float]:
    """Mean and floored population std; (0, 1) when there is nothing to learn from.

    Values near the float64 limit overflow the plain sums; they are then recomputed on values
    scaled into [-1, 1], so the stored parameters are always finite (and JSON stays valid).
    """
    if values.size == 0:
        return 0.0, 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = float(np.mean(values)), float(np.std(values))
        if not (math.isfinite(mean) and math.isfinite(std)):
            scale = float(np.max(np.abs(values)))
            scaled = values / scale
            mean, std = scale * float(np.mean(scaled)), scale * float(np.std(scaled))
    return mean, max(std, STD_FLOOR)


def median(values: NDArray[np.float64]) -> float:
    """The median, as the halves' sum so that two huge middle values cannot overflow."""
    if values.size == 0:
        return 0.0
    ordered = np.sort(values)
    low, high = float(ordered[(values.size - 1) // 2]), float(ordered[values.size // 2])
    return low if low == high else low / 2 + high / 2


def standardise(values: NDArray[np.float64], mean: float, std: float) -> NDArray[np.float64]:
    """``(x - mean) / std`` clipped to ``[-CLIP, CLIP]``: elementwise, so row-independent.

    A difference that overflows becomes infinite and is clipped like any other wild value.
    """
    with np.errstate(over="ignore"):
        return np.clip((values - mean) / std, -CLIP, CLIP)


def imputed_standardised(
    values: NDArray[np.float64], params: dict[str, float]
) -> NDArray[np.float64]:
    """Missing (NaN) values replaced by ``params["median"]``, then standardised and clipped."""
    filled = np.where(np.isnan(values), params["median"], values)
    return standardise(filled, params["mean"], params["std"])


def imputation_params(values: NDArray[np.float64]) -> dict[str, float]:
    """``median``, ``mean`` and ``std`` of the observed (non-NaN) values, as stored in params."""
    observed = values[~np.isnan(values)]
    mean, std = stats(observed)
    return {"median": median(observed), "mean": mean, "std": std}
