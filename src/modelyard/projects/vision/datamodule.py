"""Lightning DataModule for image folders: cached uint8 pixels -> augmented, normalised batches.

Augmentation (training only) works on whole uint8 batches with numpy: random horizontal and
vertical flips and 90-degree rotations (land cover and leaves have no canonical orientation), and
a random brightness factor. Normalisation statistics are fitted on the training pixels, unless
given (pretrained weights' statistics, :mod:`.pretrained`). Each
DataLoader worker and each DDP rank augments from its own random stream
(:mod:`modelyard.projects.worker_seeding`).
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from modelyard.projects.vision.image_cache import load_classes, load_part
from modelyard.projects.vision.image_decoding import normalise
from modelyard.projects.vision.image_folders import class_weights
from modelyard.projects.worker_seeding import check_num_workers, stream_seed, worker_options


def augment(pixels: np.ndarray, rng: np.random.Generator, brightness: float) -> np.ndarray:
    """Random flips, 90-degree rotations and brightness on a uint8 (B, H, W, 3) batch."""
    out = pixels.copy()
    flip_h = rng.random(len(out)) < 0.5
    out[flip_h] = out[flip_h][:, :, ::-1]
    flip_v = rng.random(len(out)) < 0.5
    out[flip_v] = out[flip_v][:, ::-1]
    turns = rng.integers(0, 4, size=len(out))
    for k in (1, 2, 3):
        chosen = turns == k
        out[chosen] = np.rot90(out[chosen], k=k, axes=(1, 2))
    if brightness > 0:
        factor = rng.uniform(1 - brightness, 1 + brightness, size=(len(out), 1, 1, 1))
        out = np.clip(out * factor, 0, 255).astype(np.uint8)
    return out


class ImageBatches(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Indexable by a list of rows; returns a normalised float batch and its labels."""

    def __init__(
        self,
        pixels: np.ndarray,
        labels: np.ndarray,
        mean: Sequence[float],
        std: Sequence[float],
        augment_brightness: float | None = None,
        seed: int = 0,
    ) -> None:
        self.pixels = pixels
        self.labels = labels
        self.mean = list(mean)
        self.std = list(std)
        self.augment_brightness = augment_brightness
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def use_stream(self, rank: int, worker: int | None, base: int = 0) -> None:
        """Restart the augmentation generator on the stream of a DDP rank and DataLoader worker."""
        self.rng = np.random.default_rng(stream_seed(self.seed, rank, worker, base))

    def __getitem__(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = np.asarray(rows, dtype=np.int64)
        batch = self.pixels[index]
        if self.augment_brightness is not None:
            batch = augment(batch, self.rng, self.augment_brightness)
        images = normalise(batch, self.mean, self.std)
        return torch.from_numpy(images), torch.from_numpy(self.labels[index].astype(np.int64))


def channel_statistics(pixels: np.ndarray, chunk: int = 1024) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 pixels, on the 0-1 scale.

    Exact, from a 256-level histogram per channel counted over chunks of images: no float copy
    of the training pixels is made (it was 1.5 GB for EuroSAT, see docs/profiling.md).
    """
    counts = np.zeros((3, 256), dtype=np.int64)
    for start in range(0, len(pixels), chunk):
        flat = pixels[start : start + chunk].reshape(-1, 3)
        for channel in range(3):
            counts[channel] += np.bincount(flat[:, channel], minlength=256)
    levels = np.arange(256, dtype=np.float64) / 255.0
    total = counts.sum(axis=1)
    mean = counts @ levels / total
    variance = (counts * (levels[None, :] - mean[:, None]) ** 2).sum(axis=1) / total
    return mean.tolist(), np.maximum(np.sqrt(variance), 1e-3).tolist()


class ImageDataModule(L.LightningDataModule):
    def __init__(
        self,
        prepared_dir: Path,
        batch_size: int,
        seed: int,
        weighted: bool,
        brightness: float,
        augment_training: bool = True,
        num_workers: int = 0,
        statistics: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        """``statistics``: the (mean, std) to normalise with, e.g. pretrained weights'; None
        fits them on the training pixels."""
        super().__init__()
        self.prepared_dir = Path(prepared_dir)
        self.batch_size = batch_size
        self.seed = seed
        self.weighted = weighted
        self.brightness = brightness
        self.augment_training = augment_training
        self.num_workers = check_num_workers(num_workers)
        self.statistics = statistics
        self.classes: list[str] = []
        self.mean: list[float] = []
        self.std: list[float] = []
        self.weights: list[float] | None = None
        self.train_set: ImageBatches | None = None
        self.val_set: ImageBatches | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.classes = load_classes(self.prepared_dir)
        train_pixels, train_labels = load_part(self.prepared_dir, "train")
        val_pixels, val_labels = load_part(self.prepared_dir, "val")
        if self.statistics is None:
            self.mean, self.std = channel_statistics(train_pixels)
        else:
            self.mean, self.std = (
                [float(v) for v in self.statistics[0]],
                [float(v) for v in self.statistics[1]],
            )
        if self.weighted:
            self.weights = class_weights(train_labels, len(self.classes)).tolist()
        brightness = self.brightness if self.augment_training else None
        self.train_set = ImageBatches(
            train_pixels, train_labels, self.mean, self.std, brightness, self.seed
        )
        self.val_set = ImageBatches(val_pixels, val_labels, self.mean, self.std)

    def _loader(
        self, dataset: ImageBatches, shuffle: bool, rank: int | None = None
    ) -> DataLoader[Any]:
        """Whole batches per fetch (a ``BatchSampler`` as sampler, ``batch_size=None``)."""
        base = (
            RandomSampler(dataset, generator=torch.Generator().manual_seed(self.seed))
            if shuffle
            else SequentialSampler(dataset)
        )
        return DataLoader(
            dataset,
            sampler=BatchSampler(base, self.batch_size, drop_last=False),
            batch_size=None,
            **worker_options(dataset, self.num_workers, self.seed, rank),
        )

    def train_dataloader(self) -> DataLoader[Any]:
        assert self.train_set is not None, "call setup() first"
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        assert self.val_set is not None, "call setup() first"
        return self._loader(self.val_set, shuffle=False)
