"""Prometheus metrics of one server, correct with several worker processes.

With one worker the metrics live in this process. With several, ``modelyard serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers start; every worker then
writes its values to memory-mapped files there, and ``/metrics`` (answered by whichever worker
gets the scrape) adds up all of them. Gauges say how they combine (``livesum``, ``liveall``).
"""

import os
import resource
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

from modelyard.serving.prediction_log import LogStats

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
#: LogStats counters exported as ``modelyard_prediction_log_records_total{event=...}``
LOG_EVENTS = ("recorded", "written", "spooled", "replayed", "spooled_fallback", "lost")
#: ``modelyard_feedback_records_total{outcome=...}`` (see serving/feedback_api.py)
FEEDBACK_OUTCOMES = ("accepted", "deferred", "unknown_id", "invalid")


def value_buckets() -> tuple[float, ...]:
    """1-2-5 steps from 0.001 to 1e6: one scale for probabilities, watts and prices alike."""
    return tuple(m * 10.0**e for e in range(-3, 7) for m in (1, 2, 5) if m * 10.0**e <= 1e6)


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
        self.values = Histogram(
            "modelyard_prediction_value",
            "Distribution of predicted values, by output (appliance, target, top-1 probability).",
            ["output"],
            buckets=value_buckets(),
            registry=reg,
        )
        self.labels = Counter(
            "modelyard_predicted_label", "Predicted classes (top-1).", ["label"], registry=reg
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
            "modelyard_prediction_log_buffered",
            "Prediction-log records in memory, waiting for the database.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.log_spool_pending = Gauge(
            "modelyard_prediction_log_spool_pending",
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
        self.log_events = Counter(
            "modelyard_prediction_log_records",
            "Prediction-log records by what happened to them: recorded, written, spooled, "
            "replayed; spooled_fallback (spool directory unwritable, saved under the system's "
            "temporary directory), lost (neither stored nor spooled: in the error log only).",
            ["event"],
            registry=reg,
        )
        self.log_dead_letters = Counter(
            "modelyard_prediction_log_dead_letters",
            "Records the database refused (a value it cannot store), kept as dead letters.",
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
        self._value_children: dict[str, Any] = {}

    def observe_batch(self, requests: int, rows: int, seconds: float) -> None:
        self.inference.observe(seconds)
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)

    def observe_prediction(
        self, values: Mapping[str, Sequence[float]], labels: Sequence[str]
    ) -> None:
        for name, series in values.items():
            child = self._value_children.get(name)
            if child is None:
                child = self._value_children[name] = self.values.labels(name)
            for value in series:
                child.observe(value)
        for label in labels:
            self.labels.labels(label).inc()

    def update_log(self, stats: LogStats) -> None:
        """Copy the prediction log's counters (called periodically and at scrape time)."""
        self.log_buffered.set(stats.buffered)
        self.log_spool_pending.set(stats.spool_pending)
        self.log_database_up.set(1 if stats.database_ok else 0)
        for event in LOG_EVENTS:
            delta = self._log_delta(event, stats)
            if delta > 0:
                self.log_events.labels(event).inc(delta)
        delta = self._log_delta("dead_letters", stats)
        if delta > 0:
            self.log_dead_letters.inc(delta)

    def _log_delta(self, name: str, stats: LogStats) -> int:
        """How much a LogStats counter grew since the last update (counters only go up)."""
        total = int(getattr(stats, name))
        delta = total - self._log_seen.get(name, 0)
        self._log_seen[name] = max(total, self._log_seen.get(name, 0))
        return delta

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
