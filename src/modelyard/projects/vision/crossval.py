"""K-fold cross-validation of an image project: the folds' prepared data and the pooled scores.

The pool is the prepared training and validation images (``train.npz`` + ``val.npz``); the test
split (``test.npz``) is never read, so it stays an untouched final check. Each fold becomes a
prepared directory of its own, which the ordinary training and evaluation read unchanged:

* ``test.npz``: the held-out fold, scored by evaluation as a test split;
* ``val.npz``: a stratified inner split of the other folds (``project.data.split.val_fraction``
  of them), on which training selects its best checkpoint and a two-class model its decision
  threshold; the held-out fold takes no part in either;
* ``train.npz``: the rest of the other folds.

Every held-out image is scored once, by the model that never saw it: pooled over the folds,
these out-of-fold predictions give one accuracy over the whole pool (with its Wilson interval)
and, for two classes, one ROC-AUC over the pool.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.projects.vision.binary import positive_index, ranking_scores
from modelyard.projects.vision.image_cache import load_classes, load_part, save_classes, save_part
from modelyard.projects.vision.image_folders import class_weights, stratified_split
from modelyard.projects.vision.metrics import (
    accuracy_interval,
    classification_scores,
    majority_baseline,
    softmax,
)

#: The prepared parts pooled into the folds: never ``test``.
POOLED_PARTS = ("train", "val")
#: Per-fold scores that are averaged over the folds (when every fold has them).
FOLD_SCORES = ("accuracy", "macro_f1", "roc_auc")


@dataclass(frozen=True)
class Pool:
    """The images cross-validation draws its folds from, labels indexing ``classes``."""

    pixels: np.ndarray
    labels: np.ndarray
    classes: list[str]


def load_pool(prepared: Path) -> Pool:
    """The prepared training and validation images together (in that order)."""
    parts = [load_part(prepared, part) for part in POOLED_PARTS]
    return Pool(
        pixels=np.concatenate([pixels for pixels, _ in parts]),
        labels=np.concatenate([labels for _, labels in parts]).astype(np.int64),
        classes=load_classes(prepared),
    )


def per_class(labels: np.ndarray, classes: list[str]) -> dict[str, int]:
    return {name: int(np.sum(labels == k)) for k, name in enumerate(classes)}


def write_fold(
    pool: Pool, held_out: np.ndarray, directory: Path, val_fraction: float, seed: int
) -> dict[str, dict[str, int]]:
    """Write one fold's prepared directory (see the module docstring); return its images per
    part and class."""
    training = np.setdiff1d(np.arange(pool.labels.size), held_out)
    inner = stratified_split(pool.labels[training], 0.0, val_fraction, seed)
    rows = {"train": training[inner["train"]], "val": training[inner["val"]], "test": held_out}
    counts = {}
    for part, chosen in rows.items():
        save_part(directory, part, pool.pixels[chosen], pool.labels[chosen])
        counts[part] = per_class(pool.labels[chosen], pool.classes)
    weights = class_weights(pool.labels[rows["train"]], len(pool.classes)).tolist()
    save_classes(directory, pool.classes, {"class_weights": weights})
    return counts


@dataclass(frozen=True)
class FoldOutcome:
    """One fold: its evaluation's metrics and its model's logits on the held-out images."""

    metrics: dict[str, Any]
    labels: np.ndarray
    logits: np.ndarray
    run_dir: Path


def fold_row(number: int, outcome: FoldOutcome) -> dict[str, Any]:
    """The numbers of one fold that the report lists (from its evaluation)."""
    metrics = outcome.metrics
    row: dict[str, Any] = {
        "fold": number,
        "images": int(metrics["n_samples"]),
        "accuracy": float(metrics["accuracy"]),
        "accuracy_interval": metrics["accuracy_interval"],
        "macro_f1": float(metrics["macro_f1"]),
        "baseline_accuracy": float(metrics["baseline"]["accuracy"]),
        "run_dir": str(outcome.run_dir),
    }
    binary = metrics.get("binary")
    if isinstance(binary, dict) and isinstance(binary.get("roc_auc"), int | float):
        row["roc_auc"] = float(binary["roc_auc"])
    return row


def spread(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value) of per-fold scores."""
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return {"mean": float(array.mean()), "std": std}


def pooled_scores(
    outcomes: list[FoldOutcome], classes: list[str], positive: str | None
) -> dict[str, Any]:
    """Scores of the out-of-fold predictions of every fold together: accuracy and its Wilson
    interval, macro-F1, the confusion matrix, the majority baseline and, for two classes, the
    ROC-AUC and PR-AUC of the positive class's probability (each fold's model scoring its own
    held-out images)."""
    labels = np.concatenate([o.labels for o in outcomes])
    logits = np.concatenate([o.logits for o in outcomes])
    predicted = logits.argmax(axis=1)
    scores = classification_scores(labels, predicted, classes)
    pooled: dict[str, Any] = {
        "images": int(labels.size),
        "correct": int((predicted == labels).sum()),
        "accuracy": scores["accuracy"],
        "accuracy_interval": accuracy_interval(int((predicted == labels).sum()), labels.size),
        "macro_f1": scores["macro_f1"],
        "per_class": scores["per_class"],
        "confusion_matrix": scores["confusion_matrix"],
        "baseline": majority_baseline(labels, classes),
    }
    if len(classes) == 2:
        index = positive_index(classes, positive)
        truth = (labels == index).astype(np.int64)
        ranking = ranking_scores(truth, softmax(logits)[:, index])
        pooled["binary"] = {
            "positive_class": classes[index],
            "roc_auc": ranking["roc_auc"],
            "pr_auc": ranking["pr_auc"],
            "baseline": {"roc_auc": 0.5, "pr_auc": float(truth.mean())},
        }
        at_threshold = _pooled_at_threshold(outcomes)
        if at_threshold is not None:
            pooled["binary"]["at_threshold"] = at_threshold
    return pooled


def _pooled_at_threshold(outcomes: list[FoldOutcome]) -> dict[str, Any] | None:
    """Accuracy of the served two-class decision (each fold's model at its own threshold, chosen
    on its inner validation split), from the folds' evaluations' confusion matrices added up;
    None when a fold has no threshold."""
    matrices = []
    for outcome in outcomes:
        binary = outcome.metrics.get("binary")
        at = binary.get("at_threshold") if isinstance(binary, dict) else None
        if not isinstance(at, dict):
            return None
        matrices.append(np.asarray(at["confusion_matrix"], dtype=np.int64))
    matrix = np.sum(matrices, axis=0)
    correct, total = int(np.trace(matrix)), int(matrix.sum())
    return {
        "rule": "each fold's model at its own decision threshold (chosen on its inner validation)",
        "images": total,
        "correct": correct,
        "accuracy": correct / total if total else 0.0,
        "accuracy_interval": accuracy_interval(correct, total),
        "confusion_matrix": matrix.tolist(),
    }


def summarise(
    outcomes: list[FoldOutcome], classes: list[str], positive: str | None
) -> dict[str, Any]:
    """Per-fold rows, the mean and standard deviation of their scores, and the pooled scores."""
    rows = [fold_row(k, outcome) for k, outcome in enumerate(outcomes, start=1)]
    across = {
        key: spread([row[key] for row in rows])
        for key in FOLD_SCORES
        if all(key in row for row in rows)
    }
    return {
        "folds": rows,
        "across_folds": across,
        "pooled": pooled_scores(outcomes, classes, positive),
    }
