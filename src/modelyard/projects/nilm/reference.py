"""The NILM reference profile: window-long chunks of the training split, described like requests.

The sample is what the model trained on: gap-free windows of the training part of the training
houses (before each house's validation cut, :func:`..splits.split_by_time`), at most
:data:`~modelyard.core.reference_profile.MAX_ROWS`, drawn uniformly without replacement with the
run's seed. Each window is predicted by the exported ONNX model through the serving functions
(normalise, run, :func:`.inference.scores_to_watts`), recorded as the server records a
one-window request (:func:`.drift_features.request_record`, its start from the house's clock:
local time, as prepared) and read back with :func:`.drift_features.log_rows`, exactly as the
monitor reads logged requests.

The profile also records the accuracy to expect on that distribution (``expected_metrics``): the
evaluation's figures come from another house (the test split), and a house's use of its
appliances sets its MAE and F1, so they are not what a model serving its training house should
be held to. The windows' predictions are scored against the metered power at their midpoints by
:func:`.realised_accuracy.scores`, the monitor's own code for a one-window request with truth.
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.core.errors import DataError
from modelyard.core.reference_profile import MAX_ROWS, ReferenceProfile, column_data
from modelyard.projects.nilm.contract import NilmContract
from modelyard.projects.nilm.drift_features import columns, log_rows, request_record
from modelyard.projects.nilm.inference import scores_to_watts
from modelyard.projects.nilm.preparation import PreparedHouse
from modelyard.projects.nilm.realised_accuracy import scores
from modelyard.projects.nilm.windows import gather_windows, valid_window_starts
from modelyard.serving.runtime import OnnxModel

_NS_PER_S = 1_000_000_000
_BATCH = 1024


def reference_profile(
    houses: Sequence[PreparedHouse],
    contract: NilmContract,
    onnx_model: Path,
    seed: int,
    rows: int = MAX_ROWS,
) -> ReferenceProfile:
    """The profile of ``rows`` windows drawn from ``houses`` (the training part of each)."""
    window = contract.window
    starts = [valid_window_starts(house.valid, window) for house in houses]
    total = sum(s.shape[0] for s in starts)
    if total == 0:
        raise DataError(f"no gap-free window of {window} readings in the training houses")
    chosen = np.sort(
        np.random.default_rng(seed).choice(total, size=min(rows, total), replace=False)
    )
    offsets = np.cumsum([0, *(s.shape[0] for s in starts)])
    half = window // 2
    chunks, times, metered = [], [], []
    for i, house in enumerate(houses):
        picked = starts[i][chosen[(chosen >= offsets[i]) & (chosen < offsets[i + 1])] - offsets[i]]
        chunks.append(gather_windows(house.aggregate, picked, window))
        times.append(house.times[picked])
        metered.extend(_midpoint_truths(house, picked + half, contract.names))
    mains = np.concatenate(chunks).astype(np.float64)
    watts = _predict(mains, contract, onnx_model)
    drift_rows, pairs = [], []
    for readings, time, predicted, truth in zip(
        mains, np.concatenate(times), watts, metered, strict=True
    ):
        # logged as the server logs a one-window request (edges=valid) at the window's time
        start = datetime.fromtimestamp(int(time) // _NS_PER_S, UTC).replace(tzinfo=None)
        inputs, drift = request_record(
            readings, predicted[None, :], window, contract.interval_s, half, start
        )
        # the response's mean_w of a one-window request is its one (midpoint) prediction
        outputs = {
            name: {"mean_w": round(float(value), 2), **logged}
            for name, value, logged in zip(contract.names, predicted, drift, strict=True)
        }
        drift_rows.extend(log_rows(inputs, outputs))
        pairs.append((outputs, truth))
    specs = columns(contract.names)
    minutes = window * contract.interval_s / 60
    names = ", ".join(house.name for house in houses)
    return ReferenceProfile(
        family="nilm",
        drawn=(
            f"{mains.shape[0]} windows of {window} readings ({minutes:g} min) drawn uniformly "
            f"without replacement (seed {seed}) from the {total} gap-free windows of the "
            f"training part of {names} (before the validation cut); predictions by the "
            "exported ONNX model at each window's midpoint"
        ),
        seed=seed,
        columns=specs,
        data=column_data(drift_rows, specs),
        expected_metrics=scores(pairs, contract),
        expected_drawn=(
            f"these {len(pairs)} windows, scored as the monitor scores a one-window request "
            "with truth (projects/nilm/realised_accuracy.py): each window's prediction against "
            "the metered power at its midpoint reading; training data, so an optimistic "
            "expectation by the model's generalisation gap within the training houses"
        ),
    )


def _midpoint_truths(
    house: PreparedHouse, at: np.ndarray, names: Sequence[str]
) -> list[dict[str, Any]]:
    """The truth ``POST /feedback`` would carry for one-window requests centred on ``at``:
    each model appliance's metered power at that reading (a one-reading series)."""
    column = {name: house.appliances.index(name) for name in names if name in house.appliances}
    return [
        {"appliances": {name: [float(house.targets[i, j])] for name, j in column.items()}}
        for i in at
    ]


def _predict(mains: np.ndarray, contract: NilmContract, onnx_model: Path) -> np.ndarray:
    """Watts (windows x appliances) at each window's midpoint, as the server computes them."""
    runtime = OnnxModel(onnx_model)
    normalised = contract.normalisation.normalise_aggregate(mains.astype(np.float32))
    scores = np.concatenate(
        [
            runtime.run(np.ascontiguousarray(normalised[i : i + _BATCH]))
            for i in range(0, normalised.shape[0], _BATCH)
        ]
    )
    return scores_to_watts(scores, mains[:, contract.window // 2], contract.normalisation)
