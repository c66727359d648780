"""Normalisation statistics for mains and appliance power, fitted on training data only.

Kept free of torch and pandas: the server applies exactly these functions to requests, so training
and serving cannot drift apart. The statistics travel in the bundle manifest as plain JSON.
"""

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from modelyard.core.errors import BundleError

_MIN_STD = 1e-3


@dataclass(frozen=True)
class Normalisation:
    """z-scores: mains by one mean/std, each appliance by its own."""

    aggregate_mean: float
    aggregate_std: float
    target_mean: tuple[float, ...]
    target_std: tuple[float, ...]

    def normalise_aggregate(self, watts: np.ndarray) -> np.ndarray:
        return ((watts - self.aggregate_mean) / self.aggregate_std).astype(np.float32, copy=False)

    def normalise_targets(self, watts: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.target_mean, dtype=np.float32)
        std = np.asarray(self.target_std, dtype=np.float32)
        return ((watts - mean) / std).astype(np.float32, copy=False)

    def denormalise_targets(self, scores: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.target_mean, dtype=np.float32)
        std = np.asarray(self.target_std, dtype=np.float32)
        return (scores * std + mean).astype(np.float32, copy=False)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_mean"] = list(self.target_mean)
        data["target_std"] = list(self.target_std)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Normalisation":
        try:
            stats = cls(
                aggregate_mean=float(data["aggregate_mean"]),
                aggregate_std=float(data["aggregate_std"]),
                target_mean=tuple(float(v) for v in data["target_mean"]),
                target_std=tuple(float(v) for v in data["target_std"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"malformed normalisation statistics: {exc}") from exc
        stds = (stats.aggregate_std, *stats.target_std)
        values = (stats.aggregate_mean, *stats.target_mean, *stds)
        if len(stats.target_mean) != len(stats.target_std):
            raise BundleError(
                "malformed normalisation statistics: target_mean and target_std differ in length"
            )
        if not all(math.isfinite(v) for v in values) or min(stds) <= 0.0:
            raise BundleError(
                "malformed normalisation statistics: means must be finite and stds finite and > 0"
            )
        return stats


def fit_normalisation(
    aggregates: Sequence[np.ndarray], targets: Sequence[np.ndarray], valids: Sequence[np.ndarray]
) -> Normalisation:
    """Fit mean/std over the valid samples of the given (training) series only."""
    agg = np.concatenate([a[v] for a, v in zip(aggregates, valids, strict=True)]).astype(np.float64)
    tgt = np.concatenate([t[v] for t, v in zip(targets, valids, strict=True)]).astype(np.float64)
    if agg.size == 0:
        raise ValueError("cannot fit normalisation: no valid training samples")
    return Normalisation(
        aggregate_mean=float(agg.mean()),
        aggregate_std=float(max(agg.std(), _MIN_STD)),
        target_mean=tuple(float(m) for m in tgt.mean(axis=0)),
        target_std=tuple(float(max(s, _MIN_STD)) for s in tgt.std(axis=0)),
    )
