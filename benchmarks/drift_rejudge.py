"""Re-judging a drift benchmark's replayed requests without replaying them: ``drift.py --rejudge``.

``drift.py`` replays requests into a SQLite prediction log in a fixed order (per window size its
held-out windows back to back, then each scenario's requests) and checks the newest N rows after
each step. Every check thus judged a contiguous run of the log's answered predictions, which
this module finds again from the earlier run's results (window counts and scenario sizes) and
judges anew with the monitor of this checkout and the bundle of ``--workdir``: a changed rule,
threshold or reference profile measured on the very same requests in minutes, not the replay's
half hour per family. Each window is copied, with its feedback, into a SQLite file of its own,
and the monitor reads its newest N predictions, as the replay's check did.
"""

import argparse
import itertools
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from drift import check, no_drift_summary, scenario_summary
from drift_scenarios import Family
from modelyard.core.bundle import load_bundle
from modelyard.serving.log_schema import FEEDBACK_TABLE, TABLE, prepare_schema


def log_url_of(previous: dict[str, Any]) -> str:
    """The log an earlier run replayed into (its ``log``, or the URL in its monitor command)."""
    if "log" in previous:
        return str(previous["log"])
    return str(previous["monitor"].split(" --log ", 1)[1].split()[0])


def answered_ids(log: Path, model: str) -> list[int]:
    """Ids of the log's answered predictions of ``model``, in the order they were logged."""
    with sqlite3.connect(log) as db:
        rows = db.execute(
            f"SELECT id FROM {TABLE} WHERE model = ? AND route = '/predict' AND status = 200 "
            "ORDER BY id",
            (model,),
        ).fetchall()
    return [int(row[0]) for row in rows]


def copy_window(log: Path, ids: Sequence[int], target: Path) -> str:
    """A prediction log at ``target`` holding the predictions ``ids`` of ``log`` and their
    feedback; its URL."""
    url = f"sqlite:///{target}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        prepare_schema(connection)
    engine.dispose()
    with sqlite3.connect(target) as db:
        db.execute("ATTACH DATABASE ? AS source", (str(log),))
        db.execute(
            f"INSERT INTO {TABLE} SELECT * FROM source.{TABLE} WHERE id BETWEEN ? AND ?",
            (min(ids), max(ids)),
        )
        db.execute(
            f"INSERT INTO {FEEDBACK_TABLE} SELECT * FROM source.{FEEDBACK_TABLE} "
            f"WHERE server_request_id IN (SELECT server_request_id FROM {TABLE})"
        )
    return url


def replayed_windows(
    ids: Sequence[int], previous: dict[str, Any], log: str
) -> tuple[dict[int, list[list[int]]], dict[str, list[int]]]:
    """The ids each check of the earlier run judged, in the order ``drift.py`` replays them:
    per window size its held-out windows, then each scenario's requests (checked newest N)."""
    taken = 0

    def next_rows(count: int) -> list[int]:
        nonlocal taken
        taken += count
        return list(ids[taken - count : taken])

    quiet = {
        int(size): [next_rows(int(size)) for _ in range(block["windows"])]
        for size, block in previous["no_drift"].items()
    }
    shifted = {name: next_rows(block["requests"]) for name, block in previous["drift"].items()}
    if taken != len(ids):
        raise SystemExit(
            f"{log} holds {len(ids)} answered predictions, the earlier run accounts for "
            f"{taken}: not the log of that run"
        )
    return quiet, shifted


def rejudge_family(
    family: Family, previous: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """The earlier run's windows of ``family``, judged again (see the module text)."""
    started = time.perf_counter()
    latest = args.workdir / "bundles" / family.project / "LATEST"
    if not latest.is_file():
        raise SystemExit(f"no {family.project} bundle in {args.workdir} to judge with: export one")
    bundle_dir = latest.parent / latest.read_text().strip()
    bundle = load_bundle(bundle_dir)
    log = Path(sa.make_url(log_url_of(previous)).database or "")
    ids = answered_ids(log, bundle.manifest.name)
    quiet_rows, shifted_rows = replayed_windows(ids, previous, str(log))
    with tempfile.TemporaryDirectory() as scratch:
        judged = itertools.count(1)

        def judge(rows: list[int], last: int) -> dict[str, Any]:
            url = copy_window(log, rows, Path(scratch) / f"window-{next(judged)}.db")
            return check(bundle, url, last)

        quiet = {
            size: no_drift_summary(size, [judge(rows, size) for rows in windows])
            for size, windows in quiet_rows.items()
        }
        shifted = {}
        for name, rows in shifted_rows.items():
            block = previous["drift"][name]
            checks = [judge(rows[-c["window"] :], c["window"]) for c in block["checks"]]
            shifted[name] = scenario_summary(name, block["description"], len(rows), checks)
    return {
        **previous,
        "bundle": str(bundle_dir),
        "log": f"sqlite:///{log}",
        "rejudged": f"the windows of the replay into {log}, judged again",
        "monitor": f"modelyard monitor {bundle_dir} --log sqlite:///WINDOW.db --last N",
        "no_drift": quiet,
        "drift": shifted,
        "seconds": round(time.perf_counter() - started, 1),
    }
