"""How long ``modelyard monitor`` takes on a large window: 100,000 logged predictions.

A synthetic tabular-like log in SQLite (10 features: 8 numerical, 2 categorical, one row per
request, with a few hundred predictions carrying feedback), against a 5,000-row reference profile
(the most a bundle holds). Timed: the whole check as the command runs it (read and convert the
window, Evidently's drift + data summary report, the feedback join, writing report.html,
report.json and verdict.json), and apart from it the one-time import of Evidently that every
``modelyard monitor`` process pays. Target (issue 16): under 30 s on the development machine.

The logged inputs hold the profile's features directly, so the drift rows are the inputs
themselves (``flat_rows``); the cost of a family's ``log_rows`` is a dict lookup per feature.

    python benchmarks/monitor_scale.py [--rows 100000]
"""

import argparse
import importlib
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from bench_common import write_results
from modelyard.core.bundle import Bundle, TensorSpec, write_bundle
from modelyard.core.reference_profile import MAX_ROWS, PROFILE_FILE, Column, ReferenceProfile
from modelyard.monitoring.check import MonitorSettings, run_check
from modelyard.monitoring.outputs import write_outputs
from modelyard.serving.log_schema import feedback, predictions, prepare_schema

NUMERICAL = [f"x{i}" for i in range(8)]
CATEGORICAL = ["region", "kind"]
MODEL = "scale-test"
TARGET = "price"


def sample(rng: np.random.Generator, rows: int, shift: float) -> list[dict[str, Any]]:
    values = rng.normal(shift, 1.0, size=(rows, len(NUMERICAL))).round(3)
    regions = rng.choice(["north", "south", "east", "west"], size=rows)
    kinds = rng.choice(["flat", "house", "farm"], size=rows)
    return [
        dict(zip(NUMERICAL, map(float, values[i]), strict=True))
        | {"region": str(regions[i]), "kind": str(kinds[i])}
        for i in range(rows)
    ]


def build_bundle(directory: Path, rng: np.random.Generator) -> Bundle:
    reference = sample(rng, MAX_ROWS, 0.0)
    columns = {n: Column("numerical", "input") for n in NUMERICAL}
    columns |= {n: Column("categorical", "input") for n in CATEGORICAL}
    profile = ReferenceProfile(
        family="tabular",
        drawn=f"{MAX_ROWS} synthetic rows, standard normal features",
        seed=0,
        columns=columns,
        data={name: [row[name] for row in reference] for name in columns},
        metrics={"model": {"mdape": 0.1, "within_10pct": 0.5}},
    )
    profile.write(directory / PROFILE_FILE)
    (directory / "model.onnx").write_bytes(b"not run by the monitor")
    return write_bundle(
        directory / "bundle",
        directory / "model.onnx",
        {
            "project": "scale",
            "task": "tabular",
            "name": MODEL,
            "version": "1",
            "created_at": datetime.now(UTC),
            "inputs": [TensorSpec(name="x", dtype="float32", shape=["batch", 10])],
            "outputs": [TensorSpec(name="y", dtype="float32", shape=["batch", 1])],
            "preprocessing": {},
        },
        profile_file=directory / PROFILE_FILE,
    )


def fill_log(url: str, rng: np.random.Generator, rows: int, with_truth: int) -> None:
    engine = sa.create_engine(url)
    start = datetime.now(UTC) - timedelta(days=1)
    step = timedelta(days=1) / rows
    with engine.begin() as connection:
        prepare_schema(connection)
        for first in range(0, rows, 10_000):
            count = min(10_000, rows - first)
            features = sample(rng, count, 0.3)  # a mild shift: every column tested in earnest
            connection.execute(
                predictions.insert(),
                [
                    {
                        "request_id": f"r{first + i}",
                        "server_request_id": f"{first + i:032x}",
                        "created_at": start + (first + i) * step,
                        "model": MODEL,
                        "version": "1",
                        "route": "/predict",
                        "status": 200,
                        "latency_ms": 1.0,
                        "inputs": [features[i]],
                        "outputs": [{TARGET: 20000.0, "warnings": []}],
                    }
                    for i in range(count)
                ],
            )
        truths = rng.uniform(15000, 25000, with_truth)
        connection.execute(
            feedback.insert(),
            [
                {
                    "server_request_id": f"{i * (rows // with_truth):032x}",
                    "received_at": datetime.now(UTC),
                    "model": MODEL,
                    "truth": {TARGET: float(truths[i])},
                }
                for i in range(with_truth)
            ],
        )
    engine.dispose()


def flat_rows(inputs: Any, outputs: Any) -> list[dict[str, Any]]:
    del outputs
    return [dict(row) for row in inputs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="logged predictions")
    parser.add_argument("--name", default="monitor_scale", help="results file name")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        bundle = build_bundle(directory, rng)
        url = f"sqlite:///{directory / 'predictions.db'}"
        started = time.perf_counter()
        fill_log(url, rng, args.rows, with_truth=500)
        filled = time.perf_counter() - started
        settings = MonitorSettings(bundle=bundle, log_url=url, last=args.rows, drift_rows=flat_rows)
        started = time.perf_counter()
        importlib.import_module("modelyard.monitoring.drift_report")  # Evidently, once

        imported = time.perf_counter() - started
        started = time.perf_counter()
        result = run_check(settings)
        checked = time.perf_counter() - started
        write_outputs(result, directory / "out")
        total = time.perf_counter() - started
    verdict = result.verdict
    payload = {
        "rows": verdict["window"]["predictions"],
        "reference_rows": MAX_ROWS,
        "columns": len(NUMERICAL) + len(CATEGORICAL),
        "feedback_pairs": verdict["realised_accuracy"]["pairs"],
        "fill_log_s": round(filled, 2),
        "import_evidently_s": round(imported, 2),
        "check_s": round(checked, 2),
        "check_and_write_s": round(total, 2),
        "command_s": round(imported + total, 2),
        "tests": {n: c["method"] for n, c in verdict["drift"]["columns"].items()},
        "drift_share": verdict["drift"]["share"],
    }
    print(payload)
    print(f"results: {write_results(args.name, payload)}")


if __name__ == "__main__":
    main()
