"""Two-class image models: ranking scores, the decision threshold and the served decision.

numpy only: serving and offline predict import :func:`binary_decisions`, training imports
:func:`choose_threshold`, evaluation :func:`ranking_scores`.

* The *positive class* is the configured one (``project.decision.positive``), by default the
  second class in the model's class order (the order the bundle's contract lists).
* An image is decided positive when the positive class's probability is ``>= threshold``.
* Candidate thresholds are the positive probabilities the validation images actually got, so a
  chosen threshold reproduces the validation precision and recall it was chosen for exactly.
* ROC-AUC is the probability that a random positive image scores above a random negative one
  (ties count a half: the Mann-Whitney statistic). PR-AUC is the average precision,
  ``sum_n (R_n - R_{n-1}) P_n`` over the thresholds from high to low (scikit-learn's
  ``average_precision_score``), not the trapezoid, which over-states it.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelyard.core.errors import DataError
from modelyard.projects.vision.contract import DecisionRule, DecisionThreshold
from modelyard.projects.vision.metrics import PROBABILITY_DECIMALS, softmax


@dataclass(frozen=True)
class ThresholdCurve:
    """Precision, recall and F1 of deciding positive at each distinct score, highest first."""

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    false_positive_rate: np.ndarray


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(labels, dtype=np.int64).reshape(-1)
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if truth.shape != values.shape:
        raise ValueError(f"labels and scores differ in length: {truth.size} vs {values.size}")
    if not np.isin(truth, (0, 1)).all():
        raise ValueError("labels must be 0 (negative) or 1 (positive)")
    return truth, values


def threshold_curve(labels: np.ndarray, scores: np.ndarray) -> ThresholdCurve:
    """The operating points of ``score >= t`` for every distinct score ``t``, highest first.

    ``labels`` are 1 for the positive class, 0 otherwise. A 0/0 precision or recall is 0.
    """
    truth, values = _check(labels, scores)
    order = np.argsort(-values, kind="stable")
    sorted_scores, sorted_truth = values[order], truth[order]
    # the last index of each run of equal scores: everything up to it is decided positive
    last = np.r_[np.flatnonzero(np.diff(sorted_scores) != 0), sorted_scores.size - 1]
    true_positive = np.cumsum(sorted_truth)[last].astype(np.float64)
    decided = (last + 1).astype(np.float64)
    positives, negatives = float(truth.sum()), float(truth.size - truth.sum())
    precision = np.divide(true_positive, decided)
    recall = true_positive / positives if positives else np.zeros_like(true_positive)
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0
    )
    false_positive = decided - true_positive
    fpr = false_positive / negatives if negatives else np.zeros_like(false_positive)
    return ThresholdCurve(sorted_scores[last], precision, recall, f1, fpr)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """P(a random positive scores above a random negative), ties a half; needs both classes."""
    truth, values = _check(labels, scores)
    positives, negatives = int(truth.sum()), int(truth.size - truth.sum())
    if not positives or not negatives:
        raise ValueError("ROC-AUC needs images of both classes")
    ranks = _average_ranks(values)
    return float(
        (ranks[truth == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    )


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values) != 0) + 1]
    ends = np.r_[starts[1:], values.size]
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """PR-AUC as average precision: ``sum_n (R_n - R_{n-1}) P_n``; needs a positive image."""
    curve = threshold_curve(labels, scores)
    if not np.asarray(labels).sum():
        raise ValueError("PR-AUC needs at least one positive image")
    steps = np.diff(np.r_[0.0, curve.recall])
    return float((steps * curve.precision).sum())


def ranking_scores(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """ROC-AUC, PR-AUC and both curves (plain JSON lists) of positive probabilities."""
    curve = threshold_curve(labels, scores)
    return {
        "roc_auc": roc_auc(labels, scores),
        "pr_auc": average_precision(labels, scores),
        "roc_curve": {
            "false_positive_rate": [0.0, *curve.false_positive_rate.tolist()],
            "true_positive_rate": [0.0, *curve.recall.tolist()],
        },
        "pr_curve": {
            "recall": [0.0, *curve.recall.tolist()],
            "precision": [1.0, *curve.precision.tolist()],
        },
    }


def choose_threshold(
    labels: np.ndarray, scores: np.ndarray, rule: DecisionRule, positive_class: str, chosen_on: str
) -> DecisionThreshold:
    """The threshold ``rule`` picks on these (validation) labels and positive probabilities.

    * ``max_f1``: the threshold of the highest F1; among equal F1 the higher threshold.
    * ``precision``: the lowest threshold whose precision is ``>= target`` (the most recall that
      keeps the precision); if none reaches it, the one of highest precision, ``target_met``
      false.
    * ``recall``: the highest threshold whose recall is ``>= target`` (the most precision that
      keeps the recall); always reachable.

    A :class:`DataError` when the images are not of both classes: no rule can choose then.
    """
    truth, values = _check(labels, scores)
    if truth.size == 0 or truth.min() == truth.max():
        raise DataError(
            f"the {chosen_on} has images of one class only ({truth.size} images): a decision "
            f"threshold for {positive_class!r} cannot be chosen; give both classes more images"
        )
    curve = threshold_curve(truth, values)
    met = True
    if rule.rule == "max_f1":
        best = float(curve.f1.max())
        index = int(np.flatnonzero(curve.f1 == best)[0])  # highest first: the highest threshold
    elif rule.rule == "precision":
        target = float(rule.target or 0.0)
        reaching = np.flatnonzero(curve.precision >= target)
        met = reaching.size > 0
        if met:
            index = int(reaching[-1])
        else:
            index = int(np.flatnonzero(curve.precision == curve.precision.max())[-1])
    else:
        target = float(rule.target or 0.0)
        index = int(np.flatnonzero(curve.recall >= target)[0])
    return DecisionThreshold(
        positive_class=positive_class,
        threshold=float(curve.thresholds[index]),
        rule=rule.rule,
        target=rule.target,
        target_met=met,
        chosen_on=chosen_on,
        precision=float(curve.precision[index]),
        recall=float(curve.recall[index]),
        f1=float(curve.f1[index]),
    )


def positive_index(classes: Sequence[str], positive: str | None) -> int:
    """Where the positive class is in the model's classes (default: the second)."""
    if len(classes) != 2:
        raise ValueError(f"a decision threshold needs exactly 2 classes, got {len(classes)}")
    if positive is None:
        return 1
    if positive not in classes:
        raise ValueError(f"positive class {positive!r} is not one of the classes {list(classes)}")
    return list(classes).index(positive)


def binary_decisions(
    logits: np.ndarray, classes: Sequence[str], decision: DecisionThreshold
) -> list[dict[str, Any]]:
    """Logits ``(batch, 2)`` -> per image the positive class's probability, the threshold, and
    the decision (``is_positive`` and the decided ``label``): what the server answers and
    offline predict writes, from this one function."""
    index = positive_index(classes, decision.positive_class)
    negative = str(classes[1 - index])
    probabilities = softmax(logits)[:, index]
    answers = []
    for value in probabilities:
        positive = bool(value >= decision.threshold)
        answers.append(
            {
                "positive_class": decision.positive_class,
                "positive_probability": round(float(value), PROBABILITY_DECIMALS),
                "threshold": decision.threshold,
                "is_positive": positive,
                "label": decision.positive_class if positive else negative,
            }
        )
    return answers
