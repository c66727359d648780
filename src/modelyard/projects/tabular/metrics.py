"""Valuation metrics: how far predicted prices are from sale prices, in the terms a valuer uses.

* MAE in target units (e.g. DKK per m2);
* MdAPE: the median of |predicted - true| / true, robust to the few absurd sales left in the data;
* hit rates: the share of predictions within ±5 %, ±10 % and ±20 % of the true value.
"""

from typing import Any

import numpy as np

HIT_BANDS = (0.05, 0.10, 0.20)


def valuation_scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """MAE, MdAPE and hit rates; ``truth`` must be positive (rows with truth <= 0 are ignored)."""
    truth = np.asarray(truth, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    keep = truth > 0
    truth, predicted = truth[keep], predicted[keep]
    if truth.size == 0:
        raise ValueError("no rows with a positive true value to score")
    relative = np.abs(predicted - truth) / truth
    scores: dict[str, Any] = {
        "rows": int(truth.size),
        "mae": float(np.mean(np.abs(predicted - truth))),
        "mdape": float(np.median(relative)),
    }
    for band in HIT_BANDS:
        scores[f"within_{round(band * 100)}pct"] = float(np.mean(relative <= band))
    return scores


def fit_group_medians(groups: list[str], target: np.ndarray, min_rows: int = 1) -> dict[str, Any]:
    """The baseline valuer: median target per group (e.g. zip code), global median otherwise."""
    values = np.asarray(target, dtype=np.float64)
    by_group: dict[str, list[float]] = {}
    for group, value in zip(groups, values, strict=True):
        by_group.setdefault(group, []).append(float(value))
    return {
        "global": float(np.median(values)),
        "groups": {
            g: float(np.median(v)) for g, v in sorted(by_group.items()) if len(v) >= min_rows
        },
    }


def predict_group_medians(medians: dict[str, Any], groups: list[str]) -> np.ndarray:
    table: dict[str, float] = medians["groups"]
    fallback = float(medians["global"])
    return np.array([table.get(g, fallback) for g in groups], dtype=np.float64)
