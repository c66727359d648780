"""The service around the model: request ids, probes, metrics, limits, logs, the prediction log,
several workers and graceful shutdown. Real ONNX Runtime, real SQLite, real uvicorn servers."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bundle_factory import make_nilm_bundle
from cli_helpers import assert_user_error, modelyard
from log_tables import table_rows
from modelyard.core.bundle import Bundle
from modelyard.serving.app import create_app
from modelyard.serving.prediction_log import count_rows
from modelyard.serving.runtime import thread_sizing
from modelyard.serving.server_process import HOST, free_port, running_server, wait_until_healthy
from modelyard.serving.settings import ServerSettings
from postgres_server import PostgresServer

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

WINDOW = 15
APPLIANCES = ("kettle", "microwave")
SERIES = [250.0 + 10 * (i % 7) for i in range(40)]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_nilm_bundle(tmp_path_factory.mktemp("service") / "bundle", window=WINDOW)


def settings(**values: Any) -> ServerSettings:
    return ServerSettings(**values)


def predict(client: httpx.Client, request_id: str | None = None, **extra: Any) -> httpx.Response:
    headers = {"X-Request-ID": request_id} if request_id else {}
    return client.post("/predict", json={"aggregate_w": SERIES, **extra}, headers=headers)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus exposition -> {(sample name, sorted labels): value}."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def rows(url: str) -> list[Any]:
    return table_rows(url)


# --- request ids -------------------------------------------------------------------------------


def test_request_id_is_echoed_when_sane_and_generated_otherwise(bundle: Bundle) -> None:
    client = TestClient(create_app(bundle), raise_server_exceptions=False)

    echoed = predict(client, "order-42:retry.1")
    generated = client.get("/health")
    replaced = predict(client, "has spaces and; semicolons")
    too_long = predict(client, "x" * 65)
    not_found = client.get("/nowhere", headers={"X-Request-ID": "lost-1"})
    invalid = client.post("/predict", json={"aggregate_w": "no"}, headers={"X-Request-ID": "bad-1"})

    assert echoed.headers["X-Request-ID"] == "order-42:retry.1"
    for response in (generated, replaced, too_long):
        request_id = response.headers["X-Request-ID"]
        assert len(request_id) == 32 and int(request_id, 16) >= 0
    assert generated.headers["X-Request-ID"] != replaced.headers["X-Request-ID"]
    assert not_found.status_code == 404 and not_found.headers["X-Request-ID"] == "lost-1"
    assert invalid.status_code == 422 and invalid.headers["X-Request-ID"] == "bad-1"


# --- probes ------------------------------------------------------------------------------------


def test_ready_only_between_warm_up_and_shutdown_while_health_always_answers(
    bundle: Bundle,
) -> None:
    app = create_app(bundle)
    before = TestClient(app)  # no lifespan: the model has not been warmed up
    assert before.get("/health").status_code == 200
    assert before.get("/ready").status_code == 503
    assert before.get("/ready").json()["ready"] is False

    with TestClient(app) as client:
        answer = client.get("/ready")
        assert answer.status_code == 200
        sizing = thread_sizing(0)  # this machine's cores (tests/test_serve_environment.py)
        assert answer.json() == {
            "ready": True,
            "model": bundle.manifest.name,
            "version": bundle.manifest.version,
            "quantized": False,
            "prediction_log": False,
            "threads": sizing.threads,
            "threads_from": sizing.source,
        }
    assert app.state.service.ready is False  # shutdown ran


# --- metrics -----------------------------------------------------------------------------------


def test_metrics_count_requests_batches_and_predicted_values(bundle: Bundle) -> None:
    with TestClient(create_app(bundle), raise_server_exceptions=False) as client:
        for _ in range(3):
            assert predict(client).status_code == 200
        assert client.post("/predict", json={"aggregate_w": []}).status_code == 422
        assert client.get("/nowhere").status_code == 404
        text = client.get("/metrics").text

    requests = "modelyard_http_requests_total"
    assert value(text, requests, route="/predict", method="POST", status="200") == 3
    assert value(text, requests, route="/predict", method="POST", status="422") == 1
    assert value(text, requests, route="unmatched", method="GET", status="404") == 1
    latency = "modelyard_http_request_duration_seconds_count"
    assert value(text, latency, route="/predict", method="POST", status="200") == 3
    for appliance in APPLIANCES:
        assert value(text, "modelyard_prediction_watts_count", output=appliance) == 3
    # warm-up and the three predictions went through the model, 40 windows each
    assert value(text, "modelyard_batch_rows_sum") >= 3 * len(SERIES)
    assert value(text, "modelyard_model_inference_seconds_count") >= 3
    assert value(text, "modelyard_ready") == 1
    assert value(text, "process_resident_memory_bytes") > 0


# --- the prediction log ------------------------------------------------------------------------


def test_every_successful_prediction_is_logged_with_its_request_id(
    bundle: Bundle, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/predictions.db"
    app = create_app(bundle, settings=settings(prediction_log=url))
    with TestClient(app, raise_server_exceptions=False) as client:
        ids = [predict(client, f"req-{n}").headers["X-Request-ID"] for n in range(5)]
        assert client.post("/predict", json={"aggregate_w": []}).status_code == 422
        assert client.get("/ready").json()["prediction_log"] is True

    logged = rows(url)  # the shutdown flushed them
    assert [r.request_id for r in logged] == ids
    first = logged[0]
    assert first.model == bundle.manifest.name and first.version == bundle.manifest.version
    assert first.route == "/predict" and first.status == 200 and first.latency_ms > 0
    assert first.inputs["length"] == len(SERIES)
    assert first.inputs["max_w"] == max(SERIES) and first.inputs["min_w"] == min(SERIES)
    assert set(first.outputs) == set(APPLIANCES)
    assert all(o["mean_w"] >= 0 for o in first.outputs.values())


def test_the_prediction_log_can_live_in_postgresql(
    bundle: Bundle, postgres: PostgresServer
) -> None:
    app = create_app(bundle, settings=settings(prediction_log=postgres.url))
    with TestClient(app) as client:
        ids = {predict(client).headers["X-Request-ID"] for _ in range(4)}

    assert {r.request_id for r in rows(postgres.url)} >= ids
    assert count_rows(postgres.url) >= 4


# --- protection --------------------------------------------------------------------------------


def test_bodies_over_the_limit_are_refused_with_413(bundle: Bundle) -> None:
    client = TestClient(create_app(bundle, settings=settings(max_body_bytes=2048)))
    big = json.dumps({"aggregate_w": [250.0] * 400}).encode()

    declared = client.post("/predict", content=big, headers={"content-type": "application/json"})

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams in
        for start in range(0, len(big), 512):
            yield big[start : start + 512]

    streamed = client.post(
        "/predict", content=chunks(), headers={"content-type": "application/json"}
    )

    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert response.json()["detail"] == "request body larger than 2048 bytes"
    assert predict(client).status_code == 200  # a small one still passes


def test_a_request_over_its_time_is_answered_504_and_probes_are_exempt(bundle: Bundle) -> None:
    client = TestClient(create_app(bundle, settings=settings(request_timeout_s=1e-6)))

    slow = predict(client)

    assert slow.status_code == 504
    assert "request timeout" in slow.json()["detail"]
    assert client.get("/health").status_code == 200
    assert (
        value(client.get("/metrics").text, "modelyard_http_rejected_total", reason="timeout") == 1
    )


def test_an_inconsistent_bundle_fails_with_a_json_500_not_a_traceback(bundle: Bundle) -> None:
    # A bundle that contradicts itself no longer starts (test_bundle_trust.py); a fault that
    # only shows at request time is made by changing the live adapter's window instead.
    app = create_app(bundle)
    app.state.adapter.window = WINDOW + 2  # the ONNX model still takes 15 readings
    client = TestClient(app, raise_server_exceptions=False)

    response = predict(client, "boom-1")

    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}
    assert response.headers["X-Request-ID"] == "boom-1"
    assert value(client.get("/metrics").text, "modelyard_unhandled_errors_total") == 1


def test_cors_is_off_unless_origins_are_configured(bundle: Bundle) -> None:
    origin = {"Origin": "https://dashboard.example"}
    closed = TestClient(create_app(bundle)).get("/info", headers=origin)
    opened = TestClient(
        create_app(bundle, settings=settings(cors_origins=["https://dashboard.example"]))
    ).get("/info", headers=origin)

    assert "access-control-allow-origin" not in closed.headers
    assert opened.headers["access-control-allow-origin"] == "https://dashboard.example"


def _stalled_request(port: int) -> socket.socket:
    """A request whose body never finishes arriving: it stays in flight."""
    sock = socket.create_connection((HOST, port), timeout=10)
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"aggregate_w": ['
    )
    return sock


def test_overload_is_answered_503_with_retry_after(bundle: Bundle, tmp_path: Path) -> None:
    port = free_port()
    extra = ["--max-concurrency", "1", "--prediction-log", "none"]
    with running_server(bundle.path, port=port, extra_args=extra) as url:
        stalled = _stalled_request(port)
        try:
            deadline = time.monotonic() + 10
            while True:  # wait until the server has the stalled request in flight
                busy = httpx.post(f"{url}/predict", json={"aggregate_w": SERIES}, timeout=10)
                if busy.status_code == 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            health = httpx.get(f"{url}/health", timeout=10)
        finally:
            stalled.close()
        time.sleep(0.2)
        after = httpx.post(f"{url}/predict", json={"aggregate_w": SERIES}, timeout=10)

    assert busy.status_code == 503
    assert busy.headers["Retry-After"] == "1"
    assert busy.json()["detail"] == "server busy; retry later"
    assert health.status_code == 200  # probes are not limited
    assert after.status_code == 200  # the slot is free again


# --- the real server: JSON logs, several workers, SIGTERM under load ----------------------------


def start_server(bundle: Path, port: int, *args: str) -> subprocess.Popen[bytes]:
    """``modelyard serve`` without draining, unless ``args`` ask for it (the last value wins)."""
    command = [sys.executable, "-m", "modelyard", "serve", str(bundle), "--port", str(port)]
    return subprocess.Popen(
        [*command, "--drain-seconds", "0", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    wait_until_healthy(url, process, 60, "/ready")


def stop(process: subprocess.Popen[bytes], send: bool = True) -> str:
    """SIGTERM, as an orchestrator stops it (``send=False``: it has been sent already); uvicorn
    shuts down cleanly, then re-raises the signal: exit status 0 or -SIGTERM."""
    if send:
        process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        try:  # a worker left behind by the killed supervisor may hold its stderr open
            _, err = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            err = b"(unread: a worker still holds the server's stderr)"
        pytest.fail(f"the server did not exit within 30 s of SIGTERM; its log:\n{err.decode()}")
    text = err.decode()
    assert process.returncode in {0, -signal.SIGTERM}, text
    assert "Application shutdown complete" in text
    return text


def test_logs_are_json_lines_carrying_the_request_id(bundle: Bundle) -> None:
    port = free_port()
    url = f"http://{HOST}:{port}"
    process = start_server(bundle.path, port, "--prediction-log", "none")
    try:
        wait_ready(url, process)
        assert predict(httpx.Client(base_url=url), "trace-me-7").status_code == 200
    finally:
        err = stop(process)

    entries = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    (access,) = [e for e in entries if e.get("request_id") == "trace-me-7"]
    assert access["logger"] == "modelyard.access"
    assert access["route"] == "/predict" and access["status"] == 200 and access["duration_ms"] > 0


def test_two_workers_share_the_port_and_their_metrics(bundle: Bundle, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://{HOST}:{port}"
    log_url = f"sqlite:///{tmp_path}/predictions.db"
    process = start_server(
        bundle.path, port, "--workers", "2", "--prediction-log", log_url, "--no-access-log"
    )
    try:
        wait_ready(url, process)  # one worker is ready; the other may still be warming up
        with httpx.Client(base_url=url) as client:
            ready = wait_for_ready_gauges(client, 2)
            for _ in range(30):
                assert predict(client).status_code == 200
            text = client.get("/metrics").text
    finally:
        stop(process)

    # one live gauge per worker pid, and whichever worker answered the scrape, it reports both
    # workers' requests
    assert len({labels for _, labels in ready}) == 2
    assert (
        value(text, "modelyard_http_requests_total", route="/predict", method="POST", status="200")
        == 30
    )
    assert len(rows(log_url)) == 30


def wait_for_ready_gauges(
    client: httpx.Client, workers: int, timeout: float = 60
) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """Scrape /metrics until ``workers`` readiness gauges say 1; return them."""
    deadline = time.monotonic() + timeout
    while True:
        found = samples(client.get("/metrics").text)
        ready = [k for k, v in found.items() if k[0] == "modelyard_ready" and v == 1]
        if len(ready) >= workers or time.monotonic() > deadline:
            assert len(ready) == workers, f"{len(ready)} of {workers} workers ready: {ready}"
            return ready
        time.sleep(0.2)


def test_sigterm_under_load_loses_no_logged_prediction(bundle: Bundle, tmp_path: Path) -> None:
    """Every prediction a client received a 200 for has its row, though the server was stopped
    mid-load. While it drains, /ready says 503; afterwards clients cannot connect (refused, or
    reset when their connection was still in the closing listener's queue). No answer is cut off
    half-way and none is an error status."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    log_url = f"sqlite:///{tmp_path}/predictions.db"
    process = start_server(
        bundle.path,
        port,
        *("--workers", "2", "--prediction-log", log_url, "--no-access-log"),
        *("--drain-seconds", "3"),
    )
    wait_ready(url, process)
    succeeded: list[str] = []
    statuses: list[int] = []
    errors: list[BaseException] = []

    def client(number: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            for count in range(10_000):
                try:
                    response = predict(http, f"c{number}-{count}")
                except httpx.TransportError as exc:
                    errors.append(exc)
                    return
                statuses.append(response.status_code)
                if response.status_code == 200:
                    succeeded.append(response.headers["X-Request-ID"])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    process.send_signal(signal.SIGTERM)
    # The supervisor passes SIGTERM on to its workers; on a busy machine that takes a moment.
    deadline = time.monotonic() + 2.5
    while (draining := httpx.get(f"{url}/ready", timeout=5)).status_code == 200:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    stop(process, send=False)
    for thread in threads:
        thread.join(timeout=30)

    assert draining.status_code == 503 and draining.json()["ready"] is False
    assert len(errors) == len(threads)  # every client ended up unable to get through
    assert not [e for e in errors if "complete message body" in str(e)]  # none cut half-way
    assert len(succeeded) > 50
    assert set(statuses) == {200}
    logged = {r.request_id for r in rows(log_url)}
    assert set(succeeded) <= logged


def test_serving_int8_needs_a_bundle_that_has_one(bundle: Bundle, tmp_path: Path) -> None:
    port = str(free_port())
    result = modelyard("serve", str(bundle.path), "--quantized", "--port", port, workdir=tmp_path)

    assert_user_error(result, "has no INT8 model")


@pytest.mark.parametrize(
    ("option", "fragment"),
    [
        (["--workers", "0"], "serve: workers: Input should be greater than or equal to 1"),
        (["--log-format", "xml"], "serve: log_format: Input should be 'json' or 'text'"),
        (["--max-wait-ms", "-1"], "serve: max_wait_ms: Input should be greater than or equal to 0"),
        (["--request-timeout", "0"], "serve: request_timeout_s: Input should be greater than 0"),
        (
            ["--log-flush-interval", "0"],
            "serve: log_flush_interval_s: Input should be greater than 0",
        ),
        (["--log-batch-size", "0"], "serve: log_batch_size: Input should be greater than or equal"),
    ],
)
def test_bad_server_settings_are_one_line_errors(
    bundle: Bundle, tmp_path: Path, option: list[str], fragment: str
) -> None:
    result = modelyard("serve", str(bundle.path), *option, workdir=tmp_path)

    assert_user_error(result, fragment)
