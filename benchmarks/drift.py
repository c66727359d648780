"""Drift detection proven on real data: requests replayed through a real server into a real log.

Per family (tabular AVM, vision EuroSAT, NILM), a model is trained on the quick schedule
(``experiment=quick``: accuracy is not the point, the monitor is) and exported with its reference
profile; ``modelyard serve`` then answers requests on 127.0.0.1 into a SQLite prediction log, the
true value of each request is sent back with ``POST /feedback``, and the monitor
(:func:`modelyard.monitoring.check.run_check`, what ``modelyard monitor --last N`` runs) judges
windows of the newest N predictions:

* **no drift**: requests from the project's own held-out data, replayed window by window and
  checked after each (a cron job checking every N requests): the false-alarm rate over up to
  ``--no-drift-windows`` disjoint windows per window size;
* **real drift** (:mod:`drift_scenarios`): the shifted requests replayed once, then the newest
  25, 50, ... of them checked: the smallest window at which the monitor says dataset drift, and
  the realised accuracy of the largest window against the no-drift one.

    python benchmarks/drift.py [--families avm eurosat nilm] [--quick] \\
        [--datasets ../shared/datasets] [--workdir .modelyard-bench/drift]
    python benchmarks/drift.py --rejudge results/drift.json ...  # the same windows, judged again

Results: a markdown table per family on stdout and ``benchmarks/results/drift.json``.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench_common import write_results
from drift_scenarios import FAMILIES, Family, Replay, Request
from modelyard.core.bundle import Bundle, load_bundle
from modelyard.monitoring.check import DEFAULT_DRIFT_SHARE, MonitorSettings, run_check
from modelyard.serving.context import PREDICTION_ID_HEADER
from modelyard.serving.log_schema import feedback as feedback_table
from modelyard.serving.log_schema import predictions

HERE = Path(__file__).resolve().parent
SIZES = (25, 50, 100, 200, 500)
QUICK_SIZES = (50, 200)
#: A lower ``--drift-share`` than the monitor's default, judged from the same checks' shares.
LOWER_SHARE = 0.3
#: Feedback items per POST /feedback (the route takes up to 1,000).
FEEDBACK_BATCH = 500


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--quick", action="store_true", help=f"windows {QUICK_SIZES}, fewer runs")
    parser.add_argument("--datasets", type=Path, default=HERE.parent.parent / "shared/datasets")
    parser.add_argument("--workdir", type=Path, default=HERE.parent / ".modelyard-bench/drift")
    parser.add_argument("--sizes", type=int, nargs="+", help=f"window sizes (default {SIZES})")
    parser.add_argument("--no-drift-windows", type=int, help="most windows per size (20)")
    parser.add_argument("--retrain", action="store_true", help="train even if a bundle exists")
    parser.add_argument("--name", default="drift", help="results file name (without .json)")
    parser.add_argument(
        "--rejudge",
        type=Path,
        metavar="RESULTS_JSON",
        help="judge the windows of that earlier run's logs again, replaying nothing "
        "(drift_rejudge.py)",
    )
    args = parser.parse_args(argv)
    args.sizes = sorted(set(args.sizes or (QUICK_SIZES if args.quick else SIZES)))
    if any(size < 1 for size in args.sizes):
        parser.error("--sizes must be positive")
    args.no_drift_windows = args.no_drift_windows or (5 if args.quick else 20)
    args.plants_zip = args.datasets / "images" / "plantvillage_potato.zip"
    return args


def disjoint_windows(total: int, size: int, most: int) -> list[tuple[int, int]]:
    """Up to ``most`` back-to-back ``[start, stop)`` windows of ``size`` among ``total`` rows."""
    count = min(most, total // size) if size > 0 else 0
    return [(i * size, (i + 1) * size) for i in range(count)]


def smallest_detected(detected: dict[int, bool]) -> int | None:
    """The smallest window size whose check said drift (None: no size did)."""
    return min((size for size, drift in detected.items() if drift), default=None)


def false_alarm_rate(checks: Sequence[dict[str, Any]], key: str = "drift") -> float | None:
    """The share of checks that said drift (``key``: the verdict's, or any column's)."""
    return sum(bool(c[key]) for c in checks) / len(checks) if checks else None


# -- training -------------------------------------------------------------------------------
def trained_bundle(family: Family, args: argparse.Namespace) -> tuple[Path, list[str]]:
    """The family's quick model, trained and exported unless the workdir has one already;
    the commands that made it."""
    project = family.project
    source = args.datasets / family.data_folder
    chosen = [f"project={project}", "experiment=quick", "tracking=none", *family.overrides]
    steps = [
        ["data", "fetch", f"project={project}", "--source", str(source)],
        ["data", "prepare", f"project={project}"],
        ["train", *chosen],
        ["evaluate", *chosen],  # the metrics the bundle is promoted with
        ["export", *chosen],
    ]
    commands = [f"MODELYARD_HOME={args.workdir} modelyard {' '.join(s)}" for s in steps]
    latest = args.workdir / "bundles" / project / "LATEST"
    if args.retrain or not latest.is_file():
        env = {**os.environ, "MODELYARD_HOME": str(args.workdir)}
        for step in steps:
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "modelyard", *step],
                check=False,
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise RuntimeError(f"`{' '.join(step)}` failed:\n{done.stderr[-3000:]}")
            print(f"  {' '.join(step[:2])}: {time.perf_counter() - started:.0f} s", flush=True)
    return latest.parent / latest.read_text().strip(), commands


# -- replaying through the server -----------------------------------------------------------
def replay(client: httpx.Client, requests: Sequence[Request], log_url: str, model: str) -> None:
    """POST each request to /predict, send its truth to /feedback, wait until both are logged."""
    engine = sa.create_engine(log_url)
    before = _logged(engine, model)
    items: list[dict[str, Any]] = []
    for request in requests:
        answer = client.post("/predict", content=request.body, headers=request.headers)
        answer.raise_for_status()
        if request.truth is not None:
            items.append(
                {"prediction_id": answer.headers[PREDICTION_ID_HEADER], "truth": request.truth}
            )
    sent = 0
    for first in range(0, len(items), FEEDBACK_BATCH):
        batch = items[first : first + FEEDBACK_BATCH]
        client.post("/feedback", json=batch).raise_for_status()
        sent += len(batch)
    want = (before[0] + len(requests), before[1] + sent)
    deadline = time.monotonic() + 30
    while _logged(engine, model) < want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the log holds {_logged(engine, model)}, expected {want}")
        time.sleep(0.1)
    engine.dispose()


def _logged(engine: sa.Engine, model: str) -> tuple[int, int]:
    """(answered predictions, feedback rows) of ``model`` in the log so far."""
    with engine.connect() as connection:
        inspector = sa.inspect(connection)
        if not inspector.has_table(predictions.name):
            return 0, 0
        count = sa.func.count()
        made = connection.execute(
            sa.select(count).where(predictions.c.model == model, predictions.c.status == 200)
        ).scalar_one()
        truths = 0
        if inspector.has_table(feedback_table.name):
            truths = connection.execute(
                sa.select(count).where(feedback_table.c.model == model)
            ).scalar_one()
    return int(made), int(truths)


def check(bundle: Bundle, log_url: str, last: int) -> dict[str, Any]:
    """The monitor over the newest ``last`` predictions: what the benchmark reports of it."""
    verdict = run_check(MonitorSettings(bundle=bundle, log_url=log_url, last=last)).verdict
    accuracy = verdict["realised_accuracy"]
    return {
        "window": last,
        "drift": verdict["drift"]["detected"],
        "column_drift": bool(verdict["drift"]["drifted_columns"]),
        "share": round(verdict["drift"]["share"], 3),
        "drifted": verdict["drift"]["drifted_columns"],
        "strongly_drifted": verdict["drift"]["strongly_drifted_columns"],
        # each tested column's score (a p-value at these window sizes), for other rules
        "scores": {n: c["score"] for n, c in verdict["drift"]["columns"].items()},
        "alert": verdict["alert"],
        "reasons": verdict["reasons"],
        "pairs": accuracy["pairs"],
        "realised": {n: m["realised"] for n, m in accuracy["metrics"].items()},
        "promoted": {n: m["promoted"] for n, m in accuracy["metrics"].items()},
        "below": accuracy["below_promoted"],
    }


def no_drift(
    replayed: Replay, bundle: Bundle, log_url: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Held-out requests window after window, each checked alone: false alarms per size."""
    requests = replayed.held_out
    per_size = {}
    for size in args.sizes:
        checks = []
        for start, stop in disjoint_windows(len(requests), size, args.no_drift_windows):
            replay(replayed.client, requests[start:stop], log_url, bundle.manifest.name)
            checks.append(check(bundle, log_url, size))
        per_size[size] = no_drift_summary(size, checks)
    return per_size


def no_drift_summary(size: int, checks: list[dict[str, Any]]) -> dict[str, Any]:
    """False alarms among the held-out windows of one size."""
    block = {
        "windows": len(checks),
        "false_alarms": sum(c["drift"] for c in checks),
        "false_alarm_rate": false_alarm_rate(checks),
        "column_false_alarm_rate": false_alarm_rate(checks, "column_drift"),
        f"false_alarm_rate_share_{LOWER_SHARE}": false_alarm_rate(
            [{"drift": c["share"] >= LOWER_SHARE} for c in checks]
        ),
        "false_alarm_rate_share_alone": false_alarm_rate(
            [{"drift": c["share"] >= DEFAULT_DRIFT_SHARE} for c in checks]
        ),
        "false_alarm_rate_one_column_alone": false_alarm_rate(
            [{"drift": bool(c["strongly_drifted"])} for c in checks]
        ),
        "alerts": sum(c["alert"] for c in checks),
        "accuracy_alerts": sum(bool(c["below"]) for c in checks),
        "checks": checks,
    }
    print(
        f"  no drift, window {size}: {block['false_alarms']}/{len(checks)} "
        f"(share >= {LOWER_SHARE}: {block[f'false_alarm_rate_share_{LOWER_SHARE}']}, "
        f"a column: {block['column_false_alarm_rate']}; "
        f"accuracy alerts {block['accuracy_alerts']})",
        flush=True,
    )
    return block


def drifted(
    replayed: Replay, bundle: Bundle, log_url: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Each scenario's requests replayed once, then the newest N of them checked per size."""
    results = {}
    for scenario in replayed.scenarios:
        requests = scenario.requests[: max(args.sizes)]
        replay(replayed.client, requests, log_url, bundle.manifest.name)
        checks = [check(bundle, log_url, size) for size in args.sizes if size <= len(requests)]
        results[scenario.name] = scenario_summary(
            scenario.name, scenario.description, len(requests), checks
        )
    return results


def scenario_summary(
    name: str, description: str, requests: int, checks: list[dict[str, Any]]
) -> dict[str, Any]:
    """The smallest window of one drift scenario at which each rule says drift."""
    by_size = {c["window"]: c for c in checks}
    found = {
        "description": description,
        "requests": requests,
        "smallest_window_detected": smallest_detected({s: c["drift"] for s, c in by_size.items()}),
        f"smallest_window_share_{LOWER_SHARE}": smallest_detected(
            {s: c["share"] >= LOWER_SHARE for s, c in by_size.items()}
        ),
        "smallest_window_column_drift": smallest_detected(
            {s: c["column_drift"] for s, c in by_size.items()}
        ),
        "smallest_window_share_alone": smallest_detected(
            {s: c["share"] >= DEFAULT_DRIFT_SHARE for s, c in by_size.items()}
        ),
        "smallest_window_one_column_alone": smallest_detected(
            {s: bool(c["strongly_drifted"]) for s, c in by_size.items()}
        ),
        "checks": checks,
    }
    print(
        f"  {name}: dataset drift from {found['smallest_window_detected']}, "
        f"share >= {LOWER_SHARE} from {found[f'smallest_window_share_{LOWER_SHARE}']}, "
        f"a column from {found['smallest_window_column_drift']}",
        flush=True,
    )
    return found


def run_family(family: Family, args: argparse.Namespace) -> dict[str, Any]:
    from serving import PYTHON, server

    print(f"{family.project}: training (experiment=quick)", flush=True)
    started = time.perf_counter()
    bundle_dir, commands = trained_bundle(family, args)
    bundle = load_bundle(bundle_dir)
    log_path = args.workdir / "logs" / f"{family.project}-{int(time.time())}.db"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_url = f"sqlite:///{log_path}"
    serve = [PYTHON, "-m", "modelyard", "serve", str(bundle_dir), "--prediction-log", log_url]
    with server([*serve, "--log-level", "warning"], "/ready", {}) as facts:
        base = f"http://127.0.0.1:{facts['port']}"
        with httpx.Client(base_url=base, timeout=60) as client:
            replayed = family.scenarios(args, client)
            print(f"{family.project}: {len(replayed.held_out)} held-out requests", flush=True)
            quiet = no_drift(replayed, bundle, log_url, args)
            shifted = drifted(replayed, bundle, log_url, args)
    return {
        "family": family.project,
        "bundle": str(bundle_dir),
        "commands": commands,
        "serve": " ".join([*serve[1:], "--port", "PORT"]),
        "monitor": f"modelyard monitor {bundle_dir} --log {log_url} --last N",
        "held_out": replayed.held_out_description,
        "no_drift": quiet,
        "drift": shifted,
        "seconds": round(time.perf_counter() - started, 1),
    }


# -- report ---------------------------------------------------------------------------------
def markdown(result: dict[str, Any]) -> str:
    """The family's results as a markdown table: one row per scenario and window size."""
    lines = [
        f"### {result['family']}",
        "",
        "| scenario | window | windows | dataset drift | any column drifted | drift share | "
        "drifted columns | realised (pairs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size, block in result["no_drift"].items():
        shares = [c["share"] for c in block["checks"]]
        last = block["checks"][-1] if block["checks"] else None
        lines.append(
            f"| no drift (held out) | {size} | {block['windows']} | "
            f"{block['false_alarms']} ({_percent(block['false_alarm_rate'])} false alarms) | "
            f"{_percent(block['column_false_alarm_rate'])} | {_range(shares)} | | "
            f"{_realised(last)} |"
        )
    for name, block in result["drift"].items():
        for c in block["checks"]:
            lines.append(
                f"| {name} | {c['window']} | 1 | {'drift' if c['drift'] else 'no drift'} | "
                f"{'yes' if c['column_drift'] else 'no'} | {c['share']:.2f} | "
                f"{', '.join(c['drifted'][:6])} | {_realised(c)} |"
            )
    return "\n".join(lines)


def _percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.0%}"


def _range(values: Sequence[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if values else "n/a"


def _realised(c: dict[str, Any] | None) -> str:
    if c is None or not c["realised"]:
        return ""
    metrics = ", ".join(f"{n} {v:.3g}" for n, v in c["realised"].items() if v is not None)
    return f"{metrics} ({c['pairs']})"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.rejudge and not args.datasets.is_dir():
        raise SystemExit(f"no datasets at {args.datasets} (give --datasets)")
    args.workdir = args.workdir.resolve()
    results = {
        "command": " ".join(["python benchmarks/drift.py", *(argv or sys.argv[1:])]),
        "sizes": args.sizes,
        "families": {},
    }
    previous = json.loads(args.rejudge.read_text())["families"] if args.rejudge else None
    for name in args.families:
        if previous is not None:
            from drift_rejudge import rejudge_family

            result = rejudge_family(FAMILIES[name], previous[name], args)
        else:
            result = run_family(FAMILIES[name], args)
        results["families"][name] = result
        print(markdown(result), flush=True)
        write_results(args.name, results)
    print(f"results: {write_results(args.name, results)}")


if __name__ == "__main__":
    main()
