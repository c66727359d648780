"""A household's mains CSV as the NILM page reads it: the mains column, an optional ``Time``
column and optional measured appliance columns, every problem as one sentence.

The page accepts what people have: the datasets' own ``Aggregate`` column as well as the
bundle examples' ``mains``, appliance columns spelt as in the data (``WashingMachine``) or as the
bundle names them (``washing_machine``). How many readings a model takes is the server's
business (its 422 says so); this module only refuses what cannot become a request at all.
"""

import csv
import io
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: Column names (compared as :func:`column_key`) that hold the whole-house mains power.
MAINS_COLUMNS = ("mains", "aggregate", "aggregate_w", "mains_w")
TIME_COLUMN = "time"
#: A larger upload is refused before it is read (a day at 1 min is about 60 KB).
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Distinct steps of an uneven Time column quoted in its sentence.
MAX_QUOTED_STEPS = 3


class NilmInputError(ValueError):
    """An upload that cannot become a request; ``str(error)`` is the sentence to show."""


@dataclass(frozen=True)
class MainsTable:
    """The readings of one upload, oldest first.

    ``truth_w`` holds the measured power of the bundle's appliances that the CSV has (keyed by
    the bundle's names); ``ignored`` names the columns used for nothing; ``interval_s`` is the
    Time column's step (None without one)."""

    mains_w: tuple[float, ...]
    times: tuple[datetime, ...] | None
    truth_w: dict[str, tuple[float, ...]]
    ignored: tuple[str, ...]
    interval_s: int | None

    def request(self, edges: str = "pad") -> dict[str, Any]:
        """The ``POST /predict`` body; the interval goes along so that the server refuses a
        series sampled at another rate than its model's."""
        body: dict[str, Any] = {"aggregate_w": list(self.mains_w), "edges": edges}
        if self.interval_s is not None:
            body["interval_s"] = self.interval_s
        return body


def column_key(name: str) -> str:
    """Case and separators do not matter: ``WashingMachine`` = ``washing_machine``."""
    return re.sub(r"[^0-9a-z]", "", name.strip().lower())


def decode_csv(filename: str, content: bytes) -> str:
    """The upload's text, or a sentence saying it is no CSV (binary, not UTF-8, too large)."""
    if len(content) > MAX_UPLOAD_BYTES:
        megabytes = MAX_UPLOAD_BYTES // (1024 * 1024)
        raise NilmInputError(f"{filename} is larger than {megabytes} MB; upload one CSV of mains.")
    if b"\x00" in content:
        raise NilmInputError(f"{filename} is not a CSV file (it holds binary data).")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise NilmInputError(f"{filename} is not a CSV file (it is not UTF-8 text).") from None
    if not text.strip():
        raise NilmInputError(f"{filename} is empty.")
    return text


def parse_mains_csv(filename: str, content: bytes, appliances: Sequence[str]) -> MainsTable:
    """Read an uploaded CSV whose header names a mains column (see :data:`MAINS_COLUMNS`)."""
    text = decode_csv(filename, content)
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    except csv.Error as error:
        raise NilmInputError(f"{filename} is not a readable CSV ({error}).") from None
    header, records = rows[0], rows[1:]
    keys = [column_key(name) for name in header]
    mains_at = _find(keys, {column_key(name) for name in MAINS_COLUMNS})
    if mains_at is None:
        found = ", ".join(name.strip() for name in header)
        raise NilmInputError(
            f"{filename} has no mains column: name it 'mains' or 'Aggregate' "
            f"(its columns: {found})."
        )
    if not records:
        raise NilmInputError(f"{filename} has a header but no readings.")
    for line, record in enumerate(records, start=2):
        if len(record) != len(header):
            raise NilmInputError(
                f"Line {line} of {filename} has {len(record)} values; "
                f"its header has {len(header)} columns."
            )
    time_at = _find(keys, {TIME_COLUMN})
    appliance_at = {name: _find(keys, {column_key(name)}) for name in appliances}
    used = {mains_at, time_at, *appliance_at.values()}
    times = None if time_at is None else _times(records, time_at, header[time_at])
    return MainsTable(
        mains_w=_watts(records, mains_at, header[mains_at]),
        times=times,
        truth_w={
            name: _watts(records, at, header[at])
            for name, at in appliance_at.items()
            if at is not None
        },
        ignored=tuple(name.strip() for at, name in enumerate(header) if at not in used),
        interval_s=None if times is None else interval_of(times),
    )


def interval_of(times: Sequence[datetime]) -> int | None:
    """The Time column's step in seconds; a sentence when it goes backwards or is uneven (a gap
    would pass for a reading the model never saw). None for a single reading."""
    try:
        steps = {(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)}
    except TypeError:
        raise NilmInputError("The Time column mixes times with and without a time zone.") from None
    if not steps:
        return None
    if len(steps) > 1 or min(steps) <= 0 or not float(min(steps)).is_integer():
        quoted = ", ".join(f"{step:g} s" for step in sorted(steps)[:MAX_QUOTED_STEPS])
        raise NilmInputError(
            f"The Time column is not evenly spaced forward in whole seconds (steps of {quoted}): "
            "give one reading per interval, oldest first, without gaps."
        )
    return int(steps.pop())


def _find(keys: Sequence[str], wanted: set[str]) -> int | None:
    return next((at for at, key in enumerate(keys) if key in wanted), None)


def _watts(records: Sequence[Sequence[str]], at: int, column: str) -> tuple[float, ...]:
    values = []
    for line, record in enumerate(records, start=2):
        cell = record[at].strip()
        try:
            value = float(cell)
        except ValueError:
            shown = repr(cell) if cell else "empty"
            raise NilmInputError(
                f"Line {line}: {column.strip()} is {shown}, not a number of watts."
            ) from None
        if not math.isfinite(value):
            raise NilmInputError(f"Line {line}: {column.strip()} is {cell}, not a finite number.")
        values.append(value)
    return tuple(values)


def _times(records: Sequence[Sequence[str]], at: int, column: str) -> tuple[datetime, ...]:
    times = []
    for line, record in enumerate(records, start=2):
        cell = record[at].strip()
        try:
            times.append(datetime.fromisoformat(cell))
        except ValueError:
            raise NilmInputError(
                f"Line {line}: {column.strip()} is {cell!r}, not a date and time "
                "such as 2013-06-01 07:00:00."
            ) from None
    return tuple(times)
