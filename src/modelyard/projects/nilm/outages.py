"""Mains outages recorded as zeros: stretches of whole-house power too low to be a real house.

A house's mains never draws (next to) nothing for a minute: a fridge, a router, standby loads keep
it at tens of watts. Some recordings nevertheless hold rows of 0 W where the logger was down, and
nothing marks them missing. Left in, they enter training windows, the validation and test splits
and the drift reference profile, and teach the model that 0 W mains means every appliance is off.

The rule: a run of mains readings at or below ``floor_w`` that lasts at least ``min_s`` seconds is
an outage, and its intervals are invalid like a long gap (no window covers them). Appliance
channels reading 0 are normal (off) and are never looked at.

Why the defaults (``project.data.mains_floor_w`` = 10 W and ``mains_outage_s`` = 60 s in
``conf/project/nilm.yaml``), measured on the shared 1-minute files by ``benchmarks/nilm_outages.py``
(docs/benchmarks.md): both houses hold long stretches of exactly 0 W (REFIT house 2 over a quarter
of its minutes, most of them from late October 2013 to mid-February 2014; UK-DALE house 2 a
sixth, in five runs of hours to weeks), and no minute of either lies between 0 and 26 W, so any
floor in that range finds the same minutes; 10 W leaves room for a logger that writes a small
offset instead of 0 and stays far below a house's standby load. Even the shortest zero runs are
outages, not load: in every zero-mains minute all four appliance channels read 0 as well (the
logger lost the whole row), and one-minute zeros sit between readings such as 2,509 W and 1,734 W.
So one minute at or below the floor is enough; stated in seconds, the rule does not change with
the resolution (ten readings of 6-second data).
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelyard.core.errors import ConfigError

FLOOR_KEY = "mains_floor_w"
DURATION_KEY = "mains_outage_s"


@dataclass(frozen=True)
class MainsOutageRule:
    """Mains at or below ``floor_w`` watts for at least ``min_s`` seconds is a logger outage."""

    floor_w: float
    min_s: float

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> "MainsOutageRule | None":
        """Read ``project.data.mains_floor_w`` and ``mains_outage_s``; a null floor turns the
        rule off. A missing or bad value is a one-line ConfigError naming its key."""
        if FLOOR_KEY not in data or DURATION_KEY not in data:
            raise ConfigError(
                f"project.data.{FLOOR_KEY} and project.data.{DURATION_KEY} must be set "
                f"(null {FLOOR_KEY} turns the mains outage rule off)"
            )
        floor, duration = data[FLOOR_KEY], data[DURATION_KEY]
        if floor is None:
            return None
        if not _is_number(floor) or floor < 0:
            raise ConfigError(
                f"project.data.{FLOOR_KEY} must be a number of watts >= 0 or null, got {floor!r}"
            )
        if not _is_number(duration) or duration <= 0:
            raise ConfigError(
                f"project.data.{DURATION_KEY} must be a positive number of seconds, "
                f"got {duration!r}"
            )
        return cls(float(floor), float(duration))

    def to_json(self) -> dict[str, float]:
        return {FLOOR_KEY: self.floor_w, DURATION_KEY: self.min_s}


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def outage_mask(
    aggregate: np.ndarray, interval_s: int, rule: MainsOutageRule | None
) -> tuple[np.ndarray, int]:
    """Where ``aggregate`` (W, one reading per ``interval_s``) is inside an outage, and how many
    outage runs there are. Missing (NaN) readings are not low: they end a run."""
    mask = np.zeros(len(aggregate), dtype=bool)
    if rule is None:
        return mask, 0
    low = np.asarray(aggregate) <= rule.floor_w
    edges = np.diff(np.concatenate([[0], low.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    long_enough = (stops - starts) * interval_s >= rule.min_s
    for start, stop in zip(starts[long_enough], stops[long_enough], strict=True):
        mask[start:stop] = True
    return mask, int(long_enough.sum())
