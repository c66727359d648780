"""Normalisation statistics: fitted on valid training samples only, and portable as JSON."""

import json
import math
from typing import Any

import numpy as np
import pytest

from modelyard.core.errors import BundleError
from modelyard.projects.nilm.normalisation import Normalisation, fit_normalisation


def test_fit_uses_only_valid_samples() -> None:
    # House 1 valid aggregate: 1, 3; house 2 valid aggregate: 5, 7  -> mean 4
    # population std: sqrt(((-3)^2 + (-1)^2 + 1^2 + 3^2) / 4) = sqrt(5)
    agg1 = np.array([1.0, 1e9, 3.0], dtype=np.float32)
    agg2 = np.array([-1e9, 5.0, 7.0], dtype=np.float32)
    # targets (two appliances): valid rows (0, 10), (2, 10), (4, 30), (6, 30)
    # column 0: mean 3, std sqrt((9 + 1 + 1 + 9) / 4) = sqrt(5); column 1: mean 20, std 10
    tgt1 = np.array([[0.0, 10.0], [1e9, -1e9], [2.0, 10.0]], dtype=np.float32)
    tgt2 = np.array([[1e9, 1e9], [4.0, 30.0], [6.0, 30.0]], dtype=np.float32)
    valid1 = np.array([True, False, True])
    valid2 = np.array([False, True, True])

    stats = fit_normalisation([agg1, agg2], [tgt1, tgt2], [valid1, valid2])

    assert stats.aggregate_mean == pytest.approx(4.0)
    assert stats.aggregate_std == pytest.approx(math.sqrt(5.0))
    assert stats.target_mean == pytest.approx((3.0, 20.0))
    assert stats.target_std == pytest.approx((math.sqrt(5.0), 10.0))
    assert isinstance(stats.target_mean, tuple)


def test_fit_without_valid_samples_fails() -> None:
    with pytest.raises(ValueError, match="no valid training samples"):
        fit_normalisation([np.ones(3)], [np.ones((3, 1))], [np.zeros(3, dtype=bool)])


def test_fit_floors_the_std_of_constant_signals() -> None:
    n = 50
    stats = fit_normalisation(
        [np.full(n, 230.0, dtype=np.float32)],
        [np.column_stack([np.zeros(n), np.linspace(0, 98, n)]).astype(np.float32)],
        [np.ones(n, dtype=bool)],
    )
    assert stats.aggregate_mean == pytest.approx(230.0)
    assert stats.aggregate_std > 0.0
    assert stats.aggregate_std <= 1e-2  # a floor, not a made-up scale
    assert stats.target_std[0] > 0.0
    assert stats.target_std[0] <= 1e-2
    assert stats.target_std[1] == pytest.approx(float(np.linspace(0, 98, n).std()), rel=1e-5)
    # a constant appliance that is always off normalises to finite zeros, not NaN
    scores = stats.normalise_targets(np.zeros((4, 2), dtype=np.float32))
    assert np.isfinite(scores).all()
    np.testing.assert_array_equal(scores[:, 0], 0.0)
    assert np.isfinite(stats.normalise_aggregate(np.full(3, 230.0, dtype=np.float32))).all()


def test_normalise_by_hand_and_denormalise_round_trip() -> None:
    stats = Normalisation(
        aggregate_mean=500.0, aggregate_std=250.0, target_mean=(10.0, 0.0), target_std=(20.0, 4.0)
    )
    np.testing.assert_allclose(
        stats.normalise_aggregate(np.array([0.0, 500.0, 1000.0])), [-2.0, 0.0, 2.0]
    )
    watts = np.array([[10.0, 0.0], [50.0, 2.0], [0.0, -4.0]], dtype=np.float32)
    scores = stats.normalise_targets(watts)
    # (w - mean) / std per column
    np.testing.assert_allclose(scores, [[0.0, 0.0], [2.0, 0.5], [-0.5, -1.0]])
    assert scores.dtype == np.float32

    rng = np.random.default_rng(3)
    random_watts = rng.uniform(0, 3000, size=(100, 2)).astype(np.float32)
    back = stats.denormalise_targets(stats.normalise_targets(random_watts))
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, random_watts, rtol=1e-5, atol=1e-3)


def test_json_round_trip() -> None:
    stats = Normalisation(
        aggregate_mean=412.25, aggregate_std=301.5, target_mean=(1.5, 2.5), target_std=(3.0, 4.0)
    )
    data = stats.to_json()
    assert data["target_mean"] == [1.5, 2.5]  # plain JSON types
    text = json.dumps(data)
    assert Normalisation.from_json(json.loads(text)) == stats


GOOD: dict[str, Any] = {
    "aggregate_mean": 1.0,
    "aggregate_std": 2.0,
    "target_mean": [0.0],
    "target_std": [1.0],
}


@pytest.mark.parametrize(
    "data",
    [
        {k: v for k, v in GOOD.items() if k != "aggregate_std"},
        {**GOOD, "aggregate_mean": "lots"},
        {**GOOD, "aggregate_mean": None},
        {**GOOD, "target_mean": 3.0},
        {**GOOD, "target_std": ["x"]},
        {**GOOD, "target_std": None},
        [],
        None,
        {**GOOD, "target_mean": [0.0, 1.0]},
        {**GOOD, "aggregate_std": 0.0},
        {**GOOD, "target_std": [-1.0]},
        {**GOOD, "aggregate_mean": "nan"},
        {**GOOD, "target_std": ["inf"]},
    ],
    ids=[
        "missing-key",
        "non-numeric",
        "null-number",
        "number-not-list",
        "non-numeric-list",
        "null-list",
        "list",
        "null",
        "length-mismatch",
        "zero-std",
        "negative-std",
        "nan-mean",
        "infinite-std",
    ],
)
def test_from_json_rejects_malformed_statistics(data: Any) -> None:
    with pytest.raises(BundleError, match="malformed normalisation statistics"):
        Normalisation.from_json(data)
