"""Synthetic activations: cutting them out of a power series and adding them to training batches."""

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelyard.core.config import load_config
from modelyard.core.errors import ConfigError
from modelyard.projects.nilm.augmentation import (
    ActivationInjector,
    ActivationRule,
    activation_rules,
    find_activations,
)
from modelyard.projects.nilm.datamodule import NilmDataModule
from modelyard.projects.nilm.dataset import WindowBatches, oversample_active
from modelyard.projects.nilm.storage import save_house
from modelyard.projects.nilm.task import NilmTask
from nilm_fixtures import make_house, simple_normalisation

# --------------------------------------------------------------------------- find_activations


def _f32(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def _assert_activations(actual: list[np.ndarray], expected: list[list[float]]) -> None:
    assert len(actual) == len(expected), actual
    for got, want in zip(actual, expected, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, _f32(want))


def test_separate_runs_are_separate_activations_padded_by_one_reading() -> None:
    #         0  1    2    3  4  5  6  7   8  9 10
    power = _f32([0, 5, 100, 120, 7, 0, 0, 0, 90, 3, 0])
    valid = np.ones(power.size, bool)
    # runs [2, 4) and [8, 9) are 4 readings apart (4..7): more than merge_gap=3 -> two activations,
    # each with one reading of padding: [1, 5) and [7, 10)
    found = find_activations(power, valid, on_threshold_w=50.0, max_length=20, merge_gap=3, pad=1)
    _assert_activations(found, [[5, 100, 120, 7], [0, 90, 3]])


def test_runs_at_most_merge_gap_apart_are_one_activation() -> None:
    power = _f32([0, 5, 100, 120, 7, 0, 0, 0, 90, 3, 0])
    valid = np.ones(power.size, bool)
    # merge_gap=4: the 4-reading pause is bridged -> [2, 9) padded to [1, 10)
    found = find_activations(power, valid, on_threshold_w=50.0, max_length=20, merge_gap=4, pad=1)
    _assert_activations(found, [[5, 100, 120, 7, 0, 0, 0, 90, 3]])

    # exactly merge_gap (3) readings between two "on" readings: merged
    power = _f32([1, 60, 2, 3, 4, 70, 6, 8])
    found = find_activations(power, np.ones(8, bool), 50.0, max_length=20, merge_gap=3, pad=1)
    _assert_activations(found, [[1, 60, 2, 3, 4, 70, 6]])


def test_padding_is_clipped_at_the_series_edges_and_follows_pad() -> None:
    power = _f32([80, 90, 1, 2, 3, 4, 5, 6, 75])
    valid = np.ones(power.size, bool)
    found = find_activations(power, valid, 50.0, max_length=20, merge_gap=0, pad=2)
    # [0, 2) padded to [0, 4); [8, 9) padded to [6, 9)
    _assert_activations(found, [[80, 90, 1, 2], [5, 6, 75]])
    found = find_activations(power, valid, 50.0, max_length=20, merge_gap=0, pad=0)
    _assert_activations(found, [[80, 90], [75]])


def test_threshold_is_strict_and_never_on_gives_nothing() -> None:
    valid = np.ones(6, bool)
    assert find_activations(np.zeros(6, np.float32), valid, 10.0, max_length=10) == []
    # readings equal to the threshold are not "on"
    assert find_activations(np.full(6, 10.0, np.float32), valid, 10.0, max_length=10) == []
    assert find_activations(np.empty(0, np.float32), np.empty(0, bool), 10.0, max_length=10) == []


def test_activations_touching_an_invalid_reading_are_dropped() -> None:
    #                 0  1    2    3  4  5  6  7    8  9 10 11
    power = _f32([0, 1, 100, 100, 0, 0, 0, 0, 100, 2, 0, 0])
    valid = np.ones(power.size, bool)
    valid[4] = False  # the padding reading right after the first run
    found = find_activations(power, valid, 50.0, max_length=20, merge_gap=1, pad=1)
    _assert_activations(found, [[0, 100, 2]])

    # two readings away from the padded activation [1, 5): not touching, kept
    valid = np.ones(power.size, bool)
    valid[6] = False
    found = find_activations(power, valid, 50.0, max_length=20, merge_gap=1, pad=1)
    _assert_activations(found, [[1, 100, 100, 0], [0, 100, 2]])


def test_an_invalid_reading_inside_a_merged_activation_drops_it() -> None:
    power = _f32([0, 100, 500, 100, 0, 0, 0, 0])
    valid = np.ones(power.size, bool)
    valid[2] = False  # not "on" itself, but it lies inside the activation [0, 5)
    assert find_activations(power, valid, 50.0, max_length=20, merge_gap=3, pad=1) == []
    valid[2] = True
    found = find_activations(power, valid, 50.0, max_length=20, merge_gap=3, pad=1)
    _assert_activations(found, [[0, 100, 500, 100, 0]])


def test_activations_longer_than_max_length_are_dropped() -> None:
    power = _f32([0, 60, 60, 60, 0, 0, 0, 0, 0, 70, 0])
    valid = np.ones(power.size, bool)
    # padded lengths: 5 ([0, 5)) and 3 ([8, 11))
    found = find_activations(power, valid, 50.0, max_length=5, merge_gap=0, pad=1)
    _assert_activations(found, [[0, 60, 60, 60, 0], [0, 70, 0]])
    found = find_activations(power, valid, 50.0, max_length=4, merge_gap=0, pad=1)
    _assert_activations(found, [[0, 70, 0]])
    assert find_activations(power, valid, 50.0, max_length=2, merge_gap=0, pad=1) == []


def test_activations_shorter_than_min_length_are_dropped() -> None:
    power = _f32([0, 60, 60, 60, 0, 0, 0, 0, 0, 70, 0])
    valid = np.ones(power.size, bool)
    found = find_activations(power, valid, 50.0, max_length=20, merge_gap=0, pad=1, min_length=4)
    _assert_activations(found, [[0, 60, 60, 60, 0]])


# --------------------------------------------------------------------------- ActivationRule

# A washing machine cycle at one reading a minute: heating, tumbling that dips below 20 W for
# two minutes, a spin; then a standby blip (25 W for 2 minutes) long after.
CYCLE = _f32([0, 2000, 2000, 2000, 90, 15, 12, 120, 80, 400, 0, 0, 0, 0, 0, 0, 25, 25, 0, 0])


def test_a_low_threshold_and_long_pauses_cut_the_whole_cycle() -> None:
    valid = np.ones(CYCLE.size, bool)
    whole = ActivationRule(min_power_w=20.0, max_pause=2, min_length=5, max_length=60)
    _assert_activations(whole.cut(CYCLE, valid), [CYCLE[:11].tolist()])
    # cut at the on-threshold, the cycle falls apart into its heating block and its spin
    bare = ActivationRule(min_power_w=200.0, max_pause=3, min_length=1, max_length=60)
    _assert_activations(bare.cut(CYCLE, valid), [[0, 2000, 2000, 2000, 90], [80, 400, 0]])
    # too short a pause splits the cycle at its dip; min_length then drops the blip
    split = ActivationRule(min_power_w=20.0, max_pause=1, min_length=5, max_length=60)
    _assert_activations(
        split.cut(CYCLE, valid), [[0, 2000, 2000, 2000, 90, 15], [12, 120, 80, 400, 0]]
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"min_power_w": -1.0}, "min_power_w must be >= 0"),
        ({"max_pause": -1}, "max_pause_s must be >= 0"),
        ({"min_length": 0}, "min_on_s <= max_on_s"),
        ({"min_length": 10, "max_length": 5}, "min_on_s <= max_on_s"),
        ({"stretch": (2.0, 1.0)}, "stretch needs 0 < low <= high"),
    ],
)
def test_rule_rejects_impossible_values(fields: dict[str, Any], message: str) -> None:
    settings: dict[str, Any] = {
        "min_power_w": 20.0,
        "max_pause": 3,
        "min_length": 1,
        "max_length": 9,
    } | fields
    with pytest.raises(ValueError, match=message):
        ActivationRule(**settings)


RULES = {
    "default": {"min_power_w": None, "max_pause_s": 180, "min_on_s": 60, "max_on_s": None},
    "washer": {
        "min_power_w": 20,
        "max_pause_s": 600,
        "min_on_s": 1200,
        "max_on_s": 14400,
        "stretch": [0.5, 1.5],
    },
}


def test_rules_from_settings_in_watts_and_seconds() -> None:
    kettle, washer = activation_rules(
        RULES, ["kettle", "washer"], [500.0, 200.0], interval_s=60.0, window=99
    )
    # default: the on-threshold, and the window as the longest activation
    assert kettle == ActivationRule(500.0, max_pause=3, min_length=1, max_length=99)
    assert washer == ActivationRule(20.0, 10, min_length=20, max_length=240, stretch=(0.5, 1.5))
    # seconds become readings of the series' interval (min_on rounds up, max_on down)
    (fine,) = activation_rules(
        {"washer": RULES["washer"]}, ["washer"], [200.0], interval_s=7.0, window=99
    )
    assert fine == ActivationRule(20.0, 86, min_length=172, max_length=2057, stretch=(0.5, 1.5))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"dryer": RULES["washer"]}, r"activations for \['dryer'\], which are not among"),
        ({"washer": {"min_power_w": 20}}, r"activations.washer: needs the keys"),
        ({"washer": RULES["washer"] | {"colour": 1}}, r"unknown \['colour'\]"),
        ({"washer": RULES["washer"] | {"min_on_s": "long"}}, r"activations.washer \(for washer\)"),
        ({"washer": RULES["washer"] | {"max_on_s": 30}}, "min_on_s <= max_on_s"),
        ({}, "activations: no entry for washer and no default"),
        ({"default": None}, r"activations.default: needs the keys"),
        ({"washer": RULES["washer"] | {"stretch": [0, 1]}}, "stretch needs 0 < low <= high"),
    ],
)
def test_bad_rule_settings_name_the_entry(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        activation_rules(settings, ["washer"], [200.0], interval_s=60.0, window=99)


# --------------------------------------------------------------------------- ActivationInjector

WINDOW = 21
MID = WINDOW // 2
TRACE = _f32([50, 200, 300, 250, 40])  # strictly positive: its footprint in a window is visible
OTHER = _f32([10, 20, 30])


def _injector(
    pools: list[list[np.ndarray]],
    probability: float = 1.0,
    scale: tuple[float, float] = (1.0, 1.0),
    seed: int = 0,
) -> ActivationInjector:
    return ActivationInjector(
        activations=pools,
        probability=probability,
        scale_range=scale,
        normalisation=simple_normalisation(len(pools)),
        seed=seed,
    )


def _zero_batch(rows: int, n_targets: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((rows, WINDOW), np.float32), np.zeros((rows, n_targets), np.float32)


def _random_batch(rows: int, n_targets: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    windows = rng.normal(size=(rows, WINDOW)).astype(np.float32)
    targets = rng.normal(size=(rows, n_targets)).astype(np.float32)
    return windows, targets


def test_every_row_gets_one_whole_activation_and_the_midpoint_target() -> None:
    norm = simple_normalisation(1)  # aggregate_std 100, target_std (5,)
    windows, targets = _zero_batch(2000, 1)
    _injector([[TRACE]])(windows, targets)

    added_w = windows.astype(np.float64) * norm.aggregate_std
    np.testing.assert_allclose(added_w.sum(axis=1), TRACE.sum(), rtol=1e-5)

    covered = 0
    starts = set()
    for row in range(windows.shape[0]):
        footprint = np.flatnonzero(added_w[row])
        start = int(footprint[0])
        starts.add(start)
        # one contiguous, complete copy of the activation, inside the window
        np.testing.assert_array_equal(footprint, np.arange(start, start + TRACE.size))
        np.testing.assert_allclose(added_w[row, footprint], TRACE, rtol=1e-5)
        if start <= MID < start + TRACE.size:
            covered += 1
            expected = TRACE[MID - start] / norm.target_std[0]
            assert targets[row, 0] == pytest.approx(expected, rel=1e-6)
        else:
            assert targets[row, 0] == 0.0
    # "about half of the time" (a 1/3 share, or always/never, would fail this)
    assert 0.4 < covered / windows.shape[0] < 0.6, covered
    # it is also placed entirely before and entirely after the midpoint, not only across it
    assert min(starts) + TRACE.size <= MID
    assert max(starts) > MID


def test_an_activation_longer_than_the_window_is_cropped_by_it() -> None:
    norm = simple_normalisation(1)
    long_trace = np.arange(1, 3 * WINDOW + 1, dtype=np.float32)  # 63 readings, all distinct
    windows, targets = _zero_batch(500, 1)
    _injector([[long_trace]])(windows, targets)
    added_w = windows.astype(np.float64) * norm.aggregate_std
    starts = set()
    for row in range(windows.shape[0]):
        # the window shows a contiguous stretch of the activation: consecutive readings of it
        shown = np.round(added_w[row]).astype(int)
        assert (shown > 0).any()
        first = shown[shown > 0][0]
        offset = int(np.flatnonzero(shown > 0)[0])
        starts.add(offset - first + 1)  # where the activation starts, relative to the window
        # longer than half the window: it always covers the midpoint, whose value is the target
        assert shown[MID] > 0
        assert targets[row, 0] == pytest.approx(shown[MID] / norm.target_std[0], rel=1e-5)
    # starting before the window and ending after it both occur
    assert min(starts) < 0 and max(starts) + long_trace.size > WINDOW
    assert max(starts) <= MID and min(starts) >= MID - long_trace.size + 1


@pytest.mark.parametrize(
    ("factor", "expected"),
    [
        (2.0, np.repeat(TRACE, 2)),  # every reading held twice as long
        (0.6, TRACE[[0, 1, 3]]),  # 5 readings -> 3: the nearest earlier reading of each
    ],
)
def test_stretch_resamples_the_activation_in_time(factor: float, expected: np.ndarray) -> None:
    norm = simple_normalisation(1)
    windows, targets = _zero_batch(300, 1)
    injector = ActivationInjector(
        activations=[[TRACE]],
        probability=1.0,
        scale_range=(1.0, 1.0),
        normalisation=norm,
        seed=0,
        stretch_ranges=[(factor, factor)],
    )
    injector(windows, targets)
    added_w = windows.astype(np.float64) * norm.aggregate_std
    for row in range(windows.shape[0]):
        footprint = np.flatnonzero(added_w[row])
        np.testing.assert_allclose(added_w[row, footprint], expected, rtol=1e-5)
        start = int(footprint[0])
        want = expected[MID - start] if start <= MID < start + expected.size else 0.0
        assert targets[row, 0] * norm.target_std[0] == pytest.approx(want, rel=1e-5)


def test_one_activation_per_appliance_and_per_row() -> None:
    norm = simple_normalisation(2)  # target_std (5, 10)
    windows, targets = _zero_batch(300, 2)
    _injector([[TRACE], [OTHER]])(windows, targets)
    added_w = windows.astype(np.float64) * norm.aggregate_std
    np.testing.assert_allclose(added_w.sum(axis=1), TRACE.sum() + OTHER.sum(), rtol=1e-5)
    # each target column only ever takes values of its own appliance
    assert set(np.round(targets[:, 0] * 5.0, 3)) <= {0.0, *TRACE.tolist()}
    assert set(np.round(targets[:, 1] * 10.0, 3)) <= {0.0, *OTHER.tolist()}
    assert (targets[:, 0] != 0).any() and (targets[:, 1] != 0).any()


def test_activations_are_picked_from_the_whole_pool() -> None:
    short = _f32([400, 400])
    windows, targets = _zero_batch(400, 1)
    _injector([[TRACE, short]])(windows, targets)
    energy = np.round(windows.astype(np.float64).sum(axis=1) * 100.0, 2)
    counts = {float(e): int((energy == e).sum()) for e in np.unique(energy)}
    assert set(counts) == {float(TRACE.sum()), float(short.sum())}
    assert min(counts.values()) > 100


def test_probability_zero_changes_nothing() -> None:
    windows, targets = _random_batch(200, 2, seed=3)
    before = (windows.copy(), targets.copy())
    _injector([[TRACE], [OTHER]], probability=0.0)(windows, targets)
    np.testing.assert_array_equal(windows, before[0])
    np.testing.assert_array_equal(targets, before[1])


def test_probability_is_the_share_of_rows_augmented() -> None:
    windows, targets = _zero_batch(4000, 1)
    _injector([[TRACE]], probability=0.25)(windows, targets)
    share = (windows != 0).any(axis=1).mean()
    assert 0.22 < share < 0.28


def test_same_seed_same_result_different_seed_different_result() -> None:
    base = _random_batch(64, 2, seed=1)

    def augmented(seed: int) -> tuple[np.ndarray, np.ndarray]:
        windows, targets = base[0].copy(), base[1].copy()
        _injector([[TRACE, OTHER], [OTHER]], probability=0.5, scale=(0.5, 2.0), seed=seed)(
            windows, targets
        )
        return windows, targets

    first, again, other = augmented(11), augmented(11), augmented(12)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], base[0])
    assert not np.array_equal(first[0], other[0])


def test_scale_multiplies_the_injected_energy() -> None:
    norm = simple_normalisation(1)
    windows, targets = _zero_batch(200, 1)
    _injector([[TRACE]], scale=(2.0, 2.0))(windows, targets)
    added_w = windows.astype(np.float64) * norm.aggregate_std
    np.testing.assert_allclose(added_w.sum(axis=1), 2.0 * TRACE.sum(), rtol=1e-5)
    on = targets[:, 0] != 0
    assert on.any()
    # the midpoint target is scaled too: twice one of the activation's values
    assert set(np.round(targets[on, 0] * norm.target_std[0] / 2.0, 3)) <= set(TRACE.tolist())


def test_an_empty_pool_leaves_its_appliance_untouched() -> None:
    windows, targets = _random_batch(100, 1, seed=5)
    before = (windows.copy(), targets.copy())
    _injector([[]])(windows, targets)
    np.testing.assert_array_equal(windows, before[0])
    np.testing.assert_array_equal(targets, before[1])

    # the other appliance is still augmented, the empty one's target column never changes
    windows, targets = _zero_batch(100, 2)
    _injector([[], [OTHER]])(windows, targets)
    np.testing.assert_allclose(windows.sum(axis=1) * 100.0, OTHER.sum(), rtol=1e-5)
    assert (targets[:, 0] == 0).all()
    assert (targets[:, 1] != 0).any()


# --------------------------------------------------------------------------- WindowBatches


def _bump(windows: np.ndarray, targets: np.ndarray) -> None:
    windows += 1.0
    targets += 2.0


def _window_batches(augment: Callable[[np.ndarray, np.ndarray], None] | None) -> WindowBatches:
    n = 30
    aggregate = np.arange(n, dtype=np.float32)
    targets = np.stack([np.arange(n), -np.arange(n)], axis=1).astype(np.float32)
    return WindowBatches(aggregate, targets, np.arange(n - 5 + 1), 5, augment=augment)


def test_augmentation_works_on_copies_of_the_source_arrays() -> None:
    dataset = _window_batches(_bump)
    aggregate, targets = dataset.aggregate.copy(), dataset.targets.copy()
    for _ in range(2):  # repeated reads do not accumulate augmentation
        x, y = dataset[[0, 3, 7]]
        expected_x = np.array([[0, 1, 2, 3, 4], [3, 4, 5, 6, 7], [7, 8, 9, 10, 11]]) + 1.0
        np.testing.assert_array_equal(x.numpy(), expected_x)
        np.testing.assert_array_equal(y.numpy(), np.array([[2, -2], [5, -5], [9, -9]]) + 2.0)
    np.testing.assert_array_equal(dataset.aggregate, aggregate)
    np.testing.assert_array_equal(dataset.targets, targets)


def test_injector_in_window_batches_leaves_the_source_untouched() -> None:
    n = 200
    rng = np.random.default_rng(0)
    aggregate = rng.normal(size=n).astype(np.float32)
    targets = rng.normal(size=(n, 1)).astype(np.float32)
    dataset = WindowBatches(
        aggregate.copy(), targets.copy(), np.arange(n - WINDOW + 1), WINDOW, _injector([[TRACE]])
    )
    x, y = dataset[list(range(50))]
    plain_x = np.stack([aggregate[s : s + WINDOW] for s in range(50)])
    np.testing.assert_allclose((x.numpy() - plain_x).sum(axis=1) * 100.0, TRACE.sum(), rtol=1e-4)
    assert not np.array_equal(y.numpy(), targets[MID : MID + 50])
    np.testing.assert_array_equal(dataset.aggregate, aggregate)
    np.testing.assert_array_equal(dataset.targets, targets)


def test_oversample_active_keeps_the_augment_hook() -> None:
    dataset = _window_batches(_bump)
    norm = replace(simple_normalisation(2), target_mean=(0.0, 0.0), target_std=(1.0, 1.0))
    # midpoint of window s is reading s + 2; appliance 0 is "on" above 20 W
    oversampled = oversample_active(dataset, [20.0, 1e9], norm, factor=3)
    assert len(oversampled) > len(dataset)
    assert oversampled.augment is _bump
    x, _ = oversampled[[0]]
    np.testing.assert_array_equal(x.numpy(), [[1, 2, 3, 4, 5]])


# --------------------------------------------------------------------------- NilmDataModule


def test_datamodule_augments_training_windows_only(tmp_path: Path) -> None:
    house = make_house("house_a", 200, n_targets=2, seed=1)
    targets = np.zeros((200, 2), np.float32)
    targets[20:24, 0] = [300, 500, 500, 300]  # training part
    targets[60:62, 1] = [900, 800]  # training part
    targets[180:183, 0] = [700, 700, 700]  # validation part (last 25%): never in the pool
    save_house(replace(house, targets=targets), tmp_path)

    def datamodule(probability: float) -> NilmDataModule:
        dm = NilmDataModule(
            prepared_dir=tmp_path,
            train_houses=["house_a"],
            appliances=["app0", "app1"],
            window=11,
            val_fraction=0.25,
            batch_size=8,
            seed=0,
            on_threshold_w=(100.0, 100.0),
            oversample_on=2,
            augment_probability=probability,
        )
        dm.setup("fit")
        return dm

    dm = datamodule(0.5)
    assert dm.train_windows is not None and dm.val_windows is not None
    injector = dm.train_windows.augment
    assert isinstance(injector, ActivationInjector)
    assert dm.val_windows.augment is None
    assert injector.probability == 0.5
    _assert_activations(list(injector.activations[0]), [[0, 300, 500, 500, 300, 0]])
    _assert_activations(list(injector.activations[1]), [[0, 900, 800, 0]])
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 11) and y.shape == (8, 2)

    plain = datamodule(0.0)
    assert plain.train_windows is not None
    assert plain.train_windows.augment is None


def test_datamodule_cuts_activations_by_the_configured_rules(tmp_path: Path) -> None:
    house = make_house("house_a", 200, n_targets=1, seed=1)
    targets = np.zeros((200, 1), np.float32)
    targets[20:31, 0] = CYCLE[:11]  # one whole cycle in the training part
    save_house(replace(house, targets=targets), tmp_path)
    rule = ActivationRule(20.0, max_pause=2, min_length=5, max_length=60, stretch=(0.8, 1.2))
    dm = NilmDataModule(
        prepared_dir=tmp_path,
        train_houses=["house_a"],
        appliances=["app0"],
        window=11,
        val_fraction=0.25,
        batch_size=8,
        seed=0,
        on_threshold_w=(200.0,),
        augment_probability=0.5,
        activation_rules=[rule],
    )
    dm.setup("fit")
    assert dm.train_windows is not None
    injector = dm.train_windows.augment
    assert isinstance(injector, ActivationInjector)
    _assert_activations(list(injector.activations[0]), [CYCLE[:11].tolist()])
    assert list(injector.stretch_ranges) == [(0.8, 1.2)]


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "project.appliances.washing_machine.activations.min_on_s=-5",
            r"^project.appliances.washing_machine.activations: min_power_w and max_on_s",
        ),
        (
            "+project.appliances.kettle.activations.colour=3",
            r"^project.appliances.kettle.activations: needs the keys",
        ),
        ("project.data.augment.default_activations=5", "must be null or a mapping"),
        (
            "project.data.augment.default_activations.max_pause_s=-1",
            r"^project.data.augment.default_activations \(for kettle\): min_power_w and",
        ),
        (
            "project.appliances.washing_machine.activations.stretch=[1.5,0.5]",
            r"^project.appliances.washing_machine.activations: stretch needs 0 < low <= high",
        ),
        (
            "project.appliances.washing_machine.activations.stretch=fast",
            r"stretch must be \[low, high\], got 'fast'",
        ),
    ],
)
def test_bad_augmentation_settings_are_config_errors(
    tmp_path: Path, override: str, message: str
) -> None:
    cfg = load_config([f"paths.workdir={tmp_path}", override])
    with pytest.raises(ConfigError, match=message):
        NilmTask(cfg).datamodule()


def test_the_default_settings_cut_whole_washing_machine_cycles(tmp_path: Path) -> None:
    (kettle, microwave, dishwasher, washer) = (
        NilmTask(load_config([f"paths.workdir={tmp_path}"])).datamodule().activation_rules or []
    )
    stretch = (0.5, 1.5)
    assert kettle == ActivationRule(500.0, 3, min_length=1, max_length=99, stretch=stretch)
    assert microwave == ActivationRule(200.0, 3, min_length=1, max_length=99, stretch=stretch)
    assert dishwasher == ActivationRule(200.0, 3, min_length=1, max_length=99, stretch=stretch)
    assert washer == ActivationRule(
        20.0, max_pause=10, min_length=20, max_length=240, stretch=(0.5, 1.5)
    )
