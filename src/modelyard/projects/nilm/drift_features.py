"""NILM drift features: the one definition of what the monitor compares, for requests and reference.

Requests vary in length (one window to ``max_length`` readings) while drift is measured against
one reference, so features are never taken over a whole request: a request is described by
**chunks** of the model's window length (the one-window request a meter sends), one drift row
per chunk. A request of ``n`` readings gives ``min(n // window, MAX_CHUNK_ROWS)`` chunks, evenly
spaced from its first reading to its last (consecutive when they fit, so a one-window request
is one chunk); a request shorter than a window (a deployer may lower ``min_length``) is one
shorter chunk. Every row therefore describes ``window`` readings whatever the request's length,
and a long request logs at most :data:`MAX_CHUNK_ROWS` chunks.

Per chunk, of the mains readings as sent (``mains_*``, :func:`chunk_row`): mean, standard
deviation and maximum (W), the share of readings above :data:`ABOVE_W`, the number of steps of
more than :data:`STEP_W` between consecutive readings per hour, and, when the request gives
``start``, the mean of the readings in the day (07:00-23:00 wall-clock time of ``start``) and
at night (``mains_day_mean_w``, ``mains_night_mean_w``; None for a period the chunk does not
touch, and both None without ``start``). A day/night *ratio* per row would be undefined for
most chunks (a window of 99 one-minute readings rarely spans both periods); the two means give
the same comparison over a window of rows.

Per appliance (``predicted_<name>_w``): the predicted power at the chunk's midpoint reading,
i.e. the model's output for the chunk as one window. It is the one prediction every request
has from a full window of real readings, whatever its length and ``edges``, and exactly what
the reference gets by running the exported model on its sampled windows.

What the server logs (:func:`logged_chunks`, :func:`midpoint_predictions`): the chunks' readings
as sent (``inputs.chunks``, with ``inputs.chunk_starts`` and ``inputs.interval_s``) and the
midpoint predictions (``outputs[appliance].chunk_w``), beside the request summary it always
logged. The features are computed when the log is read (:func:`log_rows`, in the monitor's
process), not per request: measured side by side, computing them in the server cost about a
tenth of the CPU time of a one-window request, while referencing the request's own list of
readings costs nothing (``benchmarks/logging_cost.py``). It also keeps the features
recomputable from the log when their definition changes. The reference profile
(:mod:`.reference`) is built through :func:`log_rows` too, so its columns are the rows' keys.
numpy only: the prediction server imports this module.
"""

import functools
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from modelyard.core.reference_profile import Column, Value, finite_number

#: Most drift rows one request logs (evenly spaced chunks of a longer request).
MAX_CHUNK_ROWS = 8
#: Readings above this count as a large load (kettle, oven, washing machine heating).
ABOVE_W = 2000.0
#: A change between consecutive readings larger than this counts as a step (a switch on/off).
STEP_W = 200.0
#: Day is 07:00 to 23:00 wall-clock time; night the rest.
DAY_START_S = 7 * 3600
NIGHT_START_S = 23 * 3600
_DAY_S = 86_400
#: The mains features, in order (the reference profile's input columns).
INPUT_COLUMNS = (
    "mains_mean_w",
    "mains_std_w",
    "mains_max_w",
    "mains_above_2kw_share",
    "mains_steps_per_hour",
    "mains_day_mean_w",
    "mains_night_mean_w",
)
#: Keys of the logged inputs: each chunk's readings, its first reading, the interval.
CHUNKS = "chunks"
CHUNK_STARTS = "chunk_starts"
INTERVAL = "interval_s"
#: Key of the midpoint predictions in each appliance's logged outputs.
CHUNK_PREDICTIONS = "chunk_w"
#: Logged predictions are rounded to 1/_PREDICTION_SCALE W (two decimals, as the response).
_PREDICTION_SCALE = 100
#: Features are rounded to 1/_SCALE: far finer than any drift test.
_SCALE = 10_000


def predicted_column(appliance: str) -> str:
    return f"predicted_{appliance}_w"


def columns(appliances: Sequence[str]) -> dict[str, Column]:
    """The profile's columns: every mains feature, then each appliance's prediction."""
    specs = {name: Column(kind="numerical", group="input") for name in INPUT_COLUMNS}
    for appliance in appliances:
        specs[predicted_column(appliance)] = Column(kind="numerical", group="prediction")
    return specs


def chunk_starts(length: int, window: int) -> list[int]:
    """First reading of each chunk of a series of ``length`` readings (see the module text)."""
    count = min(length // window, MAX_CHUNK_ROWS)
    if count <= 1:
        return [0]
    return [(i * (length - window)) // (count - 1) for i in range(count)]


def seconds_of_day(moment: datetime) -> float:
    """Wall-clock seconds since midnight of ``moment`` (its own time zone, if it has one)."""
    return moment.hour * 3600 + moment.minute * 60 + moment.second + moment.microsecond / 1e6


def chunk_row(
    chunk: np.ndarray, interval_s: int | None, day_second: float | None
) -> list[float | None]:
    """The mains features of one chunk (1-d, watts), in :data:`INPUT_COLUMNS` order, rounded;
    ``day_second``: wall-clock seconds since midnight of its first reading (None: unknown).

    Run for every logged chunk the monitor reads and every reference window, so it stays a few
    cheap numpy calls: sums as ``dot`` products (a variance from the sum of squares is exact
    enough for watts), counts with ``count_nonzero``.
    """
    readings = chunk.shape[0]
    total = float(np.dot(chunk, _ones(readings)))
    mean = total / readings
    variance = max(float(np.dot(chunk, chunk)) / readings - mean * mean, 0.0)
    row: list[float | None] = [
        _round(mean),
        _round(math.sqrt(variance)),
        _round(float(np.maximum.reduce(chunk))),
        _round(np.count_nonzero(chunk > ABOVE_W) / readings),
        None,
        None,
        None,
    ]
    if interval_s is None:
        return row
    if readings > 1:
        change = np.subtract(chunk[1:], chunk[:-1])
        steps = np.count_nonzero(np.abs(change) > STEP_W)
        row[4] = _round(steps * 3600 / ((readings - 1) * interval_s))
    if day_second is not None:
        night, night_total = 0, 0.0
        for first, stop in night_ranges(day_second, readings, interval_s):
            night += stop - first
            night_total += float(np.add.reduce(chunk[first:stop]))
        if night < readings:
            row[5] = _round((total - night_total) / (readings - night))
        if night:
            row[6] = _round(night_total / night)
    return row


@functools.lru_cache(maxsize=16)
def _ones(readings: int) -> np.ndarray:
    """A read-only vector of ones: its ``dot`` with a chunk is the chunk's sum."""
    ones = np.ones(readings)
    ones.flags.writeable = False
    return ones


def night_ranges(day_second: float, readings: int, interval_s: int) -> list[tuple[int, int]]:
    """Index ranges ``[first, stop)`` of the readings taken at night, for readings every
    ``interval_s`` from ``day_second`` (seconds since midnight): worked out from the clock
    instead of testing every reading (usually none or one range per window)."""
    span = readings * interval_s
    ranges = []
    # night n runs from 23:00 of day n to 07:00 of day n + 1, in seconds from the first reading
    night = math.floor((day_second - (DAY_START_S + _DAY_S)) / _DAY_S)
    while (begin := NIGHT_START_S + night * _DAY_S - day_second) < span:
        end = begin + (DAY_START_S + _DAY_S - NIGHT_START_S)
        first = max(0, math.ceil(begin / interval_s))
        stop = min(readings, math.ceil(end / interval_s))
        if first < stop:
            ranges.append((first, stop))
        night += 1
    return ranges


def _round(value: float) -> float:
    """``value`` to 1/_SCALE (faster than ``round(value, 4)``, which counts here)."""
    return round(value * _SCALE) / _SCALE


def logged_chunks(readings: list[float], window: int) -> tuple[list[int], list[list[float]]]:
    """The first reading and the readings of each chunk of a request's series ``readings`` (the
    request's own list: a one-window request's chunk is that list, nothing is copied)."""
    starts = chunk_starts(len(readings), window)
    size = min(window, len(readings))
    if size == len(readings):
        return starts, [readings]
    return starts, [readings[at : at + size] for at in starts]


def midpoint_predictions(
    watts: np.ndarray, starts: list[int], length: int, window: int, first: int
) -> list[list[float]]:
    """Each appliance's predicted watts at each chunk's midpoint reading (one list per
    appliance), rounded like the response; ``watts`` holds one row per predicted reading from
    reading ``first`` on (``edges``)."""
    middle = min(window, length) // 2 - first
    scale = _PREDICTION_SCALE
    per_chunk = [watts[at + middle].tolist() for at in starts]
    return [[round(v * scale) / scale for v in c] for c in zip(*per_chunk, strict=True)]


def log_rows(inputs: Any, outputs: Any) -> list[dict[str, Value]]:
    """One prediction-log record (its ``inputs``/``outputs`` JSON) as drift rows.

    Records of this version give one row per logged chunk, its features computed here
    (:func:`chunk_row`; a chunk that is not a list of finite numbers gives None features).
    Records of servers before the chunks give one row from the request summary they logged
    (mean, spread and maximum of the whole request and each appliance's mean prediction: the
    same quantities for a one-window request, an approximation for a longer one) with None for
    the other features. Anything else gives no row; never an exception.
    """
    if not isinstance(inputs, Mapping):
        return []
    appliances = outputs if isinstance(outputs, Mapping) else {}
    chunks = inputs.get(CHUNKS)
    if not isinstance(chunks, list):
        return [_summary_row(inputs, appliances)]
    interval = inputs.get(INTERVAL)
    interval_s = interval if isinstance(interval, int) and not isinstance(interval, bool) else None
    if interval_s is not None and interval_s <= 0:
        interval_s = None
    start = _start_second(inputs.get("start"))
    starts = inputs.get(CHUNK_STARTS)
    rows = []
    for i, readings in enumerate(chunks):
        at = _number_at(starts, i)
        day = None if start is None or at is None or interval_s is None else start + at * interval_s
        values = _readings(readings)
        features = (
            [None] * len(INPUT_COLUMNS) if values is None else chunk_row(values, interval_s, day)
        )
        row: dict[str, Value] = dict(zip(INPUT_COLUMNS, features, strict=True))
        for name, out in appliances.items():
            row[predicted_column(str(name))] = _number_at(_get(out, CHUNK_PREDICTIONS), i)
        rows.append(row)
    return rows


def _summary_row(inputs: Mapping[str, Any], appliances: Mapping[Any, Any]) -> dict[str, Value]:
    row: dict[str, Value] = dict.fromkeys(INPUT_COLUMNS)
    for name, key in (
        ("mains_mean_w", "mean_w"),
        ("mains_std_w", "std_w"),
        ("mains_max_w", "max_w"),
    ):
        row[name] = finite_number(inputs.get(key))
    for appliance, out in appliances.items():
        row[predicted_column(str(appliance))] = finite_number(_get(out, "mean_w"))
    return row


def _readings(values: Any) -> np.ndarray | None:
    """A logged chunk as watts; None unless it is a non-empty list of finite numbers."""
    if not isinstance(values, list) or not values:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return None
    array = np.asarray(values, dtype=np.float64)
    return array if bool(np.isfinite(array).all()) else None


def _start_second(value: Any) -> float | None:
    """Seconds since midnight of a logged ``start`` (ISO 8601); None when absent or invalid."""
    if not isinstance(value, str):
        return None
    try:
        return seconds_of_day(datetime.fromisoformat(value))
    except ValueError:
        return None


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, Mapping) else None


def _number_at(values: Any, index: int) -> float | None:
    return (
        finite_number(values[index]) if isinstance(values, list) and index < len(values) else None
    )
