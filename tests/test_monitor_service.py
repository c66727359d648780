"""The monitoring service on a real uvicorn (127.0.0.1) and the webhook against a real local HTTP
server: endpoints, exact metric names, a failing recompute keeping the last report, the alert."""

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

import monitor_fixtures as mf
from modelyard.core.bundle import Bundle
from modelyard.monitoring import metric_names
from modelyard.monitoring.check import MonitorSettings
from modelyard.monitoring.service import MonitorService, build_app
from modelyard.monitoring.webhook import EVENT_TYPE, alert_payload, send_alert, webhook_request
from modelyard.serving.server_process import HOST, free_port, wait_until_healthy
from modelyard.stages import monitor as monitor_stage

NOW = datetime.now(UTC)


class Receiver(ThreadingHTTPServer):
    """Records every POST (path, headers, JSON body); answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[dict[str, Any]] = []
        super().__init__((HOST, 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/hook"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append(
            {"path": self.path, "headers": dict(self.headers), "body": json.loads(body)}
        )
        self.send_response(self.server.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def receiver(status: int = 200) -> Iterator[Receiver]:
    server = Receiver(status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def serving(service: MonitorService) -> Iterator[str]:
    """The service's app on a real uvicorn on 127.0.0.1, in a thread."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(build_app(service), host=HOST, port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not server.started:
            time.sleep(0.05)
        assert server.started
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_for(predicate: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return mf.make_bundle(tmp_path_factory.mktemp("monitor-service") / "bundle")


def drifted_log(path: Path) -> tuple[str, sa.Engine]:
    """A log of 120 requests with areas x2 and ten more rooms: two of four columns drift."""
    url = f"sqlite:///{path}"
    engine = mf.prepare(url)
    rng = np.random.default_rng(21)
    batch = [mf.features(rng, 2, area_scale=2.0) for _ in range(120)]
    for request in batch:
        for row in request:
            row["rooms"] += 10.0
    mf.log_requests(engine, batch, NOW - timedelta(hours=1))
    return url, engine


def metric_samples(text: str) -> set[str]:
    """Sample names of the exposition; counters' ``_created`` companions are left out."""
    return {
        sample.name
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_service_endpoints_metrics_and_a_failing_recompute(bundle: Bundle, tmp_path: Path) -> None:
    url, _ = drifted_log(tmp_path / "predictions.db")
    settings = MonitorSettings(bundle=bundle, log_url=url, drift_rows=mf.flat_rows)
    service = MonitorService(settings, every_s=0.5, output=tmp_path / "latest")
    with serving(service) as base:
        wait_for(lambda: httpx.get(f"{base}/drift").status_code == 200)
        verdict = httpx.get(f"{base}/drift").json()
        assert verdict["drift"]["detected"] is True
        assert "area_m2" in verdict["drift"]["drifted_columns"]
        page = httpx.get(f"{base}/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert (tmp_path / "latest" / "verdict.json").is_file()
        # the database goes away: the last report stays, failures are counted
        (tmp_path / "predictions.db").rename(tmp_path / "moved.db")
        wait_for(lambda: httpx.get(f"{base}/health").json()["failures"] >= 1)
        health = httpx.get(f"{base}/health").json()
        assert health["status"] == "ok" and "log_unavailable" in health["last_error"]
        assert httpx.get(f"{base}/drift").json()["drift"]["detected"] is True
        metrics = httpx.get(f"{base}/metrics").text
    samples = metric_samples(metrics)
    realised = {
        metric_names.REALISED_METRIC,
        metric_names.PROMOTED_METRIC,
        metric_names.REALISED_BELOW_PROMOTED,
    }  # no feedback in this log: see the next test
    assert samples >= set(metric_names.ALL) - realised
    assert {s for s in samples if s.startswith("modelyard_")} <= set(metric_names.ALL)
    assert 'modelyard_feature_drift_detected{feature="area_m2",model="avm-test"} 1.0' in metrics
    assert (
        'modelyard_monitor_report_failures_total{model="avm-test",reason="log_unavailable"}'
        in metrics
    )


def test_realised_accuracy_gauges(bundle: Bundle, tmp_path: Path) -> None:
    url, engine = drifted_log(tmp_path / "predictions.db")
    ids = [f"{i:032x}" for i in range(0)]
    with engine.connect() as connection:
        ids = [
            row[0]
            for row in connection.execute(sa.text("SELECT server_request_id FROM predictions"))
        ]
    mf.send_feedback(
        engine, {i: {"rows": [{mf.TARGET: 20000.0}, {mf.TARGET: 40000.0}]} for i in ids}, NOW
    )
    service = MonitorService(
        MonitorSettings(bundle=bundle, log_url=url, drift_rows=mf.flat_rows), every_s=60
    )
    assert service.recompute()
    metrics = service.metrics.exposition().decode()
    assert metric_samples(metrics) >= set(metric_names.ALL) - {metric_names.REPORT_FAILURES}
    # MdAPE over rows 0 % and 50 %: 25 %, against 10 % promoted -> below (every request has
    # one row of each: its resamples too, so the noise cannot explain it)
    assert 'modelyard_realised_metric{metric="mdape",model="avm-test"} 0.25' in metrics
    assert 'modelyard_promoted_metric{metric="mdape",model="avm-test"} 0.1' in metrics
    assert (
        'modelyard_realised_metric_below_promoted{metric="mdape",model="avm-test"} 1.0' in metrics
    )
    # MAE 10,000 against 2,000 promoted on every row: below, whatever the resample
    assert 'modelyard_realised_metric_below_promoted{metric="mae",model="avm-test"} 1.0' in metrics


def test_the_webhook_receives_the_alert_once(bundle: Bundle, tmp_path: Path) -> None:
    url, _ = drifted_log(tmp_path / "predictions.db")
    settings = MonitorSettings(bundle=bundle, log_url=url, drift_rows=mf.flat_rows)
    with receiver() as hook:
        outcome = monitor_stage.run(settings, output=tmp_path / "out", webhook=hook.url)
        assert outcome.webhook is not None and outcome.webhook.delivered
        assert len(hook.received) == 1
        body = hook.received[0]["body"]
        assert body == alert_payload(outcome.verdict)
        assert body["drift_detected"] is True and "area_m2" in body["drifted_columns"]
        # the service calls it when the alert starts, not on every recomputation of it
        service = MonitorService(settings, every_s=60, webhook=hook.url)
        assert service.recompute() and service.recompute()
        assert len(hook.received) == 2


def test_no_alert_no_webhook(bundle: Bundle, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    engine = mf.prepare(url)
    # rows of the reference sample itself (mf.profile draws with seed 0): no drift by any rule
    # (a fresh sample drifts by chance in up to 5 % of windows, as it should)
    rng = np.random.default_rng(0)
    mf.log_requests(engine, [mf.features(rng, 2) for _ in range(120)], NOW - timedelta(hours=1))
    with receiver() as hook:
        settings = MonitorSettings(bundle=bundle, log_url=url, drift_rows=mf.flat_rows)
        outcome = monitor_stage.run(settings, output=tmp_path / "out", webhook=hook.url)
        assert outcome.exit_code == 0 and outcome.webhook is None
        assert hook.received == []


def test_webhook_failures_are_reported_not_raised() -> None:
    verdict = sample_verdict()
    with receiver(status=500) as hook:
        refused = send_alert(hook.url, verdict)
    assert not refused.delivered and refused.status == 500 and "refused" in refused.detail
    started = time.monotonic()
    unreachable = send_alert(f"http://{HOST}:{free_port()}/hook", verdict, timeout_s=2.0)
    assert not unreachable.delivered and unreachable.status is None
    assert time.monotonic() - started < 10
    assert not send_alert("not a url", verdict).delivered


def test_github_repository_dispatch_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    dispatch = "https://api.github.com/repos/acme/models/dispatches"
    verdict = sample_verdict()
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    missing = send_alert(dispatch, verdict)  # refused before any network call
    assert not missing.delivered and "$GITHUB_TOKEN is not set" in missing.detail
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_test")
    body, headers = webhook_request(dispatch, verdict)
    assert body == {"event_type": EVENT_TYPE, "client_payload": alert_payload(verdict)}
    assert len(body["client_payload"]) <= 10  # GitHub's limit on client_payload keys
    assert headers["Authorization"] == "Bearer ghp_test"
    assert headers["Accept"] == "application/vnd.github+json"
    plain, plain_headers = webhook_request("https://hooks.example.com/x", verdict)
    assert plain == alert_payload(verdict) and "Authorization" not in plain_headers


def sample_verdict() -> dict[str, Any]:
    return {
        "generated_at": NOW.isoformat(),
        "model": {"name": "m", "version": "1", "family": "tabular", "bundle": "b"},
        "window": {"predictions": 10, "first_at": None, "last_at": None, "log": "sqlite://"},
        "drift": {"detected": True, "share": 0.5, "drifted_columns": ["a"]},
        "realised_accuracy": {"below_promoted": []},
        "reasons": ["dataset drift"],
    }


def test_monitor_serve_runs_as_its_own_process_and_counts_failures(
    bundle: Bundle, tmp_path: Path
) -> None:
    """`modelyard monitor --serve` on a log with no predictions: up, healthy, failures counted."""
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    mf.prepare(url)
    port = free_port()
    command = [
        sys.executable, "-m", "modelyard", "monitor", str(bundle.path), "--log", url,
        "--serve", "--port", str(port), "--every", "10s",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://{HOST}:{port}"
    try:
        wait_until_healthy(base, process, timeout_s=60)
        wait_for(lambda: httpx.get(f"{base}/health").json()["failures"] >= 1)
        drift = httpx.get(f"{base}/drift")
        assert drift.status_code == 503 and "no answered predictions" in drift.json()["detail"]
        metrics = httpx.get(f"{base}/metrics").text
        assert (
            'modelyard_monitor_report_failures_total{model="avm-test",reason="empty_window"} 1.0'
            in metrics
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout:
            process.stdout.close()
