"""Small hand-made NILM inputs shared by the ``test_nilm_*`` modules (plain helpers, no fixtures).

Kept out of ``conftest.py`` on purpose: tests import what they use explicitly.
"""

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modelyard.projects.nilm.normalisation import Normalisation
from modelyard.projects.nilm.preparation import PreparedHouse

#: Header of the real 1-minute CSV layout (UK-DALE / REFIT exports).
CSV_HEADER = "Time,Aggregate,Kettle,Dishwasher,WashingMachine,Microwave"
APPLIANCES = ("kettle", "dishwasher", "washing_machine", "microwave")
MINUTE_NS = 60 * 1_000_000_000


def write_gzip_csv(path: Path, rows: Sequence[str], header: str = CSV_HEADER) -> Path:
    """Write ``header`` and ``rows`` (already comma-joined) as a gzip-compressed CSV file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join([header, *rows]) + "\n"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(text)
    return path


def make_house(
    name: str,
    n: int,
    *,
    start_ns: int = 1_700_000_000 * 1_000_000_000,
    n_targets: int = 2,
    invalid: Sequence[int] = (),
    seed: int = 0,
    interval_s: int = 60,
) -> PreparedHouse:
    """A prepared house of ``n`` intervals with distinct, recognisable values.

    ``aggregate[i]`` is ``1000 + i`` (plus a per-house offset from ``seed``) so that a window can be
    traced back to its position; targets are random watts; ``invalid`` positions are marked invalid
    and hold 0 like :func:`prepare_house` leaves them.
    """
    rng = np.random.default_rng(seed)
    times = start_ns + np.arange(n, dtype=np.int64) * interval_s * 1_000_000_000
    aggregate = (1000.0 + seed * 10_000 + np.arange(n)).astype(np.float32)
    targets = rng.uniform(0.0, 500.0, size=(n, n_targets)).astype(np.float32)
    valid = np.ones(n, dtype=bool)
    for i in invalid:
        valid[i] = False
        aggregate[i] = 0.0
        targets[i] = 0.0
    return PreparedHouse(
        name=name,
        interval_s=interval_s,
        appliances=tuple(f"app{j}" for j in range(n_targets)),
        times=times,
        aggregate=aggregate,
        targets=targets,
        valid=valid,
    )


def simple_normalisation(n_targets: int = 2) -> Normalisation:
    """Round-number statistics so expected values can be worked out by hand."""
    return Normalisation(
        aggregate_mean=1000.0,
        aggregate_std=100.0,
        target_mean=tuple(10.0 * (j + 1) for j in range(n_targets)),
        target_std=tuple(5.0 * (j + 1) for j in range(n_targets)),
    )
