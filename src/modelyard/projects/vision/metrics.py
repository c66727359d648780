"""Classification scores and probability helpers, in numpy only (serving imports them too).

* Accuracy: the fraction of images whose predicted class is the true one.
* Per class: precision (of the images predicted as the class, how many are it), recall (of the
  images of the class, how many were found), F1 (their harmonic mean) and support (how many
  images of the class there are). Any 0/0 is 0.0, as in scikit-learn's ``zero_division=0``:
  a class that is never predicted gets precision 0, not an error.
* Macro-F1: the unweighted mean of the per-class F1 over *every* configured class. Unlike
  accuracy it weighs a rare class (a potato disease with few leaves) as much as a frequent one,
  which is why checkpoints are selected on it.
* Confusion matrix: ``matrix[i][j]`` counts images of true class ``i`` predicted as ``j``.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts; rows are true classes, columns predictions."""
    true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if true.shape != pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {true.size} vs {pred.size}")
    for name, labels in (("y_true", true), ("y_pred", pred)):
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(f"{name} has labels outside 0..{n_classes - 1}")
    flat = np.bincount(true * n_classes + pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ratio with 0.0 wherever the denominator is 0."""
    num = numerator.astype(np.float64)
    den = denominator.astype(np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den != 0)
    return out


def classification_scores(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class scores and the confusion matrix, as plain JSON values.

    Labels are integer class indices into ``class_names``.
    """
    n_classes = len(class_names)
    matrix = confusion_matrix(y_true, y_pred, n_classes)
    true_positive = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    precision = _safe_divide(true_positive, predicted)
    recall = _safe_divide(true_positive, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    total = int(matrix.sum())
    return {
        "accuracy": float(true_positive.sum() / total) if total else 0.0,
        "macro_f1": float(f1.mean()) if n_classes else 0.0,
        "n_samples": total,
        "per_class": {
            str(name): {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "class_names": [str(name) for name in class_names],
        "confusion_matrix": matrix.tolist(),
    }


#: The two-sided 95% normal quantile.
Z_95 = 1.959963984540054


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default): unlike the normal
    approximation it stays inside [0, 1] and is honest for few images or a proportion near 0 or
    1. ``(0.0, 1.0)`` for no images: nothing is known."""
    if total <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= total:
        raise ValueError(f"successes must be in 0..{total}, got {successes}")
    share = successes / total
    spread = z * z / total
    centre = (share + spread / 2) / (1 + spread)
    half = z * np.sqrt(share * (1 - share) / total + spread / (4 * total)) / (1 + spread)
    # exact at the ends, where rounding would leave 0.9999999999999999
    low = 0.0 if successes == 0 else max(0.0, float(centre - half))
    high = 1.0 if successes == total else min(1.0, float(centre + half))
    return low, high


def accuracy_interval(correct: int, total: int) -> dict[str, Any]:
    """Accuracy's 95% Wilson interval, as evaluation reports it."""
    low, high = wilson_interval(correct, total)
    return {"method": "wilson", "level": 0.95, "low": low, "high": high, "n": total}


def majority_baseline(y_true: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """The trivial baseline: always answer the most frequent class of these images (ties: the
    first in class order). Its accuracy is the share of that class (the no-information rate)."""
    labels = np.asarray(y_true, dtype=np.int64).reshape(-1)
    counts = np.bincount(labels, minlength=len(class_names))
    majority = int(counts.argmax())
    scores = classification_scores(labels, np.full_like(labels, majority), class_names)
    return {
        "rule": "always the most frequent class of the evaluated images",
        "class": str(class_names[majority]),
        "accuracy": scores["accuracy"],
        "macro_f1": scores["macro_f1"],
    }


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis, float64.

    The row maximum is subtracted first, so logits of 1000 do not overflow ``exp``.
    """
    values = np.asarray(logits, dtype=np.float64)
    shifted = values - values.max(axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    probabilities: np.ndarray = exponentials / exponentials.sum(axis=-1, keepdims=True)
    return probabilities


def top_k(probabilities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most probable classes over the last axis, most probable first.

    Ties go to the lower class index (a stable sort), so the same input always gives the same
    answer. ``k`` larger than the number of classes returns every class.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    values = np.asarray(probabilities)
    order = np.argsort(-values, axis=-1, kind="stable")[..., :k]
    return order, np.take_along_axis(values, order, axis=-1)


#: Decimal places of a probability in an answer (and in the prediction log).
PROBABILITY_DECIMALS = 6


def ranked_classes(
    scores: np.ndarray, classes: Sequence[str], k: int
) -> list[list[dict[str, Any]]]:
    """Logits ``(batch, n_classes)`` -> per image, the ``k`` most probable classes as
    ``{"label", "probability"}``, most probable first: what the server answers and logs, and
    what the reference profile's predictions are built from."""
    indices, values = top_k(softmax(scores), min(k, len(classes)))
    return [
        [
            {"label": classes[int(i)], "probability": round(float(p), PROBABILITY_DECIMALS)}
            for i, p in zip(row_indices, row_values, strict=True)
        ]
        for row_indices, row_values in zip(indices, values, strict=True)
    ]
