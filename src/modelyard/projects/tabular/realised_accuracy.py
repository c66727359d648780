"""Realised accuracy of a valuation model: logged predictions scored against the sale prices sent
later as feedback, with evaluation's own metrics (:func:`.metrics.valuation_scores`).

A logged prediction's ``outputs`` are the response's rows (``{TARGET: value, "warnings": [...]}``);
its truth is ``{"rows": [{TARGET: value}, ...]}`` aligned with them, or ``{TARGET: value}`` for a
one-row request. A pair whose rows do not line up, or whose truth names no predicted value, is
left out (counted by the monitor as unscored), never guessed.

Torch-free: the monitor imports it.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelyard.core.bundle import Manifest
from modelyard.projects.tabular.metrics import valuation_scores

#: The metrics of :func:`valuation_scores` that the monitor reports (``rows`` is a count).
METRICS = ("mae", "mdape", "within_5pct", "within_10pct", "within_20pct")


def higher_is_better(metric: str) -> bool:
    """Hit rates improve upwards, errors downwards."""
    return metric.startswith("within_")


def promoted(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The model's evaluation values of :data:`METRICS` from an evaluation metrics JSON
    (``{"model": {...}, "baseline": {...}}``) or a flat ``{name: value}`` mapping."""
    scores = metrics.get("model", metrics)
    if not isinstance(scores, Mapping):
        return {}
    return {k: float(scores[k]) for k in METRICS if _is_number(scores.get(k))}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _truth_rows(truth: Any) -> list[Any]:
    if isinstance(truth, Mapping) and isinstance(truth.get("rows"), list):
        return list(truth["rows"])
    return [truth]


def _aligned(outputs: Any, truth: Any) -> list[tuple[float, float]]:
    """(true, predicted) per row of one prediction; [] when the two do not line up."""
    predicted = outputs if isinstance(outputs, list) else [outputs]
    rows = _truth_rows(truth)
    if len(rows) != len(predicted):
        return []
    pairs = []
    for row, out in zip(rows, predicted, strict=True):
        if not isinstance(row, Mapping) or not isinstance(out, Mapping):
            return []
        shared = [k for k, v in row.items() if _is_number(v) and _is_number(out.get(k))]
        if len(shared) != 1:
            return []
        pairs.append((float(row[shared[0]]), float(out[shared[0]])))
    return pairs


def realised(
    pairs: Sequence[tuple[Any, Any]], manifest: Manifest | None = None
) -> dict[str, float]:
    """MAE, MdAPE and hit rates over every row of the (outputs, truth) pairs that line up;
    {} when none does (or no true value is positive)."""
    del manifest  # the truth names the target itself
    rows = [row for outputs, truth in pairs for row in _aligned(outputs, truth)]
    if not rows:
        return {}
    values = np.asarray(rows, dtype=np.float64)
    try:
        scores = valuation_scores(values[:, 0], values[:, 1])
    except ValueError:  # no positive true value
        return {}
    return {k: float(scores[k]) for k in METRICS}
