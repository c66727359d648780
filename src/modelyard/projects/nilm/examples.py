"""The NILM bundle's example: one day of a test house's mains, with the true appliance power.

The day is :data:`DAY_READINGS` consecutive gap-free readings of a test house (never trained on),
starting at local midnight where the house's clock has one; among the first
:data:`SEARCH_DAYS` such days of every test house, the one with the most metered appliance energy,
so that the example shows the appliances at work. Written as the CSV a person uploads:
``Time,mains,<appliance>...`` (local time as prepared, watts rounded to 0.1 W), the appliance
columns named and ordered as the bundle's appliances.
"""

import csv
import io
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from modelyard.core.bundle_examples import ExampleFile
from modelyard.projects.nilm.contract import NilmContract
from modelyard.projects.nilm.preparation import PreparedHouse

DAY_READINGS = 1440
SEARCH_DAYS = 28
_NS_PER_S = 1_000_000_000
_NS_PER_DAY = 86_400 * _NS_PER_S

log = logging.getLogger("modelyard.export")


def example_day(houses: Sequence[PreparedHouse], contract: NilmContract) -> list[ExampleFile]:
    """The day with the most appliance energy, as one CSV example; none (with a warning) when
    no test house has a gap-free day with every appliance of the bundle."""
    best: tuple[float, PreparedHouse, int] | None = None
    for house in houses:
        if not set(contract.names) <= set(house.appliances):
            continue
        for start in _day_starts(house):
            stop = start + DAY_READINGS
            if not house.valid[start:stop].all():
                continue
            energy = float(house.targets[start:stop].sum(dtype=np.float64))
            if best is None or energy > best[0]:
                best = (energy, house, start)
    if best is None:
        log.warning("no test house has a gap-free day of %d readings: no example", DAY_READINGS)
        return []
    _, house, start = best
    day = _clock(int(house.times[start])).date().isoformat()
    hours = DAY_READINGS * contract.interval_s / 3600
    return [
        ExampleFile(
            name=f"{house.name}-{day}.csv",
            media_type="text/csv",
            description=(
                f"{DAY_READINGS} readings ({hours:g} h) of test house {house.name} from {day}: "
                f"mains and the metered {', '.join(contract.names)}"
            ),
            data=_csv(house, start, contract.names),
        )
    ]


def _day_starts(house: PreparedHouse) -> range:
    """Day-long chunk starts, from the first reading at local midnight (else the first)."""
    midnight = np.flatnonzero(house.times[:DAY_READINGS] % _NS_PER_DAY == 0)
    first = int(midnight[0]) if midnight.size else 0
    days = max(0, (len(house) - first) // DAY_READINGS)
    return range(first, first + min(days, SEARCH_DAYS) * DAY_READINGS, DAY_READINGS)


def _clock(ns: int) -> datetime:
    """A reading's time on the house's own (local, naive) clock, as preparation keeps it."""
    return datetime.fromtimestamp(ns // _NS_PER_S, UTC).replace(tzinfo=None)


def _csv(house: PreparedHouse, start: int, names: Sequence[str]) -> bytes:
    stop = start + DAY_READINGS
    columns = [house.appliances.index(name) for name in names]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["Time", "mains", *names])
    for i in range(start, stop):
        writer.writerow(
            [
                _clock(int(house.times[i])).isoformat(sep=" "),
                f"{float(house.aggregate[i]):.1f}",
                *(f"{float(house.targets[i, c]):.1f}" for c in columns),
            ]
        )
    return out.getvalue().encode()
