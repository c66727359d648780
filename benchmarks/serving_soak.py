"""Soak test: 200 Locust users for 60 s against ``modelyard serve``, checking the prediction log.

Two runs on the same NILM bundle, each with its own SQLite prediction log:

1. **steady**: the whole load against a running server; target: zero failed requests;
2. **SIGTERM**: the server is stopped with SIGTERM half-way while the users keep going.

In both, every prediction a user received a 200 for (its ``X-Request-ID`` is written by the
locustfile to a file) must have its row in the prediction log once the server has stopped. In the
second run, the requests after the stop cannot get through; the script reports how the failures
split into refused connections, connections closed before any answer (a request sent into the
closing listener's queue, or on a keep-alive connection being closed) and HTTP error statuses.

    .venv/bin/python benchmarks/serving_soak.py --source ../shared/datasets/nilm
"""

import argparse
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench_common import nilm_run_and_bundle, write_results
from modelyard.loadtest.options import LoadOptions
from modelyard.loadtest.report import LoadTestSummary
from modelyard.loadtest.runner import run_loadtest
from modelyard.serving.prediction_log import predictions
from modelyard.serving.server_process import HOST, free_port, wait_until_healthy

REFUSED = "Connection refused"
NO_ANSWER = "no HTTP answer"


def start(bundle: Path, port: int, log_url: str, workers: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "modelyard", "serve", str(bundle), "--port", str(port)]
    command += ["--prediction-log", log_url, "--workers", str(workers), "--log-level", "warning"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until_healthy(f"http://{HOST}:{port}", process, 60, "/ready")
    return process


def logged_ids(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                str(r) for r in connection.execute(sa.select(predictions.c.request_id)).scalars()
            }
    finally:
        engine.dispose()


def one_run(
    bundle: Path,
    scratch: Path,
    name: str,
    users: int,
    seconds: float,
    workers: int,
    stop_at: float | None,
) -> dict[str, Any]:
    port = free_port()
    log_url = f"sqlite:///{scratch}/{name}.db"
    ids_file = scratch / f"{name}-ids.txt"
    process = start(bundle, port, log_url, workers)
    outcome: dict[str, LoadTestSummary] = {}

    def load() -> None:
        outcome["summary"] = run_loadtest(
            f"http://{HOST}:{port}",
            "nilm",
            users=users,
            spawn_rate=max(1.0, users / 5),
            duration_s=seconds,
            output_dir=scratch / name,
            options=LoadOptions(request_log=ids_file),
        )

    runner = threading.Thread(target=load)
    runner.start()
    stopped_after = None
    if stop_at is not None:
        time.sleep(stop_at)
        process.send_signal(signal.SIGTERM)
        stopped_after = stop_at
    runner.join()
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    summary = outcome["summary"]
    succeeded = [line for line in ids_file.read_text().splitlines() if line.strip()]
    stored = logged_ids(log_url)
    missing = set(succeeded) - stored
    refused = sum(f.occurrences for f in summary.failures if REFUSED in f.error)
    unanswered = sum(f.occurrences for f in summary.failures if NO_ANSWER in f.error) - refused
    result = {
        "users": users,
        "seconds": seconds,
        "workers": workers,
        "sigterm_after_s": stopped_after,
        "requests": summary.total.requests,
        "failures": summary.total.failures,
        "failures_refused": refused,
        "failures_closed_without_answer": unanswered,
        "failures_http_status": summary.total.failures - refused - unanswered,
        "failure_messages": {f.error[:120]: f.occurrences for f in summary.failures},
        "requests_per_s": summary.total.requests_per_s,
        "p50_ms": summary.total.p50_ms,
        "p99_ms": summary.total.p99_ms,
        "successful_predictions": len(succeeded),
        "logged_rows": len(stored),
        "successful_without_row": len(missing),
        "server_exit_code": process.returncode,
        "report": str(summary.report_html),
    }
    print(f"{name}: {result}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", help="NILM data to train the model on")
    parser.add_argument("--bundle", type=Path, help="An existing NILM bundle instead")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--name", default="serving_soak")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="modelyard-soak-"))
    if args.bundle is None:
        if not args.source:
            parser.error("give --source (to train a model) or --bundle")
        _, args.bundle = nilm_run_and_bundle(args.source, scratch / "home")
    results = {
        "steady": one_run(
            args.bundle, scratch, "steady", args.users, args.seconds, args.workers, None
        ),
        "sigterm": one_run(
            args.bundle,
            scratch,
            "sigterm",
            args.users,
            args.seconds,
            args.workers,
            args.seconds / 2,
        ),
    }
    print(f"results: {write_results(args.name, results)}")


if __name__ == "__main__":
    main()
