"""NILM metrics per appliance: energy error and on/off detection quality.

* MAE: mean absolute error in watts.
* SAE (signal aggregate error): ``|sum(pred) - sum(true)| / sum(true)``, the relative error of the
  total energy over the period; ``None`` when the appliance never ran.
* On/off precision, recall and F1: an appliance is "on" when its power exceeds its on-threshold;
  precision is 0 when nothing is predicted on (no division by zero), likewise recall when nothing
  was truly on.
* Error breakdown: which part of the MAE comes from readings wrongly on, from missed ones, and
  from readings whose state is right; and which other appliance was running during false "on"s.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ApplianceScores:
    mae_w: float
    sae: float | None
    precision: float
    recall: float
    f1: float
    on_threshold_w: float
    true_on_fraction: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def mean_absolute_error(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.abs(y_pred.astype(np.float64) - y_true.astype(np.float64))))


def signal_aggregate_error(y_true: np.ndarray, y_pred: np.ndarray) -> float | None:
    total = float(np.sum(y_true, dtype=np.float64))
    if total <= 0.0:
        return None
    return abs(float(np.sum(y_pred, dtype=np.float64)) - total) / total


def on_off_scores(
    y_true: np.ndarray, y_pred: np.ndarray, on_threshold_w: float
) -> tuple[float, float, float]:
    """Precision, recall and F1 of the "appliance is on" decision."""
    true_on = y_true > on_threshold_w
    pred_on = y_pred > on_threshold_w
    true_positive = int(np.sum(true_on & pred_on))
    predicted = int(np.sum(pred_on))
    actual = int(np.sum(true_on))
    precision = true_positive / predicted if predicted else 0.0
    recall = true_positive / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def score_appliance(
    y_true: np.ndarray, y_pred: np.ndarray, on_threshold_w: float
) -> ApplianceScores:
    precision, recall, f1 = on_off_scores(y_true, y_pred, on_threshold_w)
    return ApplianceScores(
        mae_w=mean_absolute_error(y_true, y_pred),
        sae=signal_aggregate_error(y_true, y_pred),
        precision=precision,
        recall=recall,
        f1=f1,
        on_threshold_w=on_threshold_w,
        true_on_fraction=float(np.mean(y_true > on_threshold_w)) if y_true.size else 0.0,
    )


def error_breakdown(
    y_true: np.ndarray, y_pred: np.ndarray, on_threshold_w: float
) -> dict[str, float]:
    """Where an appliance's MAE comes from; the three parts add up to it (in watts).

    ``false_on_w``: readings predicted on while truly off; ``missed_w``: truly on, predicted off;
    ``right_state_w``: on/off right, power wrong.
    """
    if y_true.size == 0:
        return {"false_on_w": 0.0, "missed_w": 0.0, "right_state_w": 0.0}
    error = np.abs(y_pred.astype(np.float64) - y_true.astype(np.float64))
    true_on, pred_on = y_true > on_threshold_w, y_pred > on_threshold_w
    return {
        "false_on_w": float(error[pred_on & ~true_on].sum() / error.size),
        "missed_w": float(error[true_on & ~pred_on].sum() / error.size),
        "right_state_w": float(error[pred_on == true_on].sum() / error.size),
    }


def false_on_while_others_on(
    truth: np.ndarray, predicted: np.ndarray, names: Sequence[str], thresholds: Sequence[float]
) -> dict[str, dict[str, int]]:
    """Per appliance, how many of its false-on readings fall while each other one truly runs.

    A false "on" during another appliance's run is a confusion of the two (a dishwasher's heating
    taken for a washing machine's), not noise; columns of ``truth``/``predicted`` follow ``names``.
    """
    limit = np.asarray(thresholds, dtype=np.float64)
    true_on, pred_on = truth > limit, predicted > limit
    result: dict[str, dict[str, int]] = {}
    for j, name in enumerate(names):
        false_on = pred_on[:, j] & ~true_on[:, j]
        result[name] = {
            other: int(np.sum(false_on & true_on[:, k])) for k, other in enumerate(names) if k != j
        }
    return result
