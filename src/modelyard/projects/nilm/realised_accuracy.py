"""Realised accuracy of a NILM model: logged appliance predictions scored against the measured
appliance power sent later as feedback, per appliance, with evaluation's metric code
(:mod:`.metrics`): MAE in watts and the on/off F1 at the bundle's on-threshold.

The truth is ``{"appliances": {NAME: [watts, ...]}}`` (a series as long as the prediction) or
``{"appliances": {NAME: mean_watts}}``. The prediction log keeps per-request summaries of the
prediction (``{NAME: {"mean_w": ...}}``), so a pair is scored on the request's mean power: one
sample per request and appliance. Where the log holds the predicted series itself (a list) and
the truth is a series of the same length, every reading is a sample, as in evaluation. A mean's
error is at most the per-reading MAE, so request-mean MAE reads lower than evaluation's; the
on/off decision on a mean is "was the appliance used in this request on average". Both are said
in docs/monitoring.md.

Torch-free: the monitor imports it.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelyard.core.bundle import Manifest
from modelyard.projects.nilm.contract import NilmContract
from modelyard.projects.nilm.metrics import mean_absolute_error, on_off_scores

#: Metric suffixes after ``<appliance>.``, as in evaluation's gate metrics.
METRICS = ("mae_w", "f1")


def higher_is_better(metric: str) -> bool:
    return metric.endswith(".f1")


def promoted(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``<appliance>.mae_w`` and ``<appliance>.f1`` of the model from an evaluation metrics JSON
    (``{"overall": {NAME: {"model": {...}}}}``) or a flat ``{"NAME.mae_w": value}`` mapping."""
    found: dict[str, float] = {}
    overall = metrics.get("overall")
    if isinstance(overall, Mapping):
        for name, scores in overall.items():
            model = scores.get("model") if isinstance(scores, Mapping) else None
            if isinstance(model, Mapping):
                found |= {f"{name}.{k}": float(model[k]) for k in METRICS if _number(model.get(k))}
    found |= {str(k): float(v) for k, v in metrics.items() if _number(v) and k.endswith(METRICS)}
    return found


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _predicted(output: Any) -> list[float] | float | None:
    if isinstance(output, list) and all(_number(v) for v in output):
        return [float(v) for v in output]
    if isinstance(output, Mapping) and _number(output.get("mean_w")):
        return float(output["mean_w"])
    return None


def _samples(predicted: list[float] | float, true: Any) -> list[tuple[float, float]]:
    """(true, predicted) samples of one appliance in one request."""
    if isinstance(true, list) and true and all(_number(v) for v in true):
        if isinstance(predicted, list) and len(predicted) == len(true):
            return list(zip(map(float, true), predicted, strict=True))
        true = float(np.mean(np.asarray(true, dtype=np.float64)))
    if not _number(true):
        return []
    mean = float(np.mean(predicted)) if isinstance(predicted, list) else predicted
    return [(float(true), mean)]


def realised(
    pairs: Sequence[tuple[Any, Any]], manifest: Manifest | None = None
) -> dict[str, float]:
    """Per appliance with truth: MAE (W) and, given the manifest's on-thresholds, the F1."""
    by_appliance: dict[str, list[tuple[float, float]]] = {}
    for outputs, truth in pairs:
        appliances = truth.get("appliances") if isinstance(truth, Mapping) else None
        if not isinstance(outputs, Mapping) or not isinstance(appliances, Mapping):
            continue
        for name, true in appliances.items():
            predicted = _predicted(outputs.get(name))
            if predicted is not None:
                by_appliance.setdefault(str(name), []).extend(_samples(predicted, true))
    thresholds: dict[str, float] = {}
    if manifest is not None:
        contract = NilmContract.from_manifest(manifest)
        thresholds = dict(zip(contract.names, contract.on_thresholds, strict=True))
    scores: dict[str, float] = {}
    for name, samples in sorted(by_appliance.items()):
        if not samples:
            continue
        values = np.asarray(samples, dtype=np.float64)
        scores[f"{name}.mae_w"] = mean_absolute_error(values[:, 0], values[:, 1])
        if name in thresholds:
            scores[f"{name}.f1"] = on_off_scores(values[:, 0], values[:, 1], thresholds[name])[2]
    return scores
