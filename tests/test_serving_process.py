"""Serving as a user runs it: ``python -m modelyard serve`` / ``predict`` in real subprocesses."""

import csv
import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest

from bundle_factory import INTERVAL_S, make_nilm_bundle
from modelyard.core.bundle import Bundle
from modelyard.projects.nilm.inference import predict_series
from modelyard.projects.nilm.normalisation import Normalisation
from modelyard.serving.runtime import OnnxModel
from modelyard.serving.server_process import running_server

WINDOW = 15
APPLIANCES = ("kettle", "microwave")
CLI_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_nilm_bundle(
        tmp_path_factory.mktemp("process") / "bundle", window=WINDOW, appliances=APPLIANCES
    )


def reference(bundle: Bundle, series: np.ndarray) -> np.ndarray:
    model = OnnxModel(bundle.model_path)
    norm = Normalisation.from_json(bundle.manifest.preprocessing["normalisation"])
    return predict_series(series, model.run, norm, WINDOW)


def mains(length: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    series = rng.uniform(150.0, 450.0, length)
    series[length // 2 : length // 2 + 3] += 2900.0
    return np.round(series, 1)


def modelyard(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, with no terminal size forced through the environment."""
    env = {k: v for k, v in os.environ.items() if k not in {"COLUMNS", "LINES"}}
    return subprocess.run(
        [sys.executable, "-m", "modelyard", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def assert_user_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    """Exit code 2 and the message, without a traceback (line breaks ignored)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert fragment in " ".join(result.stderr.split())


def assert_one_line_user_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert_user_error(result, fragment)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]


# --- the real server -------------------------------------------------------------------------


def test_real_server_answers_health_predict_and_rejections(bundle: Bundle) -> None:
    series = mains(40)
    with running_server(bundle.path) as url, httpx.Client(base_url=url, timeout=10.0) as client:
        assert url.startswith("http://127.0.0.1:")
        health = client.get("/health")
        good = client.post(
            "/predict", json={"aggregate_w": series.tolist(), "interval_s": INTERVAL_S}
        )
        bad = client.post("/predict", json={"aggregate_w": series.tolist(), "interval_s": 1})

    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert good.status_code == 200, good.text
    body = good.json()
    assert body["length"] == series.size
    got = np.column_stack([body["appliances"][a] for a in APPLIANCES])
    np.testing.assert_allclose(got, reference(bundle, series), rtol=0, atol=0.0051)
    assert bad.status_code == 422
    assert "readings every 60 s" in bad.json()["detail"]


def test_real_server_applies_cli_length_limits(bundle: Bundle) -> None:
    with (
        running_server(bundle.path, extra_args=["--max-length", "20", "--threads", "1"]) as url,
        httpx.Client(base_url=url, timeout=10.0) as client,
    ):
        fits = client.post("/predict", json={"aggregate_w": mains(20).tolist()})
        too_long = client.post("/predict", json={"aggregate_w": mains(21).tolist()})
        details = client.get("/info").json()["details"]

    assert fits.status_code == 200, fits.text
    assert too_long.status_code == 422
    assert details["max_length"] == 20
    assert details["min_length"] == WINDOW


# --- serving never imports torch -------------------------------------------------------------

_NO_TORCH_SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    import warnings
    from pathlib import Path

    import modelyard.cli
    from modelyard.core.bundle import load_bundle
    from modelyard.serving.app import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    HEAVY = (
        "torch", "lightning", "pandas", "omegaconf", "hydra", "matplotlib",
        "gradio", "playwright", "modelyard.webui",
    )
    client = TestClient(create_app(load_bundle(Path(sys.argv[1]))))
    response = client.post("/predict", json={"aggregate_w": [300.0] * 40})
    print(json.dumps({
        "status": response.status_code,
        "length": response.json().get("length"),
        "torch": "torch" in sys.modules,
        "lightning": "lightning" in sys.modules,
        "heavy": sorted(m for m in HEAVY if m in sys.modules),
    }))
    """
)


def test_serving_imports_no_torch(bundle: Bundle) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _NO_TORCH_SCRIPT, str(bundle.path)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == 200
    assert report["length"] == 40
    assert report["torch"] is False, report
    assert report["lightning"] is False, report
    assert report["heavy"] == [], report


# --- offline prediction: python -m modelyard predict ------------------------------------------


def write_mains_csv(path: Path, series: np.ndarray) -> list[str]:
    start = datetime(2013, 6, 1, 7, 0)
    times = [(start + i * timedelta(seconds=INTERVAL_S)).isoformat() for i in range(series.size)]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Time", "Aggregate"])
        writer.writerows(zip(times, series.tolist(), strict=True))
    return times


def test_cli_predict_writes_what_evaluation_computes(bundle: Bundle, tmp_path: Path) -> None:
    series = mains(120)
    source = tmp_path / "input.csv"
    times = write_mains_csv(source, series)
    output = tmp_path / "out" / "predictions.csv"

    result = modelyard("predict", str(bundle.path), str(source), str(output))

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"wrote {series.size} row(s)" in result.stderr
    with output.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == series.size
    assert list(rows[0]) == ["Time", "Aggregate", *APPLIANCES]
    assert [row["Time"] for row in rows] == times
    np.testing.assert_allclose([float(row["Aggregate"]) for row in rows], series, atol=1e-3)
    got = np.array([[float(row[a]) for a in APPLIANCES] for row in rows])
    expected = reference(bundle, series)
    np.testing.assert_allclose(got, expected, rtol=0, atol=0.0051)
    assert (got >= 0).all()
    assert np.ptp(expected, axis=0).min() > 0.1


def test_cli_predict_missing_input_is_a_one_line_error(bundle: Bundle, tmp_path: Path) -> None:
    result = modelyard("predict", str(bundle.path), "missing.csv", "out.csv", cwd=tmp_path)

    assert_one_line_user_error(result, "input CSV not found: missing.csv")
    assert not (tmp_path / "out.csv").exists()


def test_cli_predict_without_aggregate_column(bundle: Bundle, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("Time,Power\n2013-06-01T07:00:00,250\n")

    result = modelyard("predict", str(bundle.path), "in.csv", "out.csv", cwd=tmp_path)

    assert_one_line_user_error(result, "has no 'Aggregate' column")
    assert not (tmp_path / "out.csv").exists()


def test_cli_predict_with_a_non_numeric_reading(bundle: Bundle, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("Time,Aggregate\n0,250\n1,lots\n")

    result = modelyard("predict", str(bundle.path), "in.csv", "out.csv", cwd=tmp_path)

    assert_one_line_user_error(result, "in.csv:3: Aggregate is not a number")


def test_cli_serve_missing_bundle_is_a_one_line_error() -> None:
    result = modelyard("serve", "/nonexistent", "--port", "1")

    assert_one_line_user_error(result, "bundle directory not found: /nonexistent")


def test_cli_serve_refuses_a_tampered_bundle(bundle: Bundle, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    copy.mkdir()
    for item in bundle.path.iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    with (copy / "model.onnx").open("ab") as handle:
        handle.write(b"\0")

    result = modelyard("serve", "b", "--port", "1", cwd=tmp_path)

    assert_one_line_user_error(result, "failed its integrity check: sha256 is")


def test_cli_error_with_a_long_path_stays_on_one_line(bundle: Bundle, tmp_path: Path) -> None:
    missing = tmp_path / ("a-long-directory-name-" * 4) / "input.csv"

    result = modelyard("predict", str(bundle.path), str(missing), str(tmp_path / "out.csv"))

    assert_one_line_user_error(result, str(missing))
