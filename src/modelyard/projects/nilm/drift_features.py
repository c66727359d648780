"""NILM drift features: the one definition of what the monitor compares, for requests and reference.

Requests vary in length (one window to ``max_length`` readings) while drift is measured against
one reference, so features are never taken over a whole request: a request is described by
**chunks** of the model's window length (the one-window request a meter sends), one drift row
per chunk. A request of ``n`` readings gives ``min(n // window, MAX_CHUNK_ROWS)`` chunks, evenly
spaced from its first reading to its last (consecutive when they fit, so a one-window request
is one chunk); a request shorter than a window (a deployer may lower ``min_length``) is one
shorter chunk. Every row therefore describes ``window`` readings whatever the request's length,
and a long request logs at most :data:`MAX_CHUNK_ROWS` rows, so its log record stays small.

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

The server stores the features in its prediction log (``inputs.chunks``: column -> one value
per chunk; ``outputs[appliance].chunk_w``: the midpoint predictions), beside the request
summary it always logged. :func:`log_rows` turns a logged record back into drift rows; the
reference profile (:mod:`.reference`) is built by the same functions, so its columns are the
rows' keys. numpy only: the prediction server imports this module.
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
#: Key of the midpoint predictions in each appliance's logged outputs.
CHUNK_PREDICTIONS = "chunk_w"
#: Key of the chunk features in the logged inputs.
CHUNK_FEATURES = "chunks"
#: Decimals of the logged predictions (as in the response).
PREDICTION_DECIMALS = 2


def predicted_column(appliance: str) -> str:
    return f"predicted_{appliance}_w"


def columns(appliances: Sequence[str]) -> dict[str, Column]:
    """The profile's columns: every mains feature, then each appliance's prediction."""
    specs = {name: Column(kind="numerical", group="input") for name in INPUT_COLUMNS}
    for appliance in appliances:
        specs[predicted_column(appliance)] = Column(kind="numerical", group="prediction")
    return specs


def chunk_starts(length: int, window: int) -> np.ndarray:
    """First reading of each chunk of a series of ``length`` readings (see the module text)."""
    count = min(length // window, MAX_CHUNK_ROWS)
    if count <= 1:
        return np.zeros(1, dtype=np.intp)
    return (np.arange(count, dtype=np.intp) * (length - window)) // (count - 1)


def seconds_of_day(moment: datetime) -> float:
    """Wall-clock seconds since midnight of ``moment`` (its own time zone, if it has one)."""
    return moment.hour * 3600 + moment.minute * 60 + moment.second + moment.microsecond / 1e6


def chunk_features(
    chunks: np.ndarray, interval_s: int, day_seconds: np.ndarray | None
) -> dict[str, list[Value]]:
    """The mains features of each row of ``chunks`` (chunks x readings, watts), rounded.

    ``day_seconds``: wall-clock seconds of day of each chunk's first reading (None: unknown).
    A handful of ufunc reductions: this runs for every request the server logs.
    """
    count, readings = chunks.shape
    sums = np.add.reduce(chunks, axis=1)
    mean = sums / readings
    deviation = chunks - mean[:, None]
    values = [
        mean,
        np.sqrt(np.add.reduce(deviation * deviation, axis=1) / readings),
        np.maximum.reduce(chunks, axis=1),
        np.add.reduce(chunks > ABOVE_W, axis=1) / readings,
    ]
    if readings > 1:
        steps = np.abs(np.subtract(chunks[:, 1:], chunks[:, :-1])) > STEP_W
        values.append(np.add.reduce(steps, axis=1) * (3600 / ((readings - 1) * interval_s)))
    else:
        values.append(np.full(count, np.nan))
    if day_seconds is None:
        values += [np.full(count, np.nan)] * 2
    else:
        clock = np.remainder(day_seconds[:, None] + np.arange(readings) * interval_s, _DAY_S)
        night = (clock < DAY_START_S) | (clock >= NIGHT_START_S)
        night_readings = np.add.reduce(night, axis=1)
        night_sums = np.add.reduce(chunks * night, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            values.append((sums - night_sums) / (readings - night_readings))
            values.append(night_sums / night_readings)
    table = np.round(np.stack(values), 4).tolist()
    return {
        name: [None if math.isnan(v) else v for v in row]
        for name, row in zip(INPUT_COLUMNS, table, strict=True)
    }


def midpoint_predictions(
    watts: np.ndarray, starts: np.ndarray, length: int, window: int, first: int
) -> np.ndarray:
    """The predicted watts (chunks x appliances) at each chunk's midpoint reading; ``watts``
    holds one row per predicted reading from reading ``first`` on (``edges``)."""
    chosen: np.ndarray = watts[starts + (min(window, length) // 2 - first)].astype(np.float64)
    rounded: np.ndarray = np.round(chosen, PREDICTION_DECIMALS)
    return rounded


def request_features(
    series: np.ndarray,
    watts: np.ndarray,
    window: int,
    interval_s: int,
    first: int,
    start: datetime | None,
) -> tuple[dict[str, list[Value]], np.ndarray]:
    """The chunk features of one request's mains ``series`` and its chunks' midpoint
    predictions (chunks x appliances), from the response's ``watts``."""
    length = series.shape[0]
    starts = chunk_starts(length, window)
    size = min(window, length)
    chunks = (
        series[starts[:, None] + np.arange(size)] if starts.shape[0] > 1 else series[None, :size]
    )
    day = None if start is None else seconds_of_day(start) + starts * float(interval_s)
    return (
        chunk_features(chunks, interval_s, day),
        midpoint_predictions(watts, starts, length, window, first),
    )


def log_rows(inputs: Any, outputs: Any) -> list[dict[str, Value]]:
    """One prediction-log record (its ``inputs``/``outputs`` JSON) as drift rows.

    Records of this version give one row per logged chunk. Records of servers before the chunk
    features give one row from the request summary they logged (mean, spread and maximum of the
    whole request and each appliance's mean prediction: the same quantities for a one-window
    request, an approximation for a longer one) with None for the other features. Anything
    else gives no row; never an exception.
    """
    if not isinstance(inputs, Mapping):
        return []
    appliances = outputs if isinstance(outputs, Mapping) else {}
    chunks = inputs.get(CHUNK_FEATURES)
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
            for i in range(max(lengths, default=0))
        ]
    row: dict[str, Value] = dict.fromkeys(INPUT_COLUMNS)
    for name, key in (
        ("mains_mean_w", "mean_w"),
        ("mains_std_w", "std_w"),
        ("mains_max_w", "max_w"),
    ):
        row[name] = finite_number(inputs.get(key))
    for appliance, out in appliances.items():
        row[predicted_column(str(appliance))] = finite_number(_get(out, "mean_w"))
    return [row]


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, Mapping) else None


def _number_at(values: Any, index: int) -> float | None:
    return (
        finite_number(values[index]) if isinstance(values, list) and index < len(values) else None
    )
