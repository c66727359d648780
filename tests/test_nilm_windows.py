"""Sliding windows over a validity mask, and whole-series inference with edge padding."""

import numpy as np
import pytest

from modelyard.projects.nilm.inference import predict_series
from modelyard.projects.nilm.normalisation import Normalisation
from modelyard.projects.nilm.windows import (
    check_window,
    gather_windows,
    pad_edges,
    valid_window_starts,
    window_view,
)


def _brute_force_starts(valid: np.ndarray, window: int) -> list[int]:
    return [s for s in range(len(valid) - window + 1) if all(valid[s : s + window])]


@pytest.mark.parametrize("window", [3, 5, 7, 21])
@pytest.mark.parametrize("p_valid", [0.5, 0.9, 0.99])
def test_valid_window_starts_matches_brute_force(window: int, p_valid: float) -> None:
    rng = np.random.default_rng(window * 1000 + int(p_valid * 100))
    for n in (0, 1, window - 1, window, window + 1, 50, 300):
        valid = rng.random(n) < p_valid
        starts = valid_window_starts(valid, window)
        assert starts.dtype == np.int64
        assert starts.tolist() == _brute_force_starts(valid, window)


def test_valid_window_starts_small_cases_by_hand() -> None:
    valid = np.array([True, True, True, False, True, True, True, True])
    # window 3: [0..2] ok, any start 1..3 touches index 3, [4..6] and [5..7] ok
    assert valid_window_starts(valid, 3).tolist() == [0, 4, 5]
    assert valid_window_starts(valid, 5).tolist() == []
    assert valid_window_starts(np.ones(5, dtype=bool), 5).tolist() == [0]
    assert valid_window_starts(np.zeros(5, dtype=bool), 3).tolist() == []


def test_windows_never_include_an_invalid_index() -> None:
    rng = np.random.default_rng(7)
    valid = rng.random(2000) < 0.97
    invalid_positions = set(np.flatnonzero(~valid).tolist())
    for window in (3, 11, 31):
        starts = valid_window_starts(valid, window)
        assert len(starts) > 0
        for s in starts.tolist():
            assert invalid_positions.isdisjoint(range(s, s + window))


@pytest.mark.parametrize("window", [-3, 0, 1, 2, 4, 10, 100])
def test_check_window_rejects_even_or_small(window: int) -> None:
    with pytest.raises(ValueError, match=f"odd number >= 3, got {window}"):
        check_window(window)
    with pytest.raises(ValueError):
        valid_window_starts(np.ones(200, dtype=bool), window)


@pytest.mark.parametrize("window", [3, 5, 99, 599])
def test_check_window_accepts_odd_at_least_three(window: int) -> None:
    check_window(window)


def test_window_view_is_a_view_and_gather_windows_copies_the_right_rows() -> None:
    series = np.arange(10, dtype=np.float32) * 10.0
    view = window_view(series, 3)

    assert view.shape == (8, 3)
    assert np.shares_memory(view, series)
    np.testing.assert_array_equal(view[4], [40.0, 50.0, 60.0])

    batch = gather_windows(series, np.array([7, 0, 3, 3]), 3)
    np.testing.assert_array_equal(
        batch, [[70.0, 80.0, 90.0], [0.0, 10.0, 20.0], [30.0, 40.0, 50.0], [30.0, 40.0, 50.0]]
    )
    assert batch.flags["C_CONTIGUOUS"]
    assert not np.shares_memory(batch, series)


def test_pad_edges_lengths_and_values() -> None:
    series = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(pad_edges(series, 3), [1, 1, 2, 3, 4, 4])
    np.testing.assert_array_equal(pad_edges(series, 7), [1, 1, 1, 1, 2, 3, 4, 4, 4, 4])
    for window in (3, 5, 11):
        padded = pad_edges(series, window)
        assert len(padded) == len(series) + window - 1
        # every original reading is the midpoint of exactly one window of the padded series
        assert window_view(padded, window).shape[0] == len(series)
        np.testing.assert_array_equal(window_view(padded, window)[:, window // 2], series)


# --------------------------------------------------------------------------- predict_series

# aggregate z = (w - 100) / 50; target watts = score * 5 + 10 = (w - 100) / 10 + 10 = w / 10
NORM = Normalisation(
    aggregate_mean=100.0, aggregate_std=50.0, target_mean=(10.0,), target_std=(5.0,)
)


def _midpoint(windows: np.ndarray) -> np.ndarray:
    assert windows.dtype == np.float32
    return windows[:, windows.shape[1] // 2 : windows.shape[1] // 2 + 1]


def _first(windows: np.ndarray) -> np.ndarray:
    return windows[:, :1]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4096])
def test_predict_series_midpoint_predictor(batch_size: int) -> None:
    aggregate = np.array([-50.0, 0.0, 100.0, 300.0, 250.0, 30.0, 1000.0])
    watts = predict_series(aggregate, _midpoint, NORM, window=5, batch_size=batch_size)

    # w / 10, clipped at 0: -5 -> 0
    expected = [[0.0], [0.0], [10.0], [30.0], [25.0], [3.0], [100.0]]
    assert watts.shape == (len(aggregate), 1)
    np.testing.assert_allclose(watts, expected, rtol=1e-6, atol=1e-5)
    assert (watts >= 0).all()


def test_predict_series_edge_padding_seen_by_the_predictor() -> None:
    aggregate = np.array([200.0, 300.0, 400.0, 500.0, 600.0, 700.0])
    # window 5 -> half 2: the window for reading i starts at i - 2, and the padded series repeats
    # the first reading, so the first element of reading i's window is aggregate[max(i - 2, 0)]:
    # readings 0, 1, 2 see 200; 3 sees 300; 4 sees 400; 5 sees 500  -> watts / 10
    watts = predict_series(aggregate, _first, NORM, window=5, batch_size=4)
    np.testing.assert_allclose(watts[:, 0], [20.0, 20.0, 20.0, 30.0, 40.0, 50.0], rtol=1e-6)


def test_predict_series_several_appliances_and_short_series() -> None:
    norm = Normalisation(
        aggregate_mean=0.0, aggregate_std=1.0, target_mean=(0.0, 100.0), target_std=(1.0, 2.0)
    )

    def two_outputs(windows: np.ndarray) -> np.ndarray:
        middle = windows[:, windows.shape[1] // 2]
        return np.stack([middle, -middle], axis=1)

    aggregate = np.array([3.0, -1.0])  # shorter than the window: padding still gives one row each
    watts = predict_series(aggregate, two_outputs, norm, window=7)
    # column 0: z;        3 -> 3, -1 -> clipped to 0
    # column 1: -z*2+100: 3 -> 94 -> clipped to the mains reading 3; -1 -> 102 -> mains 0
    np.testing.assert_allclose(watts, [[3.0, 3.0], [0.0, 0.0]], rtol=1e-6)


def test_predict_series_never_exceeds_the_mains_reading() -> None:
    norm = Normalisation(
        aggregate_mean=0.0, aggregate_std=1.0, target_mean=(500.0,), target_std=(1.0,)
    )

    def constant(windows: np.ndarray) -> np.ndarray:
        return np.zeros((windows.shape[0], 1), dtype=np.float32)  # always 500 W

    aggregate = np.array([100.0, 800.0, 450.0, -20.0, 2000.0])
    watts = predict_series(aggregate, constant, norm, window=3)
    # min(500, max(mains, 0)) for each reading
    np.testing.assert_allclose(watts[:, 0], [100.0, 500.0, 450.0, 0.0, 500.0])


def test_predict_series_rejects_bad_window() -> None:
    with pytest.raises(ValueError, match="odd"):
        predict_series(np.ones(10), _midpoint, NORM, window=4)
