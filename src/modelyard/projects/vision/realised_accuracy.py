"""Realised accuracy of an image classifier: logged top classes scored against the true labels
sent later as feedback, with evaluation's own scores (:func:`.metrics.classification_scores`).

A logged prediction's answered class is read by :func:`.logged_outputs.answered_label`: the
decision's label for a two-class model with a threshold, else the most probable class; its truth
is ``{"label": "<class>"}``. A two-class bundle's expected scores are then the evaluation's at the
threshold (``binary.at_threshold``), the same decision scored on the test split. Macro-F1 is
taken over the bundle's classes (all of them, as in evaluation) when the manifest is given, else
over the labels seen. A pair whose label
is not one of the classes is left out. ``labelled`` and ``classes`` count the pairs scored and
the classes the macro-F1 averages over; they are reported, never judged, and say whether the
window holds enough images to judge the macro-F1 (:func:`judgeable`).

Torch-free: the monitor imports it.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelyard.core.bundle import Manifest
from modelyard.projects.vision.contract import VisionContract
from modelyard.projects.vision.logged_outputs import answered_label
from modelyard.projects.vision.metrics import classification_scores

METRICS = ("accuracy", "macro_f1")
#: Fewest labelled images per class (on average) for a window's macro-F1 to be judged. A macro-F1
#: over 50 images of 10 classes averages F1s of classes seen 2-8 times, each 0 after one miss:
#: biased low against the test split's, it alerted on 6 of 20 held-out EuroSAT windows of 50
#: images (benchmarks/drift.py). Accuracy has no such bias and is judged from --min-feedback on.
MIN_IMAGES_PER_CLASS = 20


def judgeable(metric: str, scores: Mapping[str, float]) -> bool:
    """Whether the window holds enough evidence to judge ``metric`` (see
    :data:`MIN_IMAGES_PER_CLASS`)."""
    if metric != "macro_f1":
        return True
    return scores.get("labelled", 0.0) >= MIN_IMAGES_PER_CLASS * scores.get("classes", 1.0)


def higher_is_better(metric: str) -> bool:
    del metric
    return True


def promoted(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Accuracy and macro-F1 from an evaluation metrics JSON: at the decision threshold for a
    two-class model that has one (what its server answers), else of the most probable class
    (flat at the top level)."""
    binary = metrics.get("binary")
    at_threshold = binary.get("at_threshold") if isinstance(binary, Mapping) else None
    scores = at_threshold if isinstance(at_threshold, Mapping) else metrics
    return {
        k: float(scores[k])
        for k in METRICS
        if isinstance(scores.get(k), int | float) and not isinstance(scores.get(k), bool)
    }


def _labels(outputs: Any, truth: Any) -> tuple[str, str] | None:
    """(true, answered) label of one prediction, or None when either is missing."""
    if not isinstance(truth, Mapping) or not isinstance(truth.get("label"), str):
        return None
    answered = answered_label(outputs)
    return None if answered is None else (str(truth["label"]), answered)


def realised(
    pairs: Sequence[tuple[Any, Any]], manifest: Manifest | None = None
) -> dict[str, float]:
    """Accuracy and macro-F1 of the pairs with a known label, with their counts; {} when there
    is none."""
    labelled = [found for outputs, truth in pairs if (found := _labels(outputs, truth))]
    if manifest is not None:
        classes = list(VisionContract.from_manifest(manifest).classes)
    else:
        classes = sorted({label for pair in labelled for label in pair})
    index = {name: i for i, name in enumerate(classes)}
    known = [(index[t], index[p]) for t, p in labelled if t in index and p in index]
    if not known:
        return {}
    codes = np.asarray(known, dtype=np.int64)
    scores = classification_scores(codes[:, 0], codes[:, 1], classes)
    counts = {"labelled": float(len(known)), "classes": float(len(classes))}
    return {**{k: float(scores[k]) for k in METRICS}, **counts}
