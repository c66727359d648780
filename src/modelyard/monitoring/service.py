"""``modelyard monitor --serve``: the latest report, live, in a small app of its own.

A separate process from the prediction server, so that Evidently and pandas never enter the
server's memory or latency budget. A background thread recomputes the check every ``every_s``
seconds; a failed check (the database down, an empty window) keeps the last good report and is
counted in ``modelyard_monitor_report_failures_total{reason}``. On the change from "no alert" to
"alert" the webhook is called once (not on every recomputation of the same alert).

Routes: ``GET /`` the latest Evidently report (HTML), ``GET /drift`` the latest verdict (JSON),
``GET /metrics`` (Prometheus text, names in :mod:`.metric_names`), ``GET /health``.
"""

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import SQLAlchemyError

from modelyard.core.errors import DataError
from modelyard.monitoring.check import CheckResult, MonitorSettings, run_check
from modelyard.monitoring.outputs import write_outputs
from modelyard.monitoring.prometheus import MonitorMetrics
from modelyard.monitoring.webhook import WebhookOutcome, send_alert
from modelyard.monitoring.window import EmptyWindowError

logger = logging.getLogger("modelyard.monitoring")


def failure_reason(exc: BaseException) -> str:
    """The ``reason`` label of a failed check."""
    if isinstance(exc, EmptyWindowError):
        return "empty_window"
    if isinstance(exc, DataError | SQLAlchemyError | OSError):
        return "log_unavailable"
    return "error"


@dataclass
class Latest:
    """The last good check (None before the first) and what happened since."""

    result: CheckResult | None = None
    html: str = ""
    finished_at: float | None = None
    last_error: str | None = None
    failures: int = 0
    checks: int = 0
    webhook: WebhookOutcome | None = None
    alerting: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class MonitorService:
    """Recomputes the check on a schedule and holds the latest outcome for the routes."""

    def __init__(
        self,
        settings: MonitorSettings,
        every_s: float,
        output: Path | None = None,
        webhook: str | None = None,
        check: Callable[[MonitorSettings], CheckResult] = run_check,
    ) -> None:
        self.settings = settings
        self.every_s = every_s
        self.output = output
        self.webhook = webhook
        self.check = check
        self.metrics = MonitorMetrics()
        self.latest = Latest()
        self.model = settings.bundle.manifest.name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def recompute(self) -> bool:
        """One check; True when it produced a new report."""
        try:
            result = self.check(self.settings)
            html = result.findings.snapshot.get_html_str(as_iframe=False)
            if self.output is not None:
                write_outputs(result, self.output, html)
        except Exception as exc:  # a failed check must never end the schedule
            reason = failure_reason(exc)
            self.metrics.failed(self.model, reason)
            with self.latest.lock:
                self.latest.failures += 1
                self.latest.checks += 1
                self.latest.last_error = f"{reason}: {exc}"
            logger.warning(
                "monitor: check failed (%s): %s", reason, exc, exc_info=reason == "error"
            )
            return False
        finished = time.time()
        self.metrics.update(result.verdict, finished)
        outcome = None
        if result.alert and not self.latest.alerting and self.webhook:
            outcome = send_alert(self.webhook, result.verdict)
            logger.warning("monitor: alert sent to %s: %s", self.webhook, outcome.detail)
        with self.latest.lock:
            self.latest.result, self.latest.html = result, html
            self.latest.finished_at, self.latest.last_error = finished, None
            self.latest.checks += 1
            self.latest.alerting = result.alert
            self.latest.webhook = outcome or self.latest.webhook
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.recompute()
            self._stop.wait(self.every_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="monitor-schedule", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def health(self) -> dict[str, Any]:
        with self.latest.lock:
            return {
                "status": "ok",
                "model": self.model,
                "every_s": self.every_s,
                "checks": self.latest.checks,
                "failures": self.latest.failures,
                "last_report_at": self.latest.finished_at,
                "last_error": self.latest.last_error,
                "webhook": None if self.latest.webhook is None else self.latest.webhook.to_json(),
            }


def _not_yet(service: MonitorService) -> JSONResponse:
    error = service.latest.last_error or "the first check is still running"
    return JSONResponse({"detail": f"no report yet: {error}"}, status_code=503)


def build_app(service: MonitorService) -> FastAPI:
    """The service's routes; starting and stopping the schedule follows the app's lifespan."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="modelyard monitor",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )

    @app.get("/", response_model=None)
    def report() -> Response:
        with service.latest.lock:
            html = service.latest.html
        return HTMLResponse(html) if html else _not_yet(service)

    @app.get("/drift", response_model=None)
    def drift() -> Response:
        with service.latest.lock:
            result = service.latest.result
        return JSONResponse(result.verdict) if result is not None else _not_yet(service)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return service.health()

    return app
