"""seq2point training data: normalised mains windows -> normalised appliance power at the midpoint.

A batch is produced by one fancy-index into a strided window view (see :mod:`.windows`), so the
loader's cost per batch is one memory copy, not one Python object per window. The DataLoader is
therefore used with ``batch_size=None`` and a ``BatchSampler``: each "item" it fetches is a batch.
Under DDP, Lightning wraps that ``BatchSampler`` so that each rank gets every ``world_size``-th
batch (see :mod:`modelyard.projects.worker_seeding`).
"""

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from modelyard.projects.nilm.normalisation import Normalisation
from modelyard.projects.nilm.preparation import PreparedHouse
from modelyard.projects.nilm.windows import gather_windows, valid_window_starts
from modelyard.projects.worker_seeding import RandomStreams, worker_options


class WindowBatches(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Indexable by a list of window numbers; returns ``(x, y)`` tensors for that batch."""

    def __init__(
        self,
        aggregate: np.ndarray,
        targets: np.ndarray,
        starts: np.ndarray,
        window: int,
        augment: Callable[[np.ndarray, np.ndarray], None] | None = None,
    ):
        self.aggregate = aggregate
        self.targets = targets
        self.starts = starts
        self.window = window
        self.augment = augment

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def use_stream(self, rank: int, worker: int | None, base: int = 0) -> None:
        """Put the augmentation, if it is random, on the stream of this rank and worker."""
        augment: object = self.augment
        if isinstance(augment, RandomStreams):
            augment.use_stream(rank, worker, base)

    def __getitem__(self, index: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        starts = self.starts[np.asarray(index, dtype=np.int64)]
        x = gather_windows(self.aggregate, starts, self.window)
        y = self.targets[starts + self.window // 2]
        if self.augment is not None:
            self.augment(x, y)  # x and y are fresh copies: the source arrays stay untouched
        return torch.from_numpy(x), torch.from_numpy(y)


def concatenate_houses(
    houses: Sequence[PreparedHouse], target_columns: Sequence[int], window: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Join houses end to end with ``window`` invalid readings between them.

    The separator guarantees no valid window spans two houses (or two sides of a split cut).
    """
    aggregates, targets, valids = [], [], []
    n_targets = len(target_columns)
    for house in houses:
        aggregates += [house.aggregate, np.zeros(window, np.float32)]
        targets += [
            house.targets[:, list(target_columns)],
            np.zeros((window, n_targets), np.float32),
        ]
        valids += [house.valid, np.zeros(window, bool)]
    if not aggregates:
        return np.empty(0, np.float32), np.empty((0, n_targets), np.float32), np.empty(0, bool)
    return np.concatenate(aggregates), np.concatenate(targets), np.concatenate(valids)


def build_windows(
    houses: Sequence[PreparedHouse],
    target_columns: Sequence[int],
    window: int,
    normalisation: Normalisation,
) -> WindowBatches:
    """Normalise the houses once and describe every gap-free window by its start index."""
    aggregate, targets, valid = concatenate_houses(houses, target_columns, window)
    starts = valid_window_starts(valid, window)
    return WindowBatches(
        aggregate=normalisation.normalise_aggregate(aggregate),
        targets=normalisation.normalise_targets(targets),
        starts=starts,
        window=window,
    )


def oversample_active(
    dataset: WindowBatches,
    on_threshold_w: Sequence[float],
    normalisation: Normalisation,
    factor: int,
) -> WindowBatches:
    """Repeat windows whose midpoint has any appliance on ``factor`` times in total.

    Appliances are off most of the time; without this, an epoch is mostly "everything off" and
    rare appliances (microwave, washing machine) are learnt last if at all.
    """
    if factor <= 1 or len(dataset) == 0:
        return dataset
    midpoint_w = normalisation.denormalise_targets(
        dataset.targets[dataset.starts + dataset.window // 2]
    )
    active = (midpoint_w > np.asarray(on_threshold_w, dtype=np.float32)).any(axis=1)
    repeated = [dataset.starts] + [dataset.starts[active]] * (factor - 1)
    return WindowBatches(
        dataset.aggregate,
        dataset.targets,
        np.concatenate(repeated),
        dataset.window,
        augment=dataset.augment,
    )


def batch_loader(
    dataset: WindowBatches,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    rank: int | None = None,
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    """A DataLoader whose sampler yields whole batches of window numbers.

    Batches are made in ``num_workers`` processes (0: in this one), each augmenting from its own
    random stream for ``rank`` (default: the ``torch.distributed`` rank, 0 without it).
    """
    generator = torch.Generator().manual_seed(seed)
    base = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    sampler = BatchSampler(base, batch_size=batch_size, drop_last=False)
    return DataLoader(
        dataset,
        sampler=sampler,
        batch_size=None,
        **worker_options(dataset, num_workers, seed, rank),
    )
