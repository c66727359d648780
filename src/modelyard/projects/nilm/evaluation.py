"""Scoring a NILM model on whole houses, next to two baselines, with plots of the busiest days."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.core.errors import DataError
from modelyard.projects.nilm.contract import NilmContract
from modelyard.projects.nilm.inference import predict_series
from modelyard.projects.nilm.metrics import (
    error_breakdown,
    false_on_while_others_on,
    score_appliance,
)
from modelyard.projects.nilm.normalisation import Normalisation
from modelyard.projects.nilm.plots import busiest_days, plot_day
from modelyard.projects.nilm.preparation import PreparedHouse
from modelyard.projects.nilm.windows import valid_window_starts
from modelyard.projects.trained_model import Predictor


def evaluate_houses(
    houses: Sequence[PreparedHouse],
    predictor: Predictor,
    contract: NilmContract,
    output_dir: Path,
    plot_days: int = 1,
) -> dict[str, Any]:
    """Predict every house with the same code path as serving and score it.

    Scores are computed at the midpoints of gap-free windows only (padding is for serving
    edges, not for inflating or deflating scores). ``overall`` pools all houses.
    """
    if not houses:
        raise DataError("no houses to evaluate on")
    window, appliances, norm = contract.window, contract.names, contract.normalisation
    thresholds = {name: a.on_threshold_w for name, a in contract.appliances.items()}
    per_house: dict[str, Any] = {}
    pooled_true, pooled_pred = [], []
    for house in houses:
        missing = [a for a in appliances if a not in house.appliances]
        if missing:
            raise DataError(f"house {house.name!r} has no ground truth for {missing}")
        truth = house.targets[:, [house.appliances.index(a) for a in appliances]]
        predicted = predict_series(house.aggregate, predictor, norm, window)
        centres = valid_window_starts(house.valid, window) + window // 2
        if centres.size == 0:
            raise DataError(f"house {house.name!r} has no gap-free window of {window} readings")
        pooled_true.append(truth[centres])
        pooled_pred.append(predicted[centres])
        per_house[house.name] = {
            "windows": int(centres.size),
            "start": str(np.datetime64(int(house.times[0]), "ns")),
            "end": str(np.datetime64(int(house.times[-1]), "ns")),
            "appliances": score_against_baselines(
                truth[centres], predicted[centres], appliances, norm, thresholds
            ),
            "plots": plot_busiest_days(house, truth, predicted, appliances, output_dir, plot_days),
        }
    overall = score_against_baselines(
        np.concatenate(pooled_true), np.concatenate(pooled_pred), appliances, norm, thresholds
    )
    return {
        "window": window,
        "interval_s": contract.interval_s,
        "overall": overall,
        "houses": per_house,
    }


def plot_busiest_days(
    house: PreparedHouse,
    truth: np.ndarray,
    predicted: np.ndarray,
    appliances: list[str],
    output_dir: Path,
    count: int,
) -> list[str]:
    """PNG plots of predicted vs true power for the ``count`` most active days of a house."""
    days = busiest_days(house.times, np.where(house.valid[:, None], truth, 0.0), count)
    return [
        str(
            plot_day(
                output_dir / "plots" / f"{house.name}_{day}.png",
                day,
                house.times,
                house.aggregate,
                truth,
                predicted,
                appliances,
                f"{house.name} {day}: predicted vs true power",
            )
        )
        for day in days
    ]


def score_against_baselines(
    truth: np.ndarray,
    predicted: np.ndarray,
    appliances: list[str],
    norm: Normalisation,
    thresholds: dict[str, float],
) -> dict[str, Any]:
    """Model, mean-predictor and always-off scores side by side for every appliance.

    The mean predictor (the training mean) is the baseline the targets refer to; "always off"
    is reported too because for a rarely used appliance it is a much stronger baseline.
    """
    scores: dict[str, Any] = {}
    limits = [thresholds[name] for name in appliances]
    confusion = false_on_while_others_on(truth, predicted, appliances, limits)
    for j, name in enumerate(appliances):
        model = score_appliance(truth[:, j], predicted[:, j], thresholds[name])
        mean = np.full(truth.shape[0], norm.target_mean[j], dtype=np.float32)
        baseline = score_appliance(truth[:, j], mean, thresholds[name])
        always_off = score_appliance(truth[:, j], np.zeros_like(mean), thresholds[name])
        scores[name] = {
            "model": model.to_json(),
            "baseline_mean": baseline.to_json(),
            "baseline_off": always_off.to_json(),
            "mae_ratio_to_baseline": model.mae_w / baseline.mae_w if baseline.mae_w else None,
            "model_errors": error_breakdown(truth[:, j], predicted[:, j], thresholds[name])
            | {"false_on_while_on": confusion[name]},
        }
    return scores
