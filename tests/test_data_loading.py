"""DataLoader worker processes: every worker (and every DDP rank) augments from its own stream,
the same seed gives the same batches, and workers never change which rows make a batch."""

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from modelyard.core.config import load_config
from modelyard.core.errors import ConfigError
from modelyard.core.families import load_task
from modelyard.projects.nilm.augmentation import ActivationInjector
from modelyard.projects.nilm.dataset import WindowBatches, batch_loader, build_windows
from modelyard.projects.tabular.datamodule import TabularDataModule
from modelyard.projects.tabular.task import load_schema
from modelyard.projects.vision.datamodule import ImageDataModule
from modelyard.projects.vision.image_cache import save_classes, save_part
from modelyard.projects.worker_seeding import stream_seed, worker_options
from nilm_fixtures import make_house, simple_normalisation

WINDOW = 9
BATCH = 16
Batches = list[tuple[torch.Tensor, torch.Tensor]]


def _injector(seed: int, probability: float = 0.5) -> ActivationInjector:
    trace = np.array([100.0, 250.0, 400.0, 150.0], np.float32)
    return ActivationInjector(
        activations=[[trace, trace[:2]]],
        probability=probability,
        scale_range=(0.5, 2.0),
        normalisation=simple_normalisation(1),
        seed=seed,
    )


def _flat_windows(seed: int, n: int = 8 * BATCH + WINDOW - 1) -> WindowBatches:
    """Every window is all zeros: a batch is exactly what the augmentation added to it."""
    return WindowBatches(
        np.zeros(n, np.float32),
        np.zeros((n, 1), np.float32),
        np.arange(n - WINDOW + 1),
        WINDOW,
        augment=_injector(seed),
    )


def _epochs(loader: DataLoader[tuple[torch.Tensor, torch.Tensor]], count: int) -> list[Batches]:
    return [list(loader) for _ in range(count)]


def _same(a: Iterable[tuple[torch.Tensor, ...]], b: Iterable[tuple[torch.Tensor, ...]]) -> bool:
    pairs = list(zip(a, b, strict=True))
    return all(torch.equal(x, y) for one, other in pairs for x, y in zip(one, other, strict=True))


# ----------------------------------------------------------------------------- the seeds


def test_stream_seed_keeps_the_seed_for_rank_0_and_separates_everything_else() -> None:
    assert stream_seed(42, 0, None) == 42  # one process, no workers: the seed as it always was
    seeds = {
        stream_seed(seed, rank, worker, base)
        for seed in (0, 42)
        for rank in (0, 1, 7)
        for worker in (None, 0, 1, 2)
        for base in (0, 5)
        if worker is not None or base == 0  # the main process has no base
    }
    assert len(seeds) == 2 * 3 * (1 + 3 * 2)
    assert stream_seed(42, 1, 0, 5) == stream_seed(42, 1, 0, 5)


@pytest.mark.parametrize("value", [-1, 1.5, True, "2", "two", None])
def test_a_bad_num_workers_is_a_config_error(value: object) -> None:
    with pytest.raises(ConfigError, match=r"project\.data\.num_workers"):
        worker_options(None, value, seed=0)  # type: ignore[arg-type]


def test_workers_are_persistent_and_seeded_and_none_means_none() -> None:
    none = worker_options(None, 0, seed=0)
    assert none["num_workers"] == 0 and not none["persistent_workers"]
    assert none["worker_init_fn"] is None
    two = worker_options(None, 2, seed=0)
    assert two["num_workers"] == 2 and two["persistent_workers"]
    assert two["worker_init_fn"] is not None and two["generator"] is not None


# ----------------------------------------------------------------------------- NILM


def test_two_nilm_workers_draw_different_augmentations() -> None:
    loader = batch_loader(_flat_windows(3), BATCH, shuffle=False, seed=3, num_workers=2)
    first, second = list(loader)[:2]  # batch 0 comes from worker 0, batch 1 from worker 1
    assert first[0].abs().sum() > 0 and second[0].abs().sum() > 0  # both augmented something
    # Same windows (all zeros), same batch size: identical generators would add identical
    # activations at identical places - which is what forked copies of one generator did.
    assert not torch.equal(first[0], second[0])
    assert not torch.equal(first[1], second[1])
    # and no two batches of an epoch repeat each other
    epoch = [x for x, _ in loader]
    assert len({x.numpy().tobytes() for x in epoch}) == len(epoch)


@pytest.mark.parametrize("persistent", [True, False])
def test_same_seed_same_nilm_batches_and_new_augmentations_every_epoch(persistent: bool) -> None:
    def loader(seed: int) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
        dataset = _flat_windows(seed)
        options = worker_options(dataset, 2, seed, rank=0)
        options["persistent_workers"] = persistent  # restarted workers must not repeat either
        sampler = batch_loader(dataset, BATCH, shuffle=True, seed=seed).sampler
        return DataLoader(dataset, sampler=sampler, batch_size=None, **options)

    one, again, other = _epochs(loader(5), 2), _epochs(loader(5), 2), _epochs(loader(6), 2)
    for epoch_one, epoch_again in zip(one, again, strict=True):
        assert _same(epoch_one, epoch_again)
    assert not _same(one[0], other[0])
    # windows are all zeros, so equal epochs would mean the same augmentations again
    assert not _same(one[0], one[1])


@pytest.mark.parametrize("workers", [0, 2])
def test_a_rebuilt_loader_carries_on_instead_of_repeating_augmentations(workers: int) -> None:
    """Lightning rebuilds loaders with ``reload_dataloaders_every_n_epochs``."""

    def two_loaders(rank: int) -> tuple[Batches, Batches]:
        dataset = _flat_windows(5)
        first = list(batch_loader(dataset, BATCH, False, seed=5, num_workers=workers, rank=rank))
        again = list(batch_loader(dataset, BATCH, False, seed=5, num_workers=workers, rank=rank))
        return first, again

    for rank in (0, 1):
        first, again = two_loaders(rank)
        assert not _same(first, again)
        assert all(_same(a, b) for a, b in zip((first, again), two_loaders(rank), strict=True))


def test_nilm_ranks_draw_different_augmentations_and_rank_0_keeps_the_old_stream() -> None:
    def epoch(rank: int, workers: int) -> Batches:
        return list(
            batch_loader(_flat_windows(8), BATCH, False, seed=8, num_workers=workers, rank=rank)
        )

    rank0, rank1 = epoch(0, 0), epoch(1, 0)
    assert not _same(rank0, rank1)
    assert not _same(epoch(0, 2), epoch(1, 2))
    # num_workers=0 on rank 0: exactly the augmentations of the injector seeded with the seed
    injector, expected = _injector(8), []
    for _ in range(8):
        x, y = np.zeros((BATCH, WINDOW), np.float32), np.zeros((BATCH, 1), np.float32)
        injector(x, y)
        expected.append((torch.from_numpy(x), torch.from_numpy(y)))
    assert _same(rank0, expected)


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_do_not_change_which_windows_make_a_batch(workers: int) -> None:
    dataset = build_windows([make_house("h", 203, seed=2)], [0], WINDOW, simple_normalisation(1))
    in_process = _epochs(batch_loader(dataset, BATCH, True, seed=4), 2)
    with_workers = _epochs(batch_loader(dataset, BATCH, True, seed=4, num_workers=workers), 2)
    for a, b in zip(in_process, with_workers, strict=True):
        assert _same(a, b)
    assert not _same(in_process[0], in_process[1])  # reshuffled every epoch


def test_num_workers_is_read_from_every_project_config() -> None:
    for project in ("nilm", "avm", "kc_house", "eurosat", "plants"):
        assert load_config([f"project={project}"]).project.data.num_workers == 0
        cfg = load_config([f"project={project}", "project.data.num_workers=2"])
        assert load_task(cfg).datamodule().num_workers == 2  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- images


def _image_module(tmp_path: Path, seed: int, workers: int) -> ImageDataModule:
    """One image, repeated: every batch shows only what the augmentation did to it."""
    image = np.random.default_rng(0).integers(0, 256, size=(1, 8, 8, 3), dtype=np.uint8)
    pixels = np.repeat(image, 4 * BATCH, axis=0)
    labels = np.arange(4 * BATCH) % 2
    if not (tmp_path / "train.npz").exists():
        save_part(tmp_path, "train", pixels, labels)
        save_part(tmp_path, "val", pixels[:BATCH], labels[:BATCH])
        save_classes(tmp_path, ["a", "b"], {})
    module = ImageDataModule(
        tmp_path, BATCH, seed, weighted=False, brightness=0.3, num_workers=workers
    )
    module.setup("fit")
    return module


def test_two_image_workers_draw_different_augmentations(tmp_path: Path) -> None:
    loader = _image_module(tmp_path, seed=1, workers=2).train_dataloader()
    epoch = [x for x, _ in loader]
    assert len(epoch) == 4
    assert not torch.equal(epoch[0], epoch[1])  # worker 0 vs worker 1
    assert not torch.equal(epoch[2], epoch[3])


def test_same_seed_same_image_batches(tmp_path: Path) -> None:
    def run(seed: int) -> list[Batches]:
        return _epochs(_image_module(tmp_path, seed, workers=2).train_dataloader(), 2)

    one, again, other = run(1), run(1), run(2)
    assert all(_same(a, b) for a, b in zip(one, again, strict=True))
    assert not _same(one[0], other[0])
    assert not _same(one[0], one[1])
    # validation is not augmented: the same with or without workers
    val_workers = list(_image_module(tmp_path, 1, workers=2).val_dataloader())
    val_in_process = list(_image_module(tmp_path, 1, workers=0).val_dataloader())
    assert _same(val_workers, val_in_process)


# ----------------------------------------------------------------------------- tables


def test_tabular_workers_give_the_same_batches(tmp_path: Path) -> None:
    schema = load_schema(load_config(["project=avm"]))
    rows = torch.arange(200, dtype=torch.float32).reshape(100, 2)

    def epochs(workers: int) -> list[torch.Tensor]:
        """Two training epochs and one validation pass, each as its rows in order."""
        module = TabularDataModule(tmp_path, schema, batch_size=16, seed=9, num_workers=workers)
        module.train_set = TensorDataset(rows, rows[:, :1])
        module.val_set = TensorDataset(rows, rows[:, :1])
        train = module.train_dataloader()
        return [torch.cat([x for x, _ in train]) for _ in range(2)] + [
            torch.cat([x for x, _ in module.val_dataloader()])
        ]

    in_process, with_workers = epochs(0), epochs(2)
    for a, b in zip(in_process, with_workers, strict=True):
        assert torch.equal(a, b)
    assert in_process[0].shape == (96, 2)  # drop_last: 6 full batches of 16
    assert not torch.equal(in_process[0], in_process[1])
