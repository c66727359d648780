"""One call that makes a run repeatable: python, numpy and torch seeds plus torch thread count."""

import lightning as L
import torch


def seed_everything(seed: int, num_threads: int = 0) -> None:
    L.seed_everything(seed, workers=True, verbose=False)
    if num_threads > 0:
        torch.set_num_threads(num_threads)
