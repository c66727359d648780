"""Preparation: align to a grid, clip impossible values, fill short gaps, mark long ones."""

import numpy as np
import pandas as pd
import pytest

from modelyard.core.errors import DataError
from modelyard.projects.nilm.preparation import (
    align,
    clip_impossible,
    fill_short_gaps,
    prepare_house,
)

NAN = np.nan


def _frame(rows: dict[str, list[float]], times: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, index=pd.DatetimeIndex(times, name="time"), dtype="float64")


def _same(actual: np.ndarray, expected: list[float]) -> None:
    """Element-wise equality where NaN equals NaN (and only NaN)."""
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, equal_nan=True)


# --------------------------------------------------------------------------- align


def test_align_averages_readings_of_each_floored_bin_on_a_gap_free_grid() -> None:
    # Deliberately unsorted; 12:02 has no reading at all.
    frame = _frame(
        {
            "aggregate": [400.0, 100.0, 50.0, 200.0, 150.0],
            "kettle": [4.0, NAN, 1.0, 3.0, 2.0],
        },
        [
            "2014-01-01 12:01:30",
            "2014-01-01 12:00:10",
            "2014-01-01 12:03:59",
            "2014-01-01 12:00:59",
            "2014-01-01 12:03:00",
        ],
    )

    aligned = align(frame, 60)

    assert list(aligned.index) == list(pd.date_range("2014-01-01 12:00", periods=4, freq="60s"))
    # 12:00 <- 12:00:10 (100) and 12:00:59 (200): (100 + 200) / 2 = 150
    # 12:01 <- 12:01:30 (400)
    # 12:02 <- nothing: NaN
    # 12:03 <- 12:03:00 (150) and 12:03:59 (50): (150 + 50) / 2 = 100
    _same(aligned["aggregate"].to_numpy(), [150.0, 400.0, NAN, 100.0])
    # kettle 12:00: only 12:00:59 has a reading (3); 12:03: (2 + 1) / 2 = 1.5
    _same(aligned["kettle"].to_numpy(), [3.0, 4.0, NAN, 1.5])


def test_align_coarser_interval() -> None:
    frame = _frame(
        {"aggregate": [10.0, 20.0, 30.0, 40.0, 90.0]},
        [
            "2014-01-01 00:00:00",
            "2014-01-01 00:01:00",
            "2014-01-01 00:04:59",
            "2014-01-01 00:05:00",
            "2014-01-01 00:17:00",
        ],
    )
    aligned = align(frame, 300)
    assert list(aligned.index) == list(pd.date_range("2014-01-01 00:00", periods=4, freq="300s"))
    # 00:00 bin: (10 + 20 + 30) / 3 = 20; 00:05: 40; 00:10: empty; 00:15: 90
    _same(aligned["aggregate"].to_numpy(), [20.0, 40.0, NAN, 90.0])


@pytest.mark.parametrize("interval", [0, -60])
def test_align_rejects_non_positive_interval(interval: int) -> None:
    frame = _frame({"aggregate": [1.0]}, ["2014-01-01"])
    with pytest.raises(DataError, match="interval_s must be positive"):
        align(frame, interval)


def test_align_rejects_empty_recording() -> None:
    frame = _frame({"aggregate": []}, [])
    with pytest.raises(DataError, match="empty"):
        align(frame, 60)


# --------------------------------------------------------------------------- clip_impossible


def test_clip_impossible_zeroes_negatives_and_drops_over_limit() -> None:
    frame = _frame(
        {
            "aggregate": [-3.0, 100.0, 20_000.0, NAN, 10_000.0],
            "kettle": [0.0, -1.0, 3600.0, 2000.0, -7.0],
            "microwave": [-2.0, 99_999.0, 5.0, 5.0, 5.0],  # no limit configured: never dropped
        },
        [f"2014-01-01 00:0{i}" for i in range(5)],
    )
    original = frame.copy()

    clipped, negative, over = clip_impossible(frame, {"aggregate": 10_000.0, "kettle": 3500.0})

    # negatives: aggregate -3, kettle -1 and -7, microwave -2 -> 4
    assert negative == 4
    # over limit: aggregate 20 000 > 10 000 (10 000 itself is allowed), kettle 3600 > 3500 -> 2
    assert over == 2
    _same(clipped["aggregate"].to_numpy(), [0.0, 100.0, NAN, NAN, 10_000.0])
    _same(clipped["kettle"].to_numpy(), [0.0, 0.0, NAN, 2000.0, 0.0])
    _same(clipped["microwave"].to_numpy(), [0.0, 99_999.0, 5.0, 5.0, 5.0])
    assert list(clipped.index) == list(frame.index)
    pd.testing.assert_frame_equal(frame, original)  # the input is left alone


# --------------------------------------------------------------------------- fill_short_gaps


GAPPY = {
    # short interior gap (1, 2), long interior gap (4..7), trailing edge gap (9)
    "a": [0.0, NAN, NAN, 30.0, NAN, NAN, NAN, NAN, 80.0, NAN],
    # leading edge gap (0), short interior gap (2), interior gap of three (6..8)
    "b": [NAN, 5.0, NAN, 7.0, 7.0, 1.0, NAN, NAN, NAN, 9.0],
}


def _gappy() -> pd.DataFrame:
    return _frame(GAPPY, [f"2014-01-01 00:{i:02d}" for i in range(10)])


def test_fill_short_gaps_interpolates_only_gaps_up_to_the_limit() -> None:
    filled, count = fill_short_gaps(_gappy(), 2)

    # a: 0 -> 30 over three steps: 10, 20. The four-step gap stays missing in full (including
    # its first two samples, which a naive `limit=2` would fill); the edge gap stays missing.
    _same(filled["a"].to_numpy(), [0.0, 10.0, 20.0, 30.0, NAN, NAN, NAN, NAN, 80.0, NAN])
    # b: leading edge stays missing; (5 + 7) / 2 = 6; the three-step gap is too long for 2.
    _same(filled["b"].to_numpy(), [NAN, 5.0, 6.0, 7.0, 7.0, 1.0, NAN, NAN, NAN, 9.0])
    assert count == 3


def test_fill_short_gaps_fills_a_gap_exactly_as_long_as_the_limit() -> None:
    filled, count = fill_short_gaps(_gappy(), 3)

    _same(filled["a"].to_numpy(), [0.0, 10.0, 20.0, 30.0, NAN, NAN, NAN, NAN, 80.0, NAN])
    # b 6..8: 1 -> 9 over four steps of 2: 3, 5, 7
    _same(filled["b"].to_numpy(), [NAN, 5.0, 6.0, 7.0, 7.0, 1.0, 3.0, 5.0, 7.0, 9.0])
    assert count == 2 + 1 + 3


def test_fill_short_gaps_long_limit_fills_every_interior_gap_but_no_edge() -> None:
    filled, count = fill_short_gaps(_gappy(), 4)
    # a 4..7: 30 -> 80 over five steps of 10
    _same(filled["a"].to_numpy(), [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, NAN])
    assert np.isnan(filled["b"].iloc[0])
    assert count == 2 + 4 + 1 + 3


def test_fill_short_gaps_disabled() -> None:
    frame = _gappy()
    filled, count = fill_short_gaps(frame, 0)
    assert count == 0
    pd.testing.assert_frame_equal(filled, frame)


def test_fill_short_gaps_does_not_modify_its_input() -> None:
    frame = _gappy()
    fill_short_gaps(frame, 4)
    _same(frame["a"].to_numpy(), GAPPY["a"])


# --------------------------------------------------------------------------- prepare_house


def _raw_house() -> pd.DataFrame:
    """Minutes 0..11 with no rows at 3 and 6..8; two readings in minute 11."""
    rows = [
        ("00:00:00", 100.0, 0.0, -10.0),
        ("00:01:00", -5.0, 0.0, 0.0),
        ("00:02:00", 200.0, 10.0, 0.0),
        ("00:04:00", 300.0, 9000.0, 0.0),
        ("00:05:00", 400.0, 40.0, 0.0),
        ("00:09:00", 500.0, 50.0, 0.0),
        ("00:10:00", 600.0, NAN, 0.0),
        ("00:11:00", 680.0, 60.0, 0.0),
        ("00:11:30", 720.0, 80.0, 0.0),
    ]
    return _frame(
        {
            "aggregate": [r[1] for r in rows],
            "kettle": [r[2] for r in rows],
            "microwave": [r[3] for r in rows],
        },
        [f"2014-01-01 {r[0]}" for r in rows],
    )


def test_prepare_house_end_to_end() -> None:
    house, report = prepare_house(
        "house_1",
        _raw_house(),
        ["kettle"],
        interval_s=60,
        max_fill_s=120,  # two steps
        limits_w={"aggregate": 5000.0, "kettle": 3000.0},
        outage_rule=None,
    )

    # Grid 00:00..00:11. After clipping:
    #   aggregate [100, 0, 200, -, 300, 400, -, -, -, 500, 600, 700]  (minute 11: (680+720)/2)
    #   kettle    [0, 0, 10, -, -, 40, -, -, -, 50, -, 70]  (9000 > 3000 dropped; (60+80)/2)
    # Filling gaps of at most 2: aggregate 3 -> (200+300)/2 = 250; kettle 3, 4 -> 20, 30 (10 -> 40
    # in three steps); kettle 10 -> (50+70)/2 = 60. Minutes 6..8 (three missing) stay invalid.
    assert house.name == "house_1"
    assert house.interval_s == 60
    assert house.appliances == ("kettle",)
    start = np.datetime64("2014-01-01T00:00", "ns").astype(np.int64)
    np.testing.assert_array_equal(house.times, start + np.arange(12) * 60 * 10**9)
    np.testing.assert_array_equal(
        house.aggregate, [100, 0, 200, 250, 300, 400, 0, 0, 0, 500, 600, 700]
    )
    assert house.targets.shape == (12, 1)
    np.testing.assert_array_equal(house.targets[:, 0], [0, 0, 10, 20, 30, 40, 0, 0, 0, 50, 60, 70])
    expected_valid = np.ones(12, dtype=bool)
    expected_valid[6:9] = False
    np.testing.assert_array_equal(house.valid, expected_valid)
    assert house.aggregate.dtype == np.float32
    assert house.targets.dtype == np.float32
    assert house.times.dtype == np.int64
    assert len(house) == 12

    assert report.rows_in == 9
    assert report.intervals == 12
    assert report.clipped_negative == 1  # the microwave's -10 is not a selected column
    assert report.dropped_over_limit == 1
    assert report.filled == 1 + 2 + 1
    assert report.invalid == report.long_gaps == 3
    assert report.outage_zeros == report.outage_runs == 0


def test_prepare_house_missing_appliance_column() -> None:
    with pytest.raises(DataError, match="house 'house_1' has no column") as info:
        prepare_house("house_1", _raw_house(), ["kettle", "dishwasher"], 60, 120, {}, None)
    assert "dishwasher" in str(info.value)
    assert "kettle" in str(info.value)  # the columns it does have are listed


def test_prepare_house_slice_is_a_view_of_the_range() -> None:
    house, _ = prepare_house("h", _raw_house(), ["kettle"], 60, 120, {}, None)
    part = house.slice(2, 5)
    assert len(part) == 3
    np.testing.assert_array_equal(part.times, house.times[2:5])
    assert np.shares_memory(part.aggregate, house.aggregate)
    assert part.appliances == house.appliances
