"""DataLoader worker processes and the random streams of augmentation, shared by every project.

Augmentation draws from a numpy ``Generator`` owned by the dataset (NILM's activation injector,
the image flips and rotations). A DataLoader with ``num_workers > 0`` gives every worker process
a copy of the dataset, generator state included, so without intervention all workers would draw
the *same* augmentations; under DDP every rank builds the same generator from the same seed, so
all ranks would too. Here every (seed, rank, worker) gets its own reproducible stream:

* the main process of rank 0 keeps ``seed`` itself, so ``num_workers=0`` on one device is
  exactly what it always was;
* the main process of any other rank switches once to ``SeedSequence([seed, rank, 0])`` and
  carries on from there, however many loaders are built on the dataset;
* worker ``w`` uses ``SeedSequence([seed, rank, w + 1, base])``, where ``base`` is the seed
  PyTorch draws for each set of workers it starts. It comes from a generator seeded with the
  seed and the number of loaders already built on the dataset, so a new set of workers (each
  epoch when workers are not persistent, a loader rebuilt by
  ``reload_dataloaders_every_n_epochs``) starts new streams instead of repeating augmentations.

Workers are persistent (started once per fit, not once per epoch): starting a worker costs more
than most of our batches, and a persistent worker's generator simply carries on across epochs.

Sharding between DDP ranks is not done here: Lightning replaces a DataLoader's sampler with a
``DistributedSampler`` (or wraps a custom one, such as our ``BatchSampler`` of whole batches, in
a ``DistributedSamplerWrapper``), which gives each rank every ``world_size``-th batch. That is
only a partition if every rank draws the same shuffled order, which holds because every rank
seeds its sampler's generator with the same ``seed`` (tests/test_distributed.py checks it with
two real processes).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypedDict, runtime_checkable
from weakref import WeakKeyDictionary

import numpy as np
import torch
import torch.distributed
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import get_worker_info

from modelyard.core.errors import ConfigError


@runtime_checkable
class RandomStreams(Protocol):
    """Something that draws random numbers and can be put on the stream of a (rank, worker)."""

    def use_stream(self, rank: int, worker: int | None, base: int = 0) -> None:
        """Restart the generator on the stream of ``rank`` and ``worker`` (None: main process)."""
        ...


def stream_seed(seed: int, rank: int, worker: int | None, base: int = 0) -> int:
    """The seed of one process's augmentation stream; ``seed`` itself for rank 0's main process.

    ``base`` distinguishes successive sets of worker processes (see the module docstring).
    """
    if rank == 0 and worker is None:
        return seed
    entropy = [seed, rank, 0 if worker is None else worker + 1]
    if worker is not None:
        entropy.append(base)
    sequence = np.random.SeedSequence([int(v) % 2**64 for v in entropy])
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


def distributed_rank() -> int:
    """Global rank of this process when ``torch.distributed`` is initialised, else 0.

    Lightning initialises the process group before it asks a DataModule for its DataLoaders, so
    this is the rank a ``train_dataloader()`` runs on.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_rank())
    return 0


@dataclass(frozen=True)
class WorkerSeeder:
    """``worker_init_fn``: puts the worker's copy of the dataset on its own random stream.

    Also seeds the worker's global ``torch``/``random``/``numpy`` generators the way Lightning's
    own ``pl_worker_init_function`` would have (it is only added when no function is given).
    """

    rank: int

    def __call__(self, worker_id: int) -> None:
        # PyTorch seeded this worker's torch generator with base + worker_id, where base is what
        # it drew for this set of workers; read it before Lightning's function reseeds torch.
        base = torch.initial_seed() - worker_id
        pl_worker_init_function(worker_id, rank=self.rank)
        info = get_worker_info()
        if info is not None and isinstance(info.dataset, RandomStreams):
            info.dataset.use_stream(self.rank, worker_id, base)


class WorkerOptions(TypedDict):
    """Keyword arguments of ``torch.utils.data.DataLoader`` about worker processes."""

    num_workers: int
    persistent_workers: bool
    worker_init_fn: Callable[[int], None] | None
    generator: torch.Generator | None


#: The rank whose main-process stream each dataset is on (absent: rank 0, as constructed).
_main_stream_rank: "WeakKeyDictionary[object, int]" = WeakKeyDictionary()
#: How many loaders with workers each dataset has had (see the module docstring).
_loaders_with_workers: "WeakKeyDictionary[object, int]" = WeakKeyDictionary()


def check_num_workers(num_workers: int) -> int:
    """``project.data.num_workers`` as an int, or a one-line error."""
    valid = isinstance(num_workers, int | np.integer) and not isinstance(num_workers, bool)
    if not valid or num_workers < 0:
        raise ConfigError(
            f"project.data.num_workers must be a whole number >= 0, not {num_workers!r}"
        )
    return int(num_workers)


def _use_main_stream(dataset: object, rank: int) -> None:
    """Switch this process's copy of ``dataset`` to the stream of ``rank``, once."""
    if not isinstance(dataset, RandomStreams) or _main_stream_rank.get(dataset, 0) == rank:
        return
    dataset.use_stream(rank, None)
    _main_stream_rank[dataset] = rank


def _next_loader_number(dataset: object) -> int:
    """0 for the first loader with workers built on ``dataset``, then 1, 2, ..."""
    try:
        number = _loaders_with_workers.get(dataset, 0)
        _loaders_with_workers[dataset] = number + 1
    except TypeError:  # cannot be weakly referenced: nothing random to keep apart either
        return 0
    return number


def worker_options(
    dataset: object, num_workers: int, seed: int, rank: int | None = None
) -> WorkerOptions:
    """DataLoader arguments for ``num_workers`` processes; ``dataset`` put on this rank's stream.

    ``rank`` defaults to :func:`distributed_rank`. With ``num_workers=0`` the batches are made
    in this process, from its own copy of ``dataset``, which is put on the stream of ``rank``
    the first time (rank 0's is the one it was built with).
    """
    num_workers = check_num_workers(num_workers)
    rank = distributed_rank() if rank is None else rank
    _use_main_stream(dataset, rank)
    if num_workers == 0:
        return WorkerOptions(
            num_workers=0, persistent_workers=False, worker_init_fn=None, generator=None
        )
    loader_number = _next_loader_number(dataset)
    base_seeds = np.random.SeedSequence([seed, loader_number]).generate_state(1, np.uint64)
    return WorkerOptions(
        num_workers=num_workers,
        persistent_workers=True,
        worker_init_fn=WorkerSeeder(rank),
        # Draws the base seed of each set of workers; its own generator, so that the draw
        # neither depends on nor disturbs the global torch generator (dropout, init).
        generator=torch.Generator().manual_seed(int(base_seeds[0])),
    )
