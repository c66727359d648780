"""Realised accuracy of a NILM model: logged appliance predictions scored against the measured
appliance power sent later as feedback, per appliance, with evaluation's metric code
(:mod:`.metrics`): MAE in watts and the on/off F1 at the bundle's on-threshold.

The truth is ``{"appliances": {NAME: [watts, ...]}}`` (a series as long as the prediction) or
``{"appliances": {NAME: mean_watts}}``. Evaluation scores readings: the prediction at a reading
(from the window centred on it) against the reading's metered power. The log keeps such a
prediction for a one-window request, the most common (its midpoint prediction ``midpoint_w``,
or with ``edges=valid`` its one prediction ``mean_w``), and so, with a truth series, a one-window
request gives one reading sample: ``NAME.mae_w`` and ``NAME.f1`` are computed on those and
compare with the values the bundle is expected to reach (``NAME.f1`` only when a reading of
the window is "on", metered or predicted: undefined otherwise; judged only from
:data:`MIN_ON_READINGS` such readings, counted in ``NAME.on_readings``). Any other pair (a
longer request, whose log keeps only the mean of its predictions, or a truth given as a mean)
is scored on the request's mean power, one sample per request: ``NAME.request_mean_mae_w``,
reported but never judged against evaluation (a mean's error is smaller than a reading's, and
an appliance that ran for 3 minutes is "off" on average over 99). Where the log holds a
predicted series itself (a list) and the truth is a series of the same length, every reading
is a sample, as in evaluation.

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


#: The count, after ``<appliance>.``, of reading samples that are "on" (metered or predicted):
#: the events an F1 is made of. Reported with the F1, never judged itself.
ON_READINGS = "on_readings"
#: Fewest "on" readings for an F1 to be judged against the expected one. An F1 over a few
#: events is a ratio of small counts, low on average and 0 whenever the model missed the one
#: kettle use of a window: held-out windows of the training house scored a mean kettle F1 of
#: 0.17-0.58 against 0.82 over the reference's 5,000 windows (benchmarks/drift.py).
MIN_ON_READINGS = 30


def judgeable(metric: str, scores: Mapping[str, float]) -> bool:
    """Whether the window holds enough evidence to judge ``metric``: an F1 needs
    :data:`MIN_ON_READINGS` "on" readings; an MAE is judged from the monitor's
    ``--min-feedback`` on."""
    if not metric.endswith(".f1"):
        return True
    appliance = metric.removesuffix(".f1")
    return scores.get(f"{appliance}.{ON_READINGS}", 0.0) >= MIN_ON_READINGS


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


#: The metric of request-mean samples (see the module text), after ``<appliance>.``.
REQUEST_MEAN_MAE = "request_mean_mae_w"
_MIDPOINT = "midpoint_w"


def _readings(output: Any, true: Any) -> list[tuple[float, float]] | None:
    """(true, predicted) reading samples of one appliance in one request; None when the log
    holds no prediction at a known reading (see the module text)."""
    series = isinstance(true, list) and bool(true) and all(_number(v) for v in true)
    if not series:
        return None
    if isinstance(output, list) and all(_number(v) for v in output) and len(output) == len(true):
        return [(float(t), float(p)) for t, p in zip(true, output, strict=True)]
    if not isinstance(output, Mapping):
        return None
    if _number(output.get(_MIDPOINT)):  # a one-window request: the truth's middle reading
        return [(float(true[len(true) // 2]), float(output[_MIDPOINT]))]
    if len(true) == 1 and _number(output.get("mean_w")):  # edges=valid, one prediction
        return [(float(true[0]), float(output["mean_w"]))]
    return None


def _request_mean(output: Any, true: Any) -> list[tuple[float, float]]:
    """(true, predicted) means of one appliance over one request."""
    if isinstance(output, list) and output and all(_number(v) for v in output):
        predicted = float(np.mean(np.asarray(output, dtype=np.float64)))
    elif isinstance(output, Mapping) and _number(output.get("mean_w")):
        predicted = float(output["mean_w"])
    else:
        return []
    if isinstance(true, list) and true and all(_number(v) for v in true):
        true = float(np.mean(np.asarray(true, dtype=np.float64)))
    return [(float(true), predicted)] if _number(true) else []


def realised(
    pairs: Sequence[tuple[Any, Any]], manifest: Manifest | None = None
) -> dict[str, float]:
    """Per appliance with truth: MAE (W) and, given the manifest's on-thresholds, the F1, on
    reading samples; the request-mean MAE on the others (see the module text)."""
    return scores(pairs, None if manifest is None else NilmContract.from_manifest(manifest))


def scores(pairs: Sequence[tuple[Any, Any]], contract: NilmContract | None) -> dict[str, float]:
    """:func:`realised` given the model's contract (its on-thresholds; no F1 without one):
    before a manifest exists, the reference profile's expected values are scored at export."""
    thresholds: dict[str, float] = {}
    if contract is not None:
        thresholds = dict(zip(contract.names, contract.on_thresholds, strict=True))
    readings: dict[str, list[tuple[float, float]]] = {}
    means: dict[str, list[tuple[float, float]]] = {}
    for outputs, truth in pairs:
        appliances = truth.get("appliances") if isinstance(truth, Mapping) else None
        if not isinstance(outputs, Mapping) or not isinstance(appliances, Mapping):
            continue
        for name, true in appliances.items():
            taken = _readings(outputs.get(name), true)
            if taken is not None:
                readings.setdefault(str(name), []).extend(taken)
            else:
                means.setdefault(str(name), []).extend(_request_mean(outputs.get(name), true))
    found: dict[str, float] = {}
    for name, samples in sorted(readings.items()):
        values = np.asarray(samples, dtype=np.float64)
        found[f"{name}.mae_w"] = mean_absolute_error(values[:, 0], values[:, 1])
        # F1 is undefined without an "on" reading, metered or predicted (evaluation's code says 0
        # then): a window in which the kettle was never used says nothing about detecting it
        on = int(np.count_nonzero(np.any(values > thresholds.get(name, np.inf), axis=1)))
        if on:
            found[f"{name}.f1"] = on_off_scores(values[:, 0], values[:, 1], thresholds[name])[2]
            found[f"{name}.{ON_READINGS}"] = float(on)
    for name, samples in sorted(means.items()):
        if samples:
            values = np.asarray(samples, dtype=np.float64)
            found[f"{name}.{REQUEST_MEAN_MAE}"] = mean_absolute_error(values[:, 0], values[:, 1])
    return found
