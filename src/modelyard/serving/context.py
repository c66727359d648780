"""Per-request context shared by the middleware, the task routes and the logs.

The middleware opens a :class:`RequestContext` for every HTTP request (its id, its start time) in a
context variable; task routes describe what they predicted with :func:`record_prediction`; once
the response has been sent, the middleware turns that description into metrics and a row of the
prediction log, with the status the client really received. Context variables follow the request
into worker threads, so sync routes can record too.
"""

import os
import random
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from modelyard.serving.value_units import ValueUnit

REQUEST_ID_HEADER = "X-Request-ID"
#: Returned on every response: the server-generated id, the prediction log's key of the request
#: (``predictions.server_request_id``) and what ``POST /feedback`` takes as ``prediction_id``.
PREDICTION_ID_HEADER = "X-Prediction-ID"
_ids = random.Random()  # seeded from the system's entropy at start-up
_MAX_ID_LENGTH = 64
# a forked worker must not draw the same ids as its parent
os.register_at_fork(after_in_child=_ids.seed)


def new_server_request_id() -> str:
    """32 hex digits: the time in milliseconds (12), then 80 random bits (20).

    Unique in practice (80 bits per millisecond), and in time order, so that the prediction
    log's unique index grows at its end instead of at random places. Random bits come from the
    process's seeded generator: cheaper per request than os.urandom (a system call) or uuid4.
    """
    return f"{time.time_ns() // 1_000_000:012x}{_ids.getrandbits(80):020x}"


def _random_id() -> str:
    return f"{_ids.getrandbits(128):032x}"


@dataclass(frozen=True)
class PredictionEvent:
    """What one request predicted, as the task describes it.

    ``inputs``/``outputs`` are JSON-ready (raw values when small, summary features otherwise);
    ``values`` are numbers whose distribution is exported per output name, all in ``unit`` (the
    histogram ``modelyard_prediction_<unit>``: one unit per metric); ``labels`` are the
    predicted classes of a classifier.
    """

    inputs: Any
    outputs: Any
    values: Mapping[str, Sequence[float]] = field(default_factory=dict)
    labels: Sequence[str] = ()
    unit: ValueUnit | None = None

    def __post_init__(self) -> None:
        if self.values and self.unit is None:
            raise ValueError("a PredictionEvent with values must say their unit")


@dataclass
class RequestContext:
    #: the client's X-Request-ID when sane (kept for tracing), else a generated one
    request_id: str
    #: generated here for every request, whatever the client sent: the prediction log's key
    server_request_id: str = field(default_factory=new_server_request_id)
    started: float = field(default_factory=time.perf_counter)
    prediction: PredictionEvent | None = None
    #: version of the model that answered (set when the request reaches the task's routes)
    model_version: str | None = None


current_request: ContextVar[RequestContext | None] = ContextVar("modelyard_request", default=None)


def request_id_from(header: str | None) -> str:
    """The caller's id when it is a sane token (printable, short), else 32 random hex digits."""
    if header and len(header) <= _MAX_ID_LENGTH and header.isascii() and header.isprintable():
        cleaned = header.strip()
        if cleaned and all(c.isalnum() or c in "-_.:" for c in cleaned):
            return cleaned
    return _random_id()


def current_request_id() -> str | None:
    context = current_request.get()
    return None if context is None else context.request_id


def record_prediction(event: PredictionEvent) -> None:
    """Attach ``event`` to the current request (no-op outside a request, e.g. offline)."""
    context = current_request.get()
    if context is not None:
        context.prediction = event
