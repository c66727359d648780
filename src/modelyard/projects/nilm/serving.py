"""NILM serving: a mains power series in, one power series per appliance out. Numpy only.

Edges (``edges`` in the request): ``pad`` (default) repeats the series' first and last reading
``window // 2`` times, so the response has exactly one value per input reading (see
:func:`..windows.pad_edges`); values within ``window // 2`` readings of either end see a partly
made-up window and are less reliable, and the response says how many readings that is
(``edge_readings``). ``valid`` predicts only readings with a full window of real data around them:
``length - window + 1`` values from reading ``window // 2`` on (``first_reading``). A meter that
sends its latest ``window`` readings gets exactly one value per appliance: the one-window request.

The prediction log stores summary features of the series (length, mean, spread, extremes) and of
each appliance's predicted power, not the series themselves, with the drift features of
:mod:`.drift_features` (per window-long chunk: mains features and the prediction at its
midpoint), which the monitor compares with the bundle's reference profile.
"""

import csv
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    create_model,
    model_validator,
)

from modelyard.core.errors import DataError
from modelyard.core.spreadsheet import SpreadsheetSafeWriter
from modelyard.projects.nilm.contract import NilmContract
from modelyard.projects.nilm.drift_features import request_record
from modelyard.projects.nilm.inference import predict_series, scores_to_watts, series_windows
from modelyard.projects.nilm.windows import window_view
from modelyard.serving.adapter import ExampleRequest, ServingAdapter
from modelyard.serving.context import PredictionEvent, record_prediction
from modelyard.serving.http_checks import (
    BodyLimits,
    LengthError,
    check_json,
    error_responses,
    json_body_schema,
    json_response,
    parse_json_body,
)
from modelyard.serving.value_units import WATTS

# Strict: a JSON number only; a string ("100") or a boolean is refused, not coerced to watts.
FiniteWatts = Annotated[float, Field(allow_inf_nan=False, strict=True)]
#: The example request's household: a steady base load and a kettle-like block in the middle.
_EXAMPLE_BASE_W = 250.0
_EXAMPLE_KETTLE_W = (2900.0, 2950.0, 2800.0)
_EXAMPLE_START = "2013-06-01T07:00:00"
#: Bytes one reading may take in a body (a float's longest repr is 24, plus comma and spaces).
_BYTES_PER_READING = 40
#: Bytes for everything else in a body (braces, keys, start, edges, interval_s, whitespace).
_BYTES_BESIDE_READINGS = 4096


_SERIES_DESCRIPTION = (
    "Mains active power in watts, oldest first, at the model's interval. "
    "Negative readings are treated as 0 W, as in training."
)
_INTERVAL_DESCRIPTION = "Sampling interval of the series; must match the model's."


class NilmRequest(BaseModel):
    """Whole-house mains power, one reading per sampling interval of the model."""

    model_config = ConfigDict(extra="forbid")

    aggregate_w: list[FiniteWatts] = Field(description=_SERIES_DESCRIPTION)
    interval_s: int | None = Field(default=None, strict=True, description=_INTERVAL_DESCRIPTION)
    # Strict: an ISO 8601 string only, not a number of seconds since 1970.
    start: datetime | None = Field(
        default=None,
        strict=True,
        description="Time of the first reading (ISO 8601); when given, timestamps are returned.",
    )
    edges: Literal["pad", "valid"] = Field(
        default="pad",
        description="pad: one value per reading (edges from padded windows); valid: only "
        "readings with a full window of real data around them.",
    )


def example_body(
    window: int, interval_s: int, min_length: int, max_length: int, max_aggregate_w: float
) -> dict[str, JsonValue]:
    """The example request: one window of readings (within the accepted lengths) of a 250 W
    base load with a kettle-like block in the middle, below the largest accepted reading."""
    length = min(max(window, min_length), max_length)
    series = [_EXAMPLE_BASE_W] * length
    middle = (length - len(_EXAMPLE_KETTLE_W)) // 2
    for offset, watts in enumerate(_EXAMPLE_KETTLE_W):
        if 0 <= middle + offset < length:
            series[middle + offset] = watts
    ceiling = max_aggregate_w if math.isfinite(max_aggregate_w) else math.inf
    readings: list[JsonValue] = [min(w, ceiling) for w in series]
    return {"aggregate_w": readings, "interval_s": interval_s, "start": _EXAMPLE_START}


def request_model(
    min_length: int,
    max_length: int,
    interval_s: int,
    max_aggregate_w: float,
    example: dict[str, JsonValue] | None = None,
) -> type[NilmRequest]:
    """:class:`NilmRequest` with the served model's limits in its schema: the series length
    (``minItems``/``maxItems``, enforced by pydantic), the interval (``enum``) and the largest
    reading (``maximum``), both enforced by :meth:`NilmServing.check` with a sentence that says
    why, so that the schema admits exactly what the route accepts; ``example`` is its example."""
    reading: Any = FiniteWatts
    if math.isfinite(max_aggregate_w):
        reading = Annotated[FiniteWatts, Field(json_schema_extra={"maximum": max_aggregate_w})]
    series = Annotated[
        list[reading],
        Field(min_length=min_length, max_length=max_length, description=_SERIES_DESCRIPTION),
    ]
    interval = Annotated[
        int | None,
        Field(
            default=None,
            strict=True,
            description=_INTERVAL_DESCRIPTION,
            json_schema_extra={"enum": [interval_s, None]},
        ),
    ]

    class ExampleNilmRequest(NilmRequest):
        model_config = ConfigDict(
            extra="forbid", json_schema_extra={"examples": [example]} if example else None
        )

    model: type[NilmRequest] = create_model(
        "NilmRequest", __base__=ExampleNilmRequest, aggregate_w=(series, ...), interval_s=interval
    )
    return model


def body_limits(max_length: int) -> BodyLimits:
    """What a valid request holds at most: one object, one array, four keys and two string
    values, ``max_length`` readings."""
    return BodyLimits(
        max_bytes=max_length * _BYTES_PER_READING + _BYTES_BESIDE_READINGS,
        max_containers=2,
        max_strings=6,
        max_separators=max_length + 2,
        too_many=f"the body holds far more values than a series of {max_length} readings",
    )


class NilmResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "nilm-seq2point",
                    "version": "20261122-120000",
                    "interval_s": 60,
                    "length": 3,
                    "first_reading": 0,
                    "edge_readings": 49,
                    "appliances": {"kettle": [0.0, 2650.2, 0.0], "microwave": [0.0, 0.0, 0.0]},
                    "timestamps": None,
                }
            ]
        }
    )

    model: str
    version: str
    interval_s: int
    length: int = Field(description="Readings in the request.")
    first_reading: int = Field(
        default=0, description="Index of the reading the first value belongs to (0 with pad)."
    )
    edge_readings: int = Field(
        description="Readings at each end predicted from padded windows (0 with valid)."
    )
    appliances: dict[str, list[float]] = Field(description="Predicted power (W) per appliance.")
    timestamps: list[datetime] | None = None


class NilmServing(ServingAdapter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The bundle's contract, with the accepted lengths a deployer overrides (serve options).
        self.contract = NilmContract.from_manifest(self.bundle.manifest).with_lengths(
            self.settings.get("min_length"), self.settings.get("max_length")
        )
        self.window = self.contract.window
        self.interval_s = self.contract.interval_s
        self.appliances = self.contract.names
        self.normalisation = self.contract.normalisation
        self.min_length = self.contract.min_length
        self.max_length = self.contract.max_length
        self.max_aggregate_w = self.contract.max_aggregate_w
        self.example = example_body(
            self.window, self.interval_s, self.min_length, self.max_length, self.max_aggregate_w
        )
        self.Request = request_model(
            self.min_length, self.max_length, self.interval_s, self.max_aggregate_w, self.example
        )
        self.request_adapter = TypeAdapter(self.Request)
        self.body_limits = body_limits(self.max_length)
        self.length_error = LengthError(("aggregate_w",), self.length_sentence)

    def length_sentence(self, readings: int) -> str:
        return (
            f"aggregate_w has {readings} readings; between "
            f"{self.min_length} and {self.max_length} are accepted"
        )

    def check_contract(self) -> None:
        """One window of readings in, one value per appliance out."""
        self.require_axis("inputs", -1, self.window, f"window {self.window}")
        self.require_axis("outputs", -1, len(self.appliances), f"appliances {self.appliances}")

    def task_info(self) -> dict[str, Any]:
        return self.contract.request_bounds().model_dump(mode="json")

    def predict_watts(self, aggregate_w: np.ndarray) -> np.ndarray:
        clean = np.maximum(aggregate_w.astype(np.float32), 0.0)
        return predict_series(clean, self.model.run, self.normalisation, self.window)

    async def predict_watts_async(self, aggregate_w: np.ndarray, edges: str) -> np.ndarray:
        """Watts for every predicted reading: all of them (pad) or the full-window ones (valid)."""
        clean = np.maximum(aggregate_w.astype(np.float32), 0.0)
        if edges == "valid":
            half = self.window // 2
            windows = window_view(self.normalisation.normalise_aggregate(clean), self.window)
            mains = clean[half : clean.size - half]
        else:
            windows = series_windows(clean, self.normalisation, self.window)
            mains = clean
        scores = await self.model.run_async(np.ascontiguousarray(windows))
        return scores_to_watts(scores, mains, self.normalisation)

    def example_request(self) -> ExampleRequest:
        return ExampleRequest(json=self.example)

    def warm_up(self) -> None:
        self.predict_watts(np.asarray(self.example["aggregate_w"], dtype=np.float64))

    def check(self, request: NilmRequest) -> np.ndarray:
        """Reject what the model cannot answer with a precise 422."""
        series = np.asarray(request.aggregate_w, dtype=np.float64)
        if request.interval_s is not None and request.interval_s != self.interval_s:
            raise HTTPException(
                422,
                f"interval_s is {request.interval_s}; this model needs "
                f"readings every {self.interval_s} s",
            )
        if not self.min_length <= series.size <= self.max_length:
            raise HTTPException(422, self.length_sentence(series.size))
        if request.edges == "valid" and series.size < self.window:
            raise HTTPException(
                422,
                f"edges=valid needs at least one full window: {self.window} readings, "
                f"got {series.size}",
            )
        if series.size and series.max() > self.max_aggregate_w:
            raise HTTPException(
                422,
                f"aggregate_w holds {series.max():.0f} W, above the "
                f"physical limit of {self.max_aggregate_w:.0f} W",
            )
        if request.start is not None:
            try:
                request.start + (series.size - 1) * timedelta(seconds=self.interval_s)
            except OverflowError:
                raise HTTPException(
                    422, "start is too late: the series' timestamps would pass year 9999"
                ) from None
        return series

    def router(self) -> APIRouter:
        router = APIRouter(tags=["prediction"])
        manifest = self.bundle.manifest

        @router.post(
            "/predict",
            response_model=NilmResponse,
            openapi_extra=json_body_schema(self.Request.model_json_schema()),
            responses=error_responses(
                {
                    413: "Body too large for the longest accepted series",
                    415: "Body is not JSON",
                    422: "Not JSON or not UTF-8, series too short/long, NaN, bad values",
                }
            ),
        )
        async def predict(request: Request) -> Response:
            """Estimate each appliance's power from the mains series (same length out as in)."""
            check_json(request)  # called directly: FastAPI's dependency solving costs more
            body = await parse_json_body(
                request, self.request_adapter, self.body_limits, self.length_error
            )
            series = self.check(body)
            watts = await self.predict_watts_async(series, body.edges)
            first = self.window // 2 if body.edges == "valid" else 0
            timestamps = None
            if body.start is not None:
                step = timedelta(seconds=self.interval_s)
                timestamps = [body.start + (first + i) * step for i in range(watts.shape[0])]
            record_prediction(self.describe(series, body, watts))
            rounded = np.round(np.ascontiguousarray(watts.T), 2)  # one row per appliance
            return json_response(
                {
                    "model": manifest.name,
                    "version": manifest.version,
                    "interval_s": self.interval_s,
                    "length": int(series.size),
                    "first_reading": first,
                    "edge_readings": 0 if body.edges == "valid" else self.window // 2,
                    "appliances": dict(zip(self.appliances, rounded, strict=True)),
                    "timestamps": timestamps,
                }
            )

        return router

    def describe(
        self, series: np.ndarray, request: NilmRequest, watts: np.ndarray
    ) -> PredictionEvent:
        """Summary features of the series and of each appliance's prediction, with the drift
        features (:mod:`.drift_features`), for the log."""
        hours = self.interval_s / 3600
        first = self.window // 2 if request.edges == "valid" else 0
        features, drift = request_record(
            series, watts, self.window, self.interval_s, first, request.start
        )
        inputs = {
            "length": series.size,
            "edges": request.edges,
            "start": None if request.start is None else request.start.isoformat(),
            **features,
        }
        means = np.add.reduce(watts, axis=0) / watts.shape[0]
        peaks = np.maximum.reduce(watts, axis=0)
        outputs = {
            a: {
                "mean_w": round(float(means[j]), 2),
                "max_w": round(float(peaks[j]), 2),
                "energy_wh": round(float(means[j]) * watts.shape[0] * hours, 3),
                **drift[j],
            }
            for j, a in enumerate(self.appliances)
        }
        values = {a: [float(means[j])] for j, a in enumerate(self.appliances)}
        return PredictionEvent(inputs=inputs, outputs=outputs, values=values, unit=WATTS)

    def predict_file(self, source: Path, output: Path) -> int:
        """CSV with ``Aggregate`` (and optional ``Time``) column -> CSV with appliance columns."""
        times, series = read_mains_csv(source)
        if series.size < self.window // 2 + 1:
            raise DataError(
                f"{source} has {series.size} readings; at least {self.window // 2 + 1} are needed"
            )
        watts = self.predict_watts(series)
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", newline="") as handle:
            writer = SpreadsheetSafeWriter(handle)  # the Time column is copied input text
            writer.writerow(["Time", "Aggregate", *self.appliances])
            for i in range(series.size):
                writer.writerow(
                    [times[i] if times else i, f"{series[i]:.3f}", *(f"{v:.2f}" for v in watts[i])]
                )
        return int(series.size)

    # -- ground truth (POST /feedback) -------------------------------------------------------
    @cached_property
    def _truth(self) -> type[BaseModel]:
        return truth_model(self.appliances, self.max_length, self.max_aggregate_w)

    def truth_model(self) -> type[BaseModel]:
        """``{"appliances": {NAME: [watts, ...] | mean_watts}}``: for each metered appliance
        (at least one) its measured power per predicted reading, or its mean over them."""
        return self._truth

    def truth_limits(self) -> BodyLimits:
        count = len(self.appliances)
        return BodyLimits(
            max_bytes=count * (self.max_length * _BYTES_PER_READING + 256) + 1024,
            max_containers=count + 2,
            max_strings=count + 2,
            max_separators=count * (self.max_length + 1) + 2,
            too_many=f"a truth holds far more values than {count} series of {self.max_length}",
        )

    def truth_mismatch(self, truth: dict[str, Any], inputs: Any, outputs: Any) -> str | None:
        """A measured series has one value per predicted reading: the request's length with
        ``edges=pad``, ``length - window + 1`` with ``valid`` (as logged in ``inputs``)."""
        length = inputs.get("length") if isinstance(inputs, dict) else None
        if not isinstance(length, int):
            return None
        valid = inputs.get("edges") == "valid"
        predicted = length - self.window + 1 if valid else length
        for name, measured in truth.get("appliances", {}).items():
            if isinstance(measured, list) and len(measured) != predicted:
                return (
                    f"truth for {name} has {len(measured)} readings; the prediction had {predicted}"
                )
        return None


def read_mains_csv(path: Path) -> tuple[list[str] | None, np.ndarray]:
    """Read the ``Aggregate`` column (any case; or ``mains``, as the bundle's example day names
    it) and the ``Time`` column when present."""
    if not path.is_file():
        raise DataError(f"input CSV not found: {path}")
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if not rows:
        raise DataError(f"{path} has no data rows")
    columns = {name.strip().lower(): name for name in rows[0] if name}
    if "aggregate" not in columns and "mains" in columns:
        columns["aggregate"] = columns["mains"]
    if "aggregate" not in columns:
        raise DataError(f"{path} has no 'Aggregate' column (columns: {list(rows[0])})")
    values = []
    for line, row in enumerate(rows, start=2):
        try:
            value = float(row[columns["aggregate"]])
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path}:{line}: Aggregate is not a number") from exc
        if not np.isfinite(value):
            raise DataError(f"{path}:{line}: Aggregate is not finite")
        values.append(value)
    times = [row[columns["time"]] for row in rows] if "time" in columns else None
    return times, np.asarray(values, dtype=np.float64)


class _MeteredAppliances(BaseModel):
    """At least one appliance's measurement."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    @model_validator(mode="after")
    def _at_least_one(self) -> "_MeteredAppliances":
        if all(value is None for value in self.__dict__.values()):
            raise ValueError("give the measured power of at least one appliance")
        return self


def truth_model(
    appliances: Sequence[str], max_length: int, max_aggregate_w: float
) -> type[BaseModel]:
    """The NILM truth: per appliance a measured series (watts >= 0, at most the mains' physical
    limit) or its mean."""
    ceiling = max_aggregate_w if math.isfinite(max_aggregate_w) else None
    watts: Any = Annotated[FiniteWatts, Field(ge=0, le=ceiling)]
    series: Any = Annotated[list[watts], Field(min_length=1, max_length=max_length)]
    # left out, not null: an appliance not metered is not sent (the default is never validated)
    fields: dict[str, Any] = dict.fromkeys(appliances, (series | watts, None))
    metered = create_model("MeteredAppliances", __base__=_MeteredAppliances, **fields)
    model: type[BaseModel] = create_model(
        "NilmTruth",
        __config__=ConfigDict(extra="forbid"),
        appliances=(metered, Field(description="Measured power (W) per appliance.")),
    )
    return model
