"""NILM drift features: the one definition of what the monitor compares, for requests and reference.

Requests vary in length (one window to ``max_length`` readings) while drift is measured against
one reference, so features are never taken over a whole long request: a request is described
by **chunks** of the model's window length (the one-window request a meter sends), one drift
row per chunk. A request of at most one window is one chunk, the request itself; a longer one of
``n`` readings gives ``min(n // window, MAX_CHUNK_ROWS)`` chunks of ``window`` readings, evenly
spaced from its first reading to its last (consecutive when they fit). Every row therefore
describes one window of readings whatever the request's length, and a long request logs at
most :data:`MAX_CHUNK_ROWS` rows.

Per chunk, of the mains readings as sent (``mains_*``): mean, standard deviation and maximum
(W), the share of readings above :data:`ABOVE_W`, the number of steps of more than
:data:`STEP_W` between consecutive readings per hour, and, when the request gives ``start``,
the mean of the readings in the day (07:00-23:00 wall-clock time of ``start``) and at night
(``mains_day_mean_w``, ``mains_night_mean_w``; None for a period the chunk does not touch, and
both None without ``start``). A day/night *ratio* per row would be undefined for most chunks
(a window of 99 one-minute readings rarely spans both periods); the two means give the same
comparison over a window of rows.

Per appliance (``predicted_<name>_w``): the predicted power at the chunk's midpoint reading,
i.e. the model's output for the chunk as one window. It is the one prediction every request
has from a full window of real readings, whatever its length and ``edges``, and exactly what
the reference gets by running the exported model on its sampled windows.

What the server logs (:func:`request_record`), beside the request summary it always logged
(``length``, ``edges``, ``start``, ``mean_w``, ``std_w``, ``min_w``, ``max_w``): for a request
of at most one window, whose summary is its one chunk's mean, spread and maximum, the other
features as plain numbers (``above_2kw_share``, ``steps_per_hour``, ``day_mean_w``,
``night_mean_w``) and each appliance's ``midpoint_w`` (not when the response holds only that
value: its ``mean_w`` is it); for a longer request, ``chunks`` (each feature, one value per
chunk) and each appliance's ``chunk_w`` (one value per chunk). The common small request thus
costs a few cheap numpy calls and no new containers (lists kept alive until the log is flushed
cost measurably more; ``benchmarks/logging_cost.py`` compares two checkouts).
:func:`log_rows` turns a logged record back into drift rows, reading records of older servers
too; the reference profile (:mod:`.reference`) is built through :func:`request_record` and
:func:`log_rows` as well, so its columns are the rows' keys. numpy only: the server imports it.
"""

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
#: Profile column -> its key in a logged one-window record (the summary and the extras).
_LOGGED_AS = {
    "mains_mean_w": "mean_w",
    "mains_std_w": "std_w",
    "mains_max_w": "max_w",
    "mains_above_2kw_share": "above_2kw_share",
    "mains_steps_per_hour": "steps_per_hour",
    "mains_day_mean_w": "day_mean_w",
    "mains_night_mean_w": "night_mean_w",
}
#: The mains features, in order (the reference profile's input columns).
INPUT_COLUMNS = tuple(_LOGGED_AS)
#: Keys of a longer request's chunk features (inputs) and chunk predictions (per appliance).
CHUNKS = "chunks"
CHUNK_PREDICTIONS = "chunk_w"
#: Key of a one-window request's midpoint prediction (per appliance).
MIDPOINT_PREDICTION = "midpoint_w"


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


def summary(series: np.ndarray) -> dict[str, float]:
    """Length-free summary of a series (W): mean, spread, extremes, rounded for the log."""
    # ufunc reductions directly: numpy's wrappers cost more than the sums on ~100 readings
    count = series.size
    mean = float(np.add.reduce(series)) / count
    spread = float(np.add.reduce((series - mean) ** 2)) / count
    return {
        "mean_w": round(mean, 2),
        "std_w": round(spread**0.5, 2),
        "min_w": round(float(np.minimum.reduce(series)), 2),
        "max_w": round(float(np.maximum.reduce(series)), 2),
    }


def extras(series: np.ndarray, interval_s: int, day_second: float | None) -> dict[str, Any]:
    """The features beyond the summary, of one chunk (``day_second``: wall-clock seconds since
    midnight of its first reading, None when unknown). A few cheap numpy calls: this runs for
    every request."""
    readings = series.size
    steps = 0
    if readings > 1:
        steps = int(np.count_nonzero(np.abs(series[1:] - series[:-1]) > STEP_W))
    day_mean = night_mean = None
    if day_second is not None:
        night, night_total = 0, 0.0
        for first, stop in night_ranges(day_second, readings, interval_s):
            night += stop - first
            night_total += float(np.add.reduce(series[first:stop]))
        if night < readings:
            total = float(np.add.reduce(series))
            day_mean = round((total - night_total) / (readings - night), 2)
        if night:
            night_mean = round(night_total / night, 2)
    return {
        "above_2kw_share": round(np.count_nonzero(series > ABOVE_W) / readings, 4),
        "steps_per_hour": (
            round(steps * 3600 / ((readings - 1) * interval_s), 4) if readings > 1 else None
        ),
        "day_mean_w": day_mean,
        "night_mean_w": night_mean,
    }


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


def request_record(
    series: np.ndarray,
    watts: np.ndarray,
    window: int,
    interval_s: int,
    first: int,
    start: datetime | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What a request logs for drift: entries for its ``inputs`` (the summary included) and,
    per appliance, entries for its ``outputs``. ``watts`` holds one row per predicted reading
    from reading ``first`` on (``edges``)."""
    length = series.size
    day = None if start is None else seconds_of_day(start)
    inputs: dict[str, Any] = summary(series)
    if length <= window:
        inputs.update(extras(series, interval_s, day))
        if watts.shape[0] == 1:  # the only prediction (edges=valid): the response's mean_w
            return inputs, [{} for _ in range(watts.shape[1])]
        middle = watts[length // 2 - first].tolist()
        return inputs, [{MIDPOINT_PREDICTION: round(v, 2)} for v in middle]
    rows: list[list[Value]] = []
    predicted = []
    for at in chunk_starts(length, window):
        chunk = series[at : at + window]
        features = {
            **summary(chunk),
            **extras(chunk, interval_s, None if day is None else day + at * interval_s),
        }
        rows.append([features[_LOGGED_AS[name]] for name in INPUT_COLUMNS])
        predicted.append(watts[at + window // 2 - first].tolist())
    inputs[CHUNKS] = {name: [row[j] for row in rows] for j, name in enumerate(INPUT_COLUMNS)}
    return inputs, [
        {CHUNK_PREDICTIONS: [round(v, 2) for v in values]}
        for values in zip(*predicted, strict=True)
    ]


def log_rows(inputs: Any, outputs: Any) -> list[dict[str, Value]]:
    """One prediction-log record (its ``inputs``/``outputs`` JSON) as drift rows.

    A longer request gives one row per logged chunk; a one-window request (and any record of a
    server before the drift features) gives one row from its summary and the extras, None for
    what it did not log (an older server logged the summary and each appliance's ``mean_w``:
    the same quantities for a one-window request, an approximation for a longer one). Anything
    else (a record the log truncated: ``{"truncated": true, ...}``) gives no row; never an
    exception.
    """
    if not isinstance(inputs, Mapping) or inputs.get("truncated") is True:
        return []
    appliances = outputs if isinstance(outputs, Mapping) else {}
    chunks = inputs.get(CHUNKS)
    if isinstance(chunks, Mapping):
        lengths = [len(v) for v in chunks.values() if isinstance(v, list)]
        return [
            {
                **{name: _number_at(chunks.get(name), i) for name in INPUT_COLUMNS},
                **{
                    predicted_column(str(name)): _number_at(_get(out, CHUNK_PREDICTIONS), i)
                    for name, out in appliances.items()
                },
            }
            for i in range(min(max(lengths, default=0), MAX_CHUNK_ROWS))
        ]
    row: dict[str, Value] = {
        name: finite_number(inputs.get(key)) for name, key in _LOGGED_AS.items()
    }
    for appliance, out in appliances.items():
        midpoint = _get(out, MIDPOINT_PREDICTION)
        value = _get(out, "mean_w") if midpoint is None else midpoint
        row[predicted_column(str(appliance))] = finite_number(value)
    return [row]


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, Mapping) else None


def _number_at(values: Any, index: int) -> float | None:
    if isinstance(values, list) and index < len(values):
        return finite_number(values[index])
    return None
