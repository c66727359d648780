"""NILM metrics on tiny arrays whose scores are worked out by hand in the comments."""

import json

import numpy as np
import pytest

from modelyard.projects.nilm.metrics import (
    error_breakdown,
    false_on_while_others_on,
    mean_absolute_error,
    on_off_scores,
    score_appliance,
    signal_aggregate_error,
)

# Shared example, on-threshold 10 W:
#   true  [0, 20, 30,  0, 50,  5]  -> on: F T T F T F   (3 on)
#   pred  [15, 25, 0,  0, 60,  5]  -> on: T T F F T F   (3 on)
#   true positives: positions 1 and 4 -> 2
#   precision 2/3, recall 2/3, F1 2/3
#   |errors| 15, 5, 30, 0, 10, 0 -> sum 60 -> MAE 10
#   energy: true 105, pred 105 -> SAE 0
TRUE = np.array([0.0, 20.0, 30.0, 0.0, 50.0, 5.0], dtype=np.float32)
PRED = np.array([15.0, 25.0, 0.0, 0.0, 60.0, 5.0], dtype=np.float32)


def test_mean_absolute_error() -> None:
    assert mean_absolute_error(TRUE, PRED) == pytest.approx(10.0)
    # [1, 2] vs [4, 0]: |3| + |2| = 5 -> 2.5
    assert mean_absolute_error(np.array([1.0, 2.0]), np.array([4.0, 0.0])) == pytest.approx(2.5)
    assert mean_absolute_error(TRUE, TRUE) == 0.0


def test_signal_aggregate_error() -> None:
    assert signal_aggregate_error(TRUE, PRED) == pytest.approx(0.0)
    # true energy 100, predicted 130 -> |130 - 100| / 100 = 0.3
    assert signal_aggregate_error(np.array([40.0, 60.0]), np.array([100.0, 30.0])) == pytest.approx(
        0.3
    )
    # under-prediction counts the same: 70 vs 100 -> 0.3
    assert signal_aggregate_error(np.array([40.0, 60.0]), np.array([35.0, 35.0])) == pytest.approx(
        0.3
    )


def test_signal_aggregate_error_is_none_without_energy() -> None:
    assert signal_aggregate_error(np.zeros(5), np.ones(5)) is None
    assert signal_aggregate_error(np.array([], dtype=np.float32), np.array([])) is None


def test_on_off_scores_by_hand() -> None:
    precision, recall, f1 = on_off_scores(TRUE, PRED, 10.0)
    assert precision == pytest.approx(2 / 3)
    assert recall == pytest.approx(2 / 3)
    assert f1 == pytest.approx(2 / 3)

    # true on: T T F F ; pred on: T F T T -> TP 1, predicted 3, actual 2
    # precision 1/3, recall 1/2, F1 = 2 * (1/3)(1/2) / (1/3 + 1/2) = (1/3) / (5/6) = 0.4
    precision, recall, f1 = on_off_scores(
        np.array([100.0, 100.0, 0.0, 0.0]), np.array([100.0, 0.0, 100.0, 100.0]), 50.0
    )
    assert (precision, recall) == pytest.approx((1 / 3, 1 / 2))
    assert f1 == pytest.approx(0.4)


def test_on_off_threshold_is_strict() -> None:
    # exactly at the threshold is "off" for both: nothing on anywhere
    assert on_off_scores(np.array([10.0]), np.array([10.0]), 10.0) == (0.0, 0.0, 0.0)


def test_on_off_scores_zero_divisions_give_zero() -> None:
    on = np.array([100.0, 100.0])
    off = np.array([0.0, 0.0])
    # nothing predicted on: precision 0 (not NaN); recall 0/2 = 0; F1 0
    assert on_off_scores(on, off, 10.0) == (0.0, 0.0, 0.0)
    # nothing truly on: recall 0; precision 0/2 = 0; F1 0
    assert on_off_scores(off, on, 10.0) == (0.0, 0.0, 0.0)
    # nothing on at all
    assert on_off_scores(off, off, 10.0) == (0.0, 0.0, 0.0)


def test_score_appliance_fields() -> None:
    scores = score_appliance(TRUE, PRED, 10.0)
    assert scores.mae_w == pytest.approx(10.0)
    assert scores.sae == pytest.approx(0.0)
    assert scores.precision == pytest.approx(2 / 3)
    assert scores.recall == pytest.approx(2 / 3)
    assert scores.f1 == pytest.approx(2 / 3)
    assert scores.on_threshold_w == 10.0
    assert scores.true_on_fraction == pytest.approx(3 / 6)

    data = scores.to_json()
    assert set(data) == {
        "mae_w",
        "sae",
        "precision",
        "recall",
        "f1",
        "on_threshold_w",
        "true_on_fraction",
    }
    assert json.loads(json.dumps(data)) == data  # plain JSON values


def test_score_appliance_never_on() -> None:
    # true all off, pred [0, 20]: MAE (0 + 20) / 2 = 10, no true energy -> SAE None
    scores = score_appliance(np.zeros(2), np.array([0.0, 20.0]), 10.0)
    assert scores.mae_w == pytest.approx(10.0)
    assert scores.sae is None
    assert (scores.precision, scores.recall, scores.f1) == (0.0, 0.0, 0.0)
    assert scores.true_on_fraction == 0.0
    assert json.loads(json.dumps(scores.to_json()))["sae"] is None


def test_error_breakdown_adds_up_to_the_mae() -> None:
    # shared example: false on at 0 (|15|); missed at 2 (|30|); state right at 1, 3, 4, 5
    # (|5| + 0 + |10| + 0 = 15); over 6 readings -> 2.5, 5.0, 2.5; sum 10 = the MAE
    parts = error_breakdown(TRUE, PRED, 10.0)
    assert parts == pytest.approx({"false_on_w": 2.5, "missed_w": 5.0, "right_state_w": 2.5})
    assert sum(parts.values()) == pytest.approx(mean_absolute_error(TRUE, PRED))
    assert error_breakdown(TRUE, TRUE, 10.0) == {
        "false_on_w": 0.0,
        "missed_w": 0.0,
        "right_state_w": 0.0,
    }
    empty = np.empty(0, np.float32)
    assert error_breakdown(empty, empty, 10.0)["false_on_w"] == 0.0


def test_false_on_readings_are_attributed_to_the_appliances_truly_running() -> None:
    # thresholds 100 W (washer) and 50 W (dishwasher); 5 readings
    truth = np.array([[0, 0], [0, 900], [0, 900], [500, 0], [0, 0]], dtype=np.float32)
    predicted = np.array([[200, 0], [300, 900], [0, 60], [500, 70], [150, 0]], dtype=np.float32)
    # washer false on at 0, 1, 4; the dishwasher truly ran at 1 only -> 1
    # dishwasher false on at 3 (70 > 50, truth 0); the washer truly ran there -> 1
    # (reading 2: the dishwasher's 60 W is right, it ran)
    confusion = false_on_while_others_on(truth, predicted, ["washer", "dishwasher"], [100.0, 50.0])
    assert confusion == {"washer": {"dishwasher": 1}, "dishwasher": {"washer": 1}}
