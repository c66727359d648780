"""Splits by house and by time, and the seq2point window dataset built from them."""

from collections import Counter

import numpy as np
import pytest
import torch

from modelyard.core.errors import ConfigError
from modelyard.projects.nilm.dataset import (
    WindowBatches,
    batch_loader,
    build_windows,
    concatenate_houses,
    oversample_active,
)
from modelyard.projects.nilm.preparation import PreparedHouse
from modelyard.projects.nilm.splits import check_house_split, split_by_time
from nilm_fixtures import make_house, simple_normalisation

WINDOW = 5
HALF = WINDOW // 2


def _houses() -> list[PreparedHouse]:
    # Both houses start at the same instant: their timestamps overlap, so anything that keeps
    # train and validation apart must do it per house, not by time alone.
    return [
        make_house("house_a", 40, invalid=(3, 17), seed=1),
        make_house("house_b", 23, invalid=(10,), seed=2),
    ]


def _brute_force_starts(valid: np.ndarray, window: int) -> list[int]:
    return [s for s in range(len(valid) - window + 1) if valid[s : s + window].all()]


def _locate(houses: list[PreparedHouse], start: int, window: int) -> tuple[int, int]:
    """(house number, local index) of a window start in the documented concatenation layout:
    each house followed by ``window`` separator readings."""
    offset = 0
    for k, house in enumerate(houses):
        if offset <= start < offset + len(house):
            return k, start - offset
        offset += len(house) + window
    raise AssertionError(f"start {start} is not inside any house")


def _window_keys(houses: list[PreparedHouse], start: int, window: int) -> set[tuple[str, int]]:
    """The (house, timestamp) pairs a window covers, from the houses' real ``times`` arrays."""
    k, local = _locate(houses, start, window)
    house = houses[k]
    # A window running off the end of its house would cross into the separator / next house.
    assert local + window <= len(house), f"window at {start} runs past the end of {house.name}"
    return {(house.name, int(t)) for t in house.times[local : local + window]}


# --------------------------------------------------------------------------- splits


def test_split_by_time_parts_are_disjoint_and_cover_each_house() -> None:
    houses = _houses()
    split = split_by_time(houses, 0.25)

    assert [h.name for h in split.train] == ["house_a", "house_b"]
    assert [h.name for h in split.val] == ["house_a", "house_b"]
    # 40 * 0.75 = 30 ; 23 * 0.75 = 17.25 -> 17
    assert [len(h) for h in split.train] == [30, 17]
    assert [len(h) for h in split.val] == [10, 6]
    for house, train, val in zip(houses, split.train, split.val, strict=True):
        assert train.times.max() < val.times.min()
        np.testing.assert_array_equal(np.concatenate([train.times, val.times]), house.times)
        np.testing.assert_array_equal(
            np.concatenate([train.aggregate, val.aggregate]), house.aggregate
        )
        np.testing.assert_array_equal(np.concatenate([train.valid, val.valid]), house.valid)


def test_split_by_time_without_validation() -> None:
    houses = _houses()
    split = split_by_time(houses, 0.0)
    assert split.val == []
    assert [len(h) for h in split.train] == [len(h) for h in houses]


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_split_by_time_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        split_by_time(_houses(), fraction)


def test_check_house_split() -> None:
    check_house_split(["house_1", "house_2"], ["house_3"])
    with pytest.raises(ConfigError, match=r"\['house_2'\] are both training and test"):
        check_house_split(["house_1", "house_2"], ["house_2", "house_3"])
    with pytest.raises(ConfigError, match="train_houses is empty"):
        check_house_split([], ["house_3"])


# --------------------------------------------------------------------------- windows


def test_concatenate_houses_layout() -> None:
    houses = _houses()
    aggregate, targets, valid = concatenate_houses(houses, [1], WINDOW)

    assert aggregate.shape == (40 + WINDOW + 23 + WINDOW,)
    assert targets.shape == (40 + WINDOW + 23 + WINDOW, 1)
    np.testing.assert_array_equal(aggregate[:40], houses[0].aggregate)
    np.testing.assert_array_equal(targets[:40, 0], houses[0].targets[:, 1])
    np.testing.assert_array_equal(aggregate[45:68], houses[1].aggregate)
    np.testing.assert_array_equal(valid[45:68], houses[1].valid)
    assert not valid[40:45].any()
    assert not valid[68:].any()

    empty_agg, empty_tgt, empty_valid = concatenate_houses([], [0, 1], WINDOW)
    assert empty_agg.shape == (0,)
    assert empty_tgt.shape == (0, 2)
    assert empty_valid.shape == (0,)


def test_no_training_window_touches_validation_or_spans_houses() -> None:
    houses = _houses()
    split = split_by_time(houses, 0.25)
    norm = simple_normalisation(2)

    train = build_windows(split.train, [0, 1], WINDOW, norm)
    val = build_windows(split.val, [0, 1], WINDOW, norm)

    # Every gap-free window of every part is there, and nothing else.
    assert len(train) == sum(len(_brute_force_starts(h.valid, WINDOW)) for h in split.train)
    assert len(val) == sum(len(_brute_force_starts(h.valid, WINDOW)) for h in split.val)
    assert len(train) > 0
    assert len(val) > 0

    train_keys: set[tuple[str, int]] = set()
    for start in train.starts.tolist():
        train_keys |= _window_keys(split.train, start, WINDOW)  # also: never spans two houses
    val_timestamps = {(h.name, int(t)) for h in split.val for t in h.times}
    assert train_keys.isdisjoint(val_timestamps)

    for start in val.starts.tolist():
        _window_keys(split.val, start, WINDOW)


def test_windows_never_span_two_fully_valid_houses() -> None:
    # With no gaps at all, only the separator stops a window from running from one house into
    # the next; 9 + 9 readings would otherwise give 18 - 5 + 1 = 14 windows, not 5 + 5.
    houses = [make_house("h1", 9, seed=1), make_house("h2", 9, seed=2)]
    dataset = build_windows(houses, [0], WINDOW, simple_normalisation(1))
    assert len(dataset) == 10
    for start in dataset.starts.tolist():
        _window_keys(houses, start, WINDOW)


def test_window_batches_getitem_returns_normalised_windows_and_midpoints() -> None:
    houses = _houses()
    norm = simple_normalisation(1)  # aggregate (w - 1000) / 100, target (w - 10) / 5
    dataset = build_windows(houses, [1], WINDOW, norm)
    assert isinstance(dataset, WindowBatches)

    picks = [0, len(dataset) - 1, 7, 7, 20]
    x, y = dataset[picks]

    assert isinstance(x, torch.Tensor)
    assert x.dtype == torch.float32
    assert x.shape == (len(picks), WINDOW)
    assert y.shape == (len(picks), 1)
    for row, pick in enumerate(picks):
        k, local = _locate(houses, int(dataset.starts[pick]), WINDOW)
        house = houses[k]
        expected_x = (house.aggregate[local : local + WINDOW] - 1000.0) / 100.0
        expected_y = (house.targets[local + HALF, 1] - 10.0) / 5.0
        np.testing.assert_allclose(x[row].numpy(), expected_x, rtol=1e-6)
        np.testing.assert_allclose(y[row, 0].item(), expected_y, rtol=1e-5, atol=1e-6)


def test_oversample_active_repeats_active_windows_factor_times() -> None:
    houses = _houses()
    norm = simple_normalisation(2)
    thresholds = (400.0, 450.0)
    dataset = build_windows(houses, [0, 1], WINDOW, norm)

    expected: Counter[int] = Counter()
    for start in dataset.starts.tolist():
        k, local = _locate(houses, start, WINDOW)
        midpoint = houses[k].targets[local + HALF]
        # keep clear of float32 rounding at the threshold
        assert np.abs(midpoint - np.array(thresholds)).min() > 1e-2
        active = bool((midpoint > np.array(thresholds)).any())
        expected[start] = 3 if active else 1
    assert 0 < sum(1 for n in expected.values() if n == 3) < len(expected)

    oversampled = oversample_active(dataset, thresholds, norm, factor=3)

    assert Counter(oversampled.starts.tolist()) == expected
    assert len(oversampled) == sum(expected.values())
    assert oversampled.window == WINDOW
    assert oversampled.aggregate is dataset.aggregate  # no copy of the series

    assert oversample_active(dataset, thresholds, norm, factor=1) is dataset


def test_batch_loader_batch_sizes_and_seeded_determinism() -> None:
    houses = [make_house("h", 61, seed=3)]  # 61 - 5 + 1 = 57 windows
    dataset = build_windows(houses, [0], WINDOW, simple_normalisation(1))
    assert len(dataset) == 57

    def epoch(seed: int, shuffle: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(batch_loader(dataset, batch_size=16, shuffle=shuffle, seed=seed))

    first = epoch(11, shuffle=True)
    assert [len(x) for x, _ in first] == [16, 16, 16, 9]
    assert all(x.shape[1:] == (WINDOW,) and y.shape[1:] == (1,) for x, y in first)

    again = epoch(11, shuffle=True)
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2)
        assert torch.equal(y1, y2)

    # One epoch holds every window exactly once (first readings are unique per window).
    all_x, _ = dataset[list(range(len(dataset)))]
    firsts = torch.cat([x[:, 0] for x, _ in first])
    assert torch.equal(torch.sort(firsts).values, torch.sort(all_x[:, 0]).values)
    assert not torch.equal(firsts, all_x[:, 0])  # and shuffled

    other = torch.cat([x[:, 0] for x, _ in epoch(12, shuffle=True)])
    assert not torch.equal(other, firsts)

    ordered = torch.cat([x for x, _ in epoch(0, shuffle=False)])
    assert torch.equal(ordered, all_x)
