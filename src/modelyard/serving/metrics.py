"""Prometheus metrics of one server, correct with several worker processes.

With one worker the metrics live in this process. With several, ``modelyard serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers start; every worker then
writes its values to memory-mapped files there, and ``/metrics`` (answered by whichever worker
gets the scrape) adds up all of them. Gauges say how they combine (``livesum``, ``liveall``,
``livemax``).

Naming: a gauge's name ends with its unit noun (``_records``, ``_bytes``, ``_requests``) or it is
a 0/1 state (``modelyard_ready``, ``..._database_up``, ``modelyard_model_info``); a histogram of
predicted values holds one unit (:mod:`.value_units`); the series of one counter add up to a
meaningful total (the prediction log's records by final ``outcome``; spooling and replaying are
detours, counted apart).
"""

import os
import resource
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

from modelyard.serving.context import PredictionEvent
from modelyard.serving.prediction_log import LogStats
from modelyard.serving.value_units import ValueUnit

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
#: ``modelyard_prediction_log_records_total{outcome}``: disjoint, a record ends in exactly one
LOG_OUTCOMES = ("written", "dead_letter", "lost")
#: ``modelyard_prediction_log_spooled_records_total{directory}``
SPOOL_DIRECTORIES = ("configured", "fallback")
#: ``modelyard_feedback_records_total{outcome=...}`` (see serving/feedback_api.py)
FEEDBACK_OUTCOMES = ("accepted", "deferred", "unknown_id", "invalid")


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class ServiceMetrics:
    """Every metric the server exports; one instance per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        if not multiprocess_mode():
            ProcessCollector(registry=self.registry)
        reg = self.registry
        self.requests = Counter(
            "modelyard_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=reg,
        )
        self.latency = Histogram(
            "modelyard_http_request_duration_seconds",
            "Time from request start to the end of the response, by route, method and status.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.in_flight = Gauge(
            "modelyard_http_requests_in_flight",
            "Requests being handled now (all workers).",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.rejected = Counter(
            "modelyard_http_rejected",
            "Requests refused before reaching the model: overload, too_large, timeout, "
            "unauthorized, bad_host.",
            ["reason"],
            registry=reg,
        )
        self.errors = Counter(
            "modelyard_unhandled_errors",
            "Requests that ended in an unexpected error.",
            registry=reg,
        )
        self.inference = Histogram(
            "modelyard_model_inference_seconds",
            "Duration of one ONNX Runtime call (one micro-batch).",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.batch_rows = Histogram(
            "modelyard_batch_rows", "Model rows per ONNX Runtime call.", buckets=BATCH_BUCKETS,
            registry=reg,
        )  # fmt: skip
        self.batch_requests = Histogram(
            "modelyard_batch_requests",
            "Requests sharing one ONNX Runtime call.",
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        self.model_info = Gauge(
            "modelyard_model_info",
            "1 for the model being served (name, version, sha256 of the served ONNX file, "
            "whether it is the INT8 one).",
            ["model", "version", "sha256", "quantized"],
            registry=reg,
            multiprocess_mode="livemax",
        )
        self._model_info: tuple[str, str, str, str] | None = None
        self.labels = Counter(
            "modelyard_predicted_label",
            "Answered classes (a two-class model's decision, else the top class).",
            ["label"],
            registry=reg,
        )
        self.ready = Gauge(
            "modelyard_ready", "1 when the worker serves predictions.", registry=reg,
            multiprocess_mode="liveall",
        )  # fmt: skip
        self.memory = Gauge(
            "modelyard_worker_resident_memory_bytes",
            "Resident memory of each worker process.",
            registry=reg,
            multiprocess_mode="liveall",
        )
        self.log_buffered = Gauge(
            "modelyard_prediction_log_buffered_records",
            "Prediction-log records in memory, waiting for the database.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.log_spool_pending = Gauge(
            "modelyard_prediction_log_spool_pending_records",
            "Prediction-log records spooled to local disk, waiting for the database.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.log_database_up = Gauge(
            "modelyard_prediction_log_database_up",
            "1 when the last write to the prediction log succeeded.",
            registry=reg,
            multiprocess_mode="liveall",
        )
        self.log_queued = Counter(
            "modelyard_prediction_log_queued_records",
            "Prediction-log records handed to the log, one per answered prediction.",
            registry=reg,
        )
        self.log_outcomes = Counter(
            "modelyard_prediction_log_records",
            "Prediction-log records by final outcome: written (stored in the predictions "
            "table, directly or replayed from the spool), dead_letter (refused by the database, "
            "kept as a dead letter), lost (neither stored nor saved: in the error log only). "
            "Queued minus the outcomes' sum is what is still buffered or spooled.",
            ["outcome"],
            registry=reg,
        )
        self.log_spooled = Counter(
            "modelyard_prediction_log_spooled_records",
            "Records saved to the local spool while the database was away, by directory: "
            "configured, or fallback (the configured one unwritable: the system's temporary "
            "directory). A detour: they are replayed later and end in an outcome.",
            ["directory"],
            registry=reg,
        )
        self.log_replayed = Counter(
            "modelyard_prediction_log_replayed_records",
            "Spooled records stored in the database (also counted as outcome written).",
            registry=reg,
        )
        self.model_swaps = Counter(
            "modelyard_model_swaps",
            "Versions of a followed alias (serve --follow) swapped in or refused, by result.",
            ["result"],
            registry=reg,
        )
        self.feedback = Counter(
            "modelyard_feedback_records",
            "Ground-truth records sent to POST /feedback, by the outcome of their body when "
            "received: accepted (predictions found, truths fit), deferred (log database "
            "unreachable: stored, checked when written), unknown_id (404), invalid (422; a body "
            "that cannot be read counts as one). The outcomes add up to the records received.",
            ["outcome"],
            registry=reg,
        )
        for outcome in FEEDBACK_OUTCOMES:
            self.feedback.labels(outcome)
        self._log_seen: dict[str, int] = {}
        self._value_histograms: dict[str, Histogram] = {}
        self._value_lock = threading.Lock()
        #: unit noun -> output -> the histogram's child (labels() costs more than a lookup)
        self._value_children: dict[str, dict[str, Any]] = {}

    def observe_batch(self, requests: int, rows: int, seconds: float) -> None:
        self.inference.observe(seconds)
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)

    def set_model_info(self, model: str, version: str, sha256: str, quantized: bool) -> None:
        """Say which model this worker serves (at start-up, and again after a hot swap).

        The previous label set is dropped; in multiprocess mode its value stays in this
        worker's file, so it is set to 0 first: ``modelyard_model_info == 1`` is what is served.
        """
        labels = (model, version, sha256, "true" if quantized else "false")
        if labels == self._model_info:
            return
        if self._model_info is not None:
            self.model_info.labels(*self._model_info).set(0)
            if not multiprocess_mode():
                self.model_info.remove(*self._model_info)
        self.model_info.labels(*labels).set(1)
        self._model_info = labels

    def observe_prediction(self, event: PredictionEvent) -> None:
        """The values' distribution in their unit's histogram, and the predicted labels."""
        if event.unit is not None:
            self._observe_values(event.unit, event.values)
        for label in event.labels:
            self.labels.labels(label).inc()

    def _observe_values(self, unit: ValueUnit, values: Mapping[str, Sequence[float]]) -> None:
        children = self._value_children.get(unit.noun)
        if children is None:  # created on first use: a server exports its family's units only
            children = self._new_value_histogram(unit)
        for name, series in values.items():
            child = children.get(name)
            if child is None:
                child = children[name] = self._value_histograms[unit.noun].labels(name)
            for value in series:
                child.observe(value)

    def _new_value_histogram(self, unit: ValueUnit) -> dict[str, Any]:
        with self._value_lock:
            if unit.noun not in self._value_histograms:
                self._value_histograms[unit.noun] = Histogram(
                    unit.metric_name,
                    unit.description,
                    ["output"],
                    buckets=unit.buckets,
                    registry=self.registry,
                )
            return self._value_children.setdefault(unit.noun, {})

    def update_log(self, stats: LogStats) -> None:
        """Copy the prediction log's counters (called periodically and at scrape time)."""
        self.log_buffered.set(stats.buffered)
        self.log_spool_pending.set(stats.spool_pending)
        self.log_database_up.set(1 if stats.database_ok else 0)
        grown = self._log_growth(
            queued=stats.recorded,
            written=stats.written,
            dead_letter=stats.dead_letters,
            lost=stats.lost,
            configured=stats.spooled - stats.spooled_fallback,
            fallback=stats.spooled_fallback,
            replayed=stats.replayed,
        )
        self._count(self.log_queued, grown["queued"])
        for outcome in LOG_OUTCOMES:
            self._count(self.log_outcomes.labels(outcome), grown[outcome])
        for directory in SPOOL_DIRECTORIES:
            self._count(self.log_spooled.labels(directory), grown[directory])
        self._count(self.log_replayed, grown["replayed"])

    def _log_growth(self, **totals: int) -> dict[str, int]:
        """How much each LogStats total grew since the last update (counters only go up)."""
        grown = {}
        for name, total in totals.items():
            seen = self._log_seen.get(name, 0)
            grown[name] = total - seen
            self._log_seen[name] = max(total, seen)
        return grown

    @staticmethod
    def _count(counter: Counter, delta: int) -> None:
        if delta > 0:
            counter.inc(delta)

    def update_memory(self) -> None:
        self.memory.set(resident_memory_bytes())

    def exposition(self) -> bytes:
        """The text format of every metric, all workers added up in multiprocess mode."""
        if multiprocess_mode():
            registry = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


def resident_memory_bytes() -> int:
    """This process's resident set now (Linux), else its peak."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mark_worker_dead(pid: int) -> None:
    """Drop a stopped worker's live gauges (multiprocess mode only)."""
    if multiprocess_mode():
        prometheus_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
