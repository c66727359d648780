"""``modelyard loadtest``: real servers on 127.0.0.1, real Locust subprocesses, short runs.

NILM, tabular and vision bundles are served by ``modelyard serve``; a stub server (a thread in
this process) answers 503s and records what Locust sends, headers included.
"""

import csv
import io
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bundle_factory import make_nilm_bundle
from cli_helpers import assert_user_error, modelyard
from modelyard.core.errors import ModelyardError
from modelyard.loadtest import runner
from modelyard.loadtest.options import LoadOptions, nilm_series_length
from modelyard.loadtest.payloads import (
    NumericField,
    mains_profile,
    numeric_fields,
    perturbed_row,
    tabular_payloads,
    vision_payloads,
)
from modelyard.loadtest.runner import run_loadtest
from modelyard.serving.server_process import free_port, running_server
from tabular_fixtures import build_avm_bundle
from vision_fixtures import IMAGE_SIZE, make_vision_bundle

WINDOW = 15
MAX_LENGTH = 500  # bundle_factory's serving max_length
REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


# --- servers ---------------------------------------------------------------------------------


def server_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Whatever a server writes beside it (e.g. its prediction log) goes to a temporary home."""
    return {"MODELYARD_HOME": str(tmp_path_factory.mktemp("home"))}


@pytest.fixture(scope="module")
def nilm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    bundle = make_nilm_bundle(tmp_path_factory.mktemp("nilm") / "bundle", window=WINDOW)
    with running_server(bundle.path, env=server_env(tmp_path_factory)) as url:
        yield url


@pytest.fixture(scope="module")
def tabular_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An avm bundle trained (quick) on a synthetic Boliga table, as in test_tabular_serving."""
    _, bundle = build_avm_bundle(tmp_path_factory, rows=300)
    with running_server(bundle.path, env=server_env(tmp_path_factory)) as url:
        yield url


@pytest.fixture(scope="module")
def vision_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    bundle = make_vision_bundle(tmp_path_factory.mktemp("vision") / "bundle")
    with running_server(bundle.path, env=server_env(tmp_path_factory)) as url:
        yield url


class Stub(ThreadingHTTPServer):
    """A fake model server: ``/info`` as given, ``/predict`` always 503; records each POST."""

    def __init__(self, info: dict[str, Any]) -> None:
        super().__init__(("127.0.0.1", 0), StubHandler)
        self.info = info
        self.predictions: list[tuple[dict[str, str], bytes]] = []  # headers, body

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class StubHandler(BaseHTTPRequestHandler):
    server: Stub

    def do_GET(self) -> None:
        self.answer(200, self.server.info if self.path == "/info" else {"status": "ok"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.predictions.append((dict(self.headers), body))
        self.answer(503, {"detail": "model is overloaded, try again later"})

    def answer(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub_server(request: pytest.FixtureRequest) -> Iterator[Stub]:
    details = {"window": 5, "interval_s": 60, "min_length": 5, "max_length": 50}
    info = {"project": "nilm", "task": "nilm", "details": details}
    param = getattr(request, "param", None)
    if isinstance(param, dict):  # details only, or a whole /info answer
        info = param if "task" in param else {**info, "details": param}
    server = Stub(info)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# --- real runs -------------------------------------------------------------------------------


def successful_predictions(summary: runner.LoadTestSummary) -> int:
    (predict,) = [e for e in summary.endpoints if e.label == "POST /predict"]
    return predict.requests - predict.failures


def test_nilm_run_writes_reports_and_logs_every_successful_prediction(
    nilm_url: str, tmp_path: Path
) -> None:
    ids = tmp_path / "ids.txt"
    options = LoadOptions(seed=3, nilm_length="day", request_log=ids)
    summary = run_loadtest(nilm_url, None, 3, 3.0, 2, tmp_path / "report", options)

    assert summary.project == "nilm" and summary.url == nilm_url
    assert summary.total.requests > 0 and summary.total.failures == 0, summary.failures
    assert summary.passed and summary.locust_exit_code == 0
    assert {e.label for e in summary.endpoints} <= {"POST /predict", "GET /health", "GET /info"}
    for path in (summary.stats_csv, summary.report_html, summary.summary_json):
        assert path.is_file() and path.parent == tmp_path / "report"
    assert "<html" in summary.report_html.read_text().lower()
    saved = json.loads(summary.summary_json.read_text())
    assert saved["total"]["requests"] == summary.total.requests
    assert saved["total"]["p95_ms"] == summary.total.p95_ms
    lines = ids.read_text().splitlines()
    assert len(lines) == successful_predictions(summary) > 0
    assert len(set(lines)) == len(lines)
    assert all(REQUEST_ID.match(line) for line in lines)
    # a day of 1-minute readings does not fit the server's max_length: it is cut to fit
    assert f"{MAX_LENGTH}-reading mains series" in summary.log.read_text()


def test_tabular_run_sends_rows_the_server_accepts(tabular_url: str, tmp_path: Path) -> None:
    summary = run_loadtest(tabular_url, "avm", 2, 2.0, 2, tmp_path)

    assert summary.project == "avm"
    assert successful_predictions(summary) > 0
    assert summary.total.failures == 0, summary.failures
    # the bounds come from the server's OpenAPI schema, so the numbers can move
    fields = "perturbing the example's numeric fields: area_m2, construction_year, floor"
    assert fields in summary.log.read_text()


def test_vision_run_uploads_synthetic_images(vision_url: str, tmp_path: Path) -> None:
    summary = run_loadtest(vision_url, None, 2, 2.0, 2, tmp_path)

    assert summary.project == "eurosat"
    assert successful_predictions(summary) > 0
    assert summary.total.failures == 0, summary.failures


def test_cli_runs_end_to_end_into_the_default_directory(nilm_url: str, tmp_path: Path) -> None:
    args = ("loadtest", nilm_url, "--users", "2", "--spawn-rate", "2", "--duration", "1")
    result = modelyard(*args, workdir=tmp_path, timeout_s=60)

    assert result.returncode == 0, result.stderr
    (report,) = (tmp_path / "loadtests").glob("nilm-*")
    assert {"locust_stats.csv", "report.html", "summary.json"} <= {p.name for p in report.iterdir()}
    assert "0 failed" in result.stderr
    assert str(report / "report.html") in result.stderr.replace("\n", "")


def test_cli_reports_503_answers_as_failures_and_exits_1(stub_server: Stub, tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    out = tmp_path / "out"
    args = ("loadtest", stub_server.url, "--users", "2", "--duration", "1", "--output", str(out))
    result = modelyard(*args, "--request-log", str(ids), workdir=tmp_path, timeout_s=60)

    assert result.returncode == 1, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    (predict,) = [e for e in summary["endpoints"] if e["name"] == "/predict"]
    assert predict["failures"] == predict["requests"] > 0
    (failure,) = summary["failures"]
    assert failure["error"].startswith("HTTP 503: ") and "model is overloaded" in failure["error"]
    posts = stub_server.predictions
    assert posts
    for headers, body in posts:
        assert REQUEST_ID.match(headers["X-Request-ID"])
        assert headers["Content-Type"] == "application/json"
        sent = json.loads(body)
        assert sent["interval_s"] == 60 and len(sent["aggregate_w"]) == 5
    assert len({headers["X-Request-ID"] for headers, _ in posts}) == len(posts)
    assert ids.read_text() == ""  # no prediction succeeded
    assert "HTTP 503: " in result.stderr and "model is overloaded" in result.stderr


@pytest.mark.parametrize("stub_server", [{"interval_s": 60}], indirect=True)
def test_a_locustfile_that_cannot_build_its_payloads_is_a_clear_error(
    stub_server: Stub, tmp_path: Path
) -> None:
    with pytest.raises(ModelyardError, match=r"exit code 3\): modelyard load test set-up failed"):
        run_loadtest(stub_server.url, None, 1, 1.0, 30, tmp_path)


# --- refusals before anything runs -----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://example.com:8000", "http://10.0.0.7:8000", "http://127.0.0.2:8000", "https://[::2]/"],
)
def test_non_local_hosts_are_refused_before_anything_runs(url: str, tmp_path: Path) -> None:
    with pytest.raises(ModelyardError, match=r"refusing to load-test .*only a server on this"):
        run_loadtest(url, "nilm", 1, 1.0, 1, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_remote_host_with_one_line(tmp_path: Path) -> None:
    result = modelyard("loadtest", "http://192.0.2.1:8000", workdir=tmp_path, timeout_s=60)
    assert_user_error(result, "refusing to load-test 192.0.2.1")
    assert not (tmp_path / "loadtests").exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("127.0.0.1:8000", "must look like http://127.0.0.1:8000"),
        ("http://127.0.0.1:99999", "not a valid URL"),
        ("http://127.0.0.1:8000/?x=1", "must not have a query"),
    ],
)
def test_malformed_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ModelyardError, match=re.escape(message)):
        run_loadtest(url, None, 1, 1.0, 1)


def test_local_spellings_are_accepted() -> None:
    assert runner.local_base_url("http://localhost:8000/") == "http://localhost:8000"
    assert runner.local_base_url("http://[::1]:8000") == "http://[::1]:8000"
    assert runner.local_base_url("http://127.0.0.1:8000/api/") == "http://127.0.0.1:8000/api"


def test_nothing_listening_is_a_clear_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ModelyardError, match=f"no server answers at {re.escape(url)}"):
        run_loadtest(url, None, 1, 1.0, 1, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("users", "rate", "duration", "message"),
    [
        (0, 1.0, 1.0, "users must be at least 1, got 0"),
        (1, 0.0, 1.0, "spawn rate must be a positive number of users per second, got 0.0"),
        (1, float("nan"), 1.0, "spawn rate must be a positive number"),
        (1, 1.0, 0.0, "duration must be a positive number of seconds, got 0.0"),
        (1, 1.0, -5.0, "duration must be a positive number of seconds, got -5.0"),
    ],
)
def test_bad_arguments_get_precise_messages(
    users: int, rate: float, duration: float, message: str
) -> None:
    with pytest.raises(ModelyardError, match=re.escape(message)):
        run_loadtest("http://127.0.0.1:8000", None, users, rate, duration)


def test_cli_bad_users_is_a_user_error(tmp_path: Path) -> None:
    args = ("loadtest", "http://127.0.0.1:8000", "--users", "0")
    assert_user_error(modelyard(*args, workdir=tmp_path, timeout_s=60), "users must be at least 1")


def test_another_project_than_the_one_named_is_refused(nilm_url: str) -> None:
    with pytest.raises(ModelyardError, match="serves project 'nilm' \\(task 'nilm'\\), not 'avm'"):
        run_loadtest(nilm_url, "avm", 1, 1.0, 1)


def test_an_unknown_task_family_is_refused_before_locust_runs(tmp_path: Path) -> None:
    server = Stub({"project": "birdsong", "task": "audio", "details": {}})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(ModelyardError, match=r"task 'audio'.*known task families: nilm, tabul"):
            run_loadtest(server.url, None, 1, 1.0, 1, tmp_path / "out")
    finally:
        server.shutdown()
        server.server_close()
    assert not (tmp_path / "out").exists() and not server.predictions


APARTMENT = {"area_m2": 84.5, "rooms": 3, "zip": "0150", "built": "1931-01-01"}


@pytest.mark.parametrize(
    "stub_server",
    [
        {
            "project": "oslo_flats",  # a project no table in modelyard has heard of
            "task": "tabular",
            "details": {"features": list(APARTMENT), "example": APARTMENT},
        }
    ],
    indirect=True,
)
def test_any_project_of_a_known_task_family_is_load_tested_from_its_example(
    stub_server: Stub, tmp_path: Path
) -> None:
    summary = run_loadtest(stub_server.url, None, 2, 2.0, 1, tmp_path / "out")

    assert summary.project == "oslo_flats" and summary.locust_exit_code == 1  # 503s
    assert stub_server.predictions
    # no OpenAPI schema to bound a perturbation by: the example row itself, every time
    assert all(json.loads(body) == APARTMENT for _, body in stub_server.predictions)


def test_missing_locust_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner.importlib.util, "find_spec", lambda _name: None)
    with pytest.raises(ModelyardError, match=re.escape('pip install "modelyard[loadtest]"')):
        run_loadtest("http://127.0.0.1:8000", None, 1, 1.0, 1)


def test_an_overrunning_locust_is_stopped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(runner, "MARGIN_S", 0.5)
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    with pytest.raises(ModelyardError, match="did not finish within 2 s and was stopped"):
        runner.run_bounded(sleeper, tmp_path, {}, 1.5)


# --- payloads --------------------------------------------------------------------------------


def test_mains_profile_is_plausible_and_seeded() -> None:
    day = mains_profile(1440, 60, np.random.default_rng(1), limit_w=23000.0)
    again = mains_profile(1440, 60, np.random.default_rng(1), limit_w=23000.0)
    np.testing.assert_array_equal(day, again)
    assert day.min() >= 0 and 80 < np.median(day) < 800  # a base load
    assert day.max() > 1500  # appliance runs
    short = mains_profile(WINDOW, 60, np.random.default_rng(2), limit_w=2000.0)
    assert short.shape == (WINDOW,) and short.max() <= 1900.0 and short.max() > np.median(short)


def test_series_length_options() -> None:
    assert nilm_series_length("window", 599, 60, 599, 20160) == 599
    assert nilm_series_length("day", 599, 60, 599, 20160) == 1440
    assert nilm_series_length("day", 15, 60, 15, 500) == 500
    assert nilm_series_length("3", 15, 60, 15, 500) == 15
    with pytest.raises(ModelyardError, match="'window', 'day' or a positive number"):
        LoadOptions(nilm_length="week")
    with pytest.raises(ModelyardError, match="MODELYARD_LOADTEST_SEED must be an integer"):
        LoadOptions.from_env({"MODELYARD_LOADTEST_SEED": "x"})


def test_tabular_rows_are_perturbed_lightly_within_bounds_and_types() -> None:
    body = {"anyOf": [{"$ref": "#/components/schemas/HouseRow"}, {"type": "array"}]}
    openapi = {
        "paths": {
            "/predict": {
                "post": {"requestBody": {"content": {"application/json": {"schema": body}}}}
            }
        },
        "components": {
            "schemas": {
                "Row": {"properties": {}},  # not the one /predict refers to
                "HouseRow": {
                    "properties": {
                        "area_m2": {"type": "number", "minimum": 15, "maximum": 300},
                        "year": {"anyOf": [{"type": "number", "minimum": 1600}, {"type": "null"}]},
                        "floor": {"anyOf": [{"type": "number"}, {"type": "null"}]},
                        "zip_code": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                    }
                },
            }
        },
    }
    names = ["area_m2", "year", "floor", "zip_code"]
    fields = numeric_fields(openapi, names)
    assert fields == [
        NumericField("area_m2", 15.0, 300.0),
        NumericField("year", 1600.0, None),
        NumericField("floor", None, None),
    ]
    example = {"area_m2": 15.5, "year": 1965, "floor": None, "zip_code": 2100}
    rng = np.random.default_rng(0)
    rows = [perturbed_row(example, fields, rng) for _ in range(200)]
    assert all(15 <= r["area_m2"] <= 15.5 * 1.05 and isinstance(r["area_m2"], float) for r in rows)
    assert all(isinstance(r["year"], int) and abs(r["year"] - 1965) <= 99 for r in rows)
    assert len({r["year"] for r in rows}) > 1
    assert all(r["floor"] is None and r["zip_code"] == 2100 for r in rows)
    payloads = tabular_payloads({"example": example, "features": names}, openapi, seed=0)
    assert json.loads(payloads[0].body) == example  # the example itself is sent too


def test_vision_payloads_are_multipart_jpegs_of_the_model_size(tmp_path: Path) -> None:
    payload = vision_payloads({"image_size": IMAGE_SIZE}, seed=0, variants=2)[1]
    boundary = payload.content_type.split("boundary=")[1]
    assert payload.content_type.startswith("multipart/form-data; ")
    head, data = payload.body.split(b"\r\n\r\n", 1)
    assert b'name="file"' in head and b"Content-Type: image/jpeg" in head
    assert data.endswith(f"\r\n--{boundary}--\r\n".encode())
    image = Image.open(io.BytesIO(data[: -len(boundary) - 8]))
    assert image.format == "JPEG" and image.size == (IMAGE_SIZE, IMAGE_SIZE)

    folder = tmp_path / "images"
    folder.mkdir()
    with pytest.raises(ModelyardError, match=re.escape("no .jpg/.jpeg/.png images under")):
        vision_payloads({}, seed=0, images=folder)
    Image.new("RGB", (40, 30), "green").save(folder / "leaf.png")
    (real,) = vision_payloads({}, seed=0, images=folder)
    assert b'filename="leaf.png"' in real.body and b"Content-Type: image/png" in real.body
    with pytest.raises(ModelyardError, match="images folder not found"):
        LoadOptions(images=tmp_path / "missing")


def test_stats_rows_without_requests_read_as_none(tmp_path: Path) -> None:
    from modelyard.loadtest.report import read_stats

    columns = ["Type", "Name", "Request Count", "Failure Count", "Average Response Time"]
    columns += ["Max Response Time", "Requests/s", "Failures/s", "50%", "95%", "99%"]
    path = tmp_path / "locust_stats.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerow(["", "Aggregated", 0, 0, 0, 0, 0, 0, "N/A", "N/A", "N/A"])
    total, endpoints = read_stats(path)
    assert total.requests == 0 and total.p95_ms is None and endpoints == ()


def test_the_modelyard_process_never_imports_locust() -> None:
    script = "import sys, modelyard.cli, modelyard.loadtest.runner; print('locust' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
    # the one locustfile is packaged beside the runner
    assert runner.LOCUSTFILE.is_file()
