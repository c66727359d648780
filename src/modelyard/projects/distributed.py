"""Validation scores over the whole validation set when training runs on several processes.

Under DDP every rank validates on its own share of the batches. Scores that are sums can be
all-reduced; scores that are not (a median, a macro-F1) need every rank's rows, which
:func:`gather_rows` collects (shares may differ in length).
"""

import torch
import torch.distributed as dist


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_world_size())
    return 1


def gather_rows(values: torch.Tensor) -> torch.Tensor:
    """Every rank's ``values`` concatenated along the first axis, in rank order.

    Without a process group this is ``values`` itself. Every rank must call it (it is a
    collective), also with an empty tensor. Lightning's distributed sampler pads the last
    batches so that ranks have equal counts, so a few rows may appear twice.
    """
    size = world_size()
    if size == 1:
        return values
    parts: list[torch.Tensor | None] = [None] * size
    dist.all_gather_object(parts, values.detach().cpu())
    return torch.cat([p for p in parts if p is not None])
