"""benchmarks/drift.py without data: its arguments, its window logic and the re-judging of a
replayed log (the benchmark itself replays real data through a real server and is run by hand;
docs/benchmarks.md)."""

import itertools
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from modelyard.serving.log_schema import feedback, predictions, prepare_schema

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import drift
import drift_rejudge


def test_windows_are_disjoint_and_bounded() -> None:
    assert drift.disjoint_windows(1478, 500, 20) == [(0, 500), (500, 1000)]
    windows = drift.disjoint_windows(1478, 25, 20)
    assert len(windows) == 20
    assert all(a[1] == b[0] for a, b in itertools.pairwise(windows))
    assert drift.disjoint_windows(10, 25, 20) == []


def test_smallest_detected_window_and_false_alarm_rate() -> None:
    assert drift.smallest_detected({25: False, 50: True, 100: True}) == 50
    assert drift.smallest_detected({25: False, 50: False}) is None
    checks = [{"drift": True, "column_drift": True}, {"drift": False, "column_drift": True}]
    assert drift.false_alarm_rate(checks) == 0.5
    assert drift.false_alarm_rate(checks, "column_drift") == 1.0
    assert drift.false_alarm_rate([]) is None


def test_arguments(tmp_path: Path) -> None:
    args = drift.parse_args(["--families", "avm", "--quick", "--datasets", str(tmp_path)])
    assert args.families == ["avm"]
    assert args.sizes == list(drift.QUICK_SIZES)
    assert args.no_drift_windows == 5
    full = drift.parse_args(["--sizes", "100", "25", "--datasets", str(tmp_path)])
    assert full.sizes == [25, 100] and full.no_drift_windows == 20
    with pytest.raises(SystemExit):
        drift.parse_args(["--families", "mnist"])
    with pytest.raises(SystemExit):
        drift.main(["--datasets", str(tmp_path / "absent")])


def test_rejudge_finds_each_checks_rows_in_replay_order() -> None:
    previous = {
        "no_drift": {"25": {"windows": 2}, "50": {"windows": 1}},
        "drift": {"region": {"requests": 30}, "areas": {"requests": 20}},
    }
    ids = list(range(101, 251))
    quiet, shifted = drift_rejudge.replayed_windows(ids, previous, "log.db")
    assert quiet == {25: [ids[0:25], ids[25:50]], 50: [ids[50:100]]}
    assert shifted == {"region": ids[100:130], "areas": ids[130:150]}
    with pytest.raises(SystemExit, match="holds 151 answered predictions"):
        drift_rejudge.replayed_windows([*ids, 251], previous, "log.db")
    assert drift_rejudge.log_url_of(
        {"monitor": "modelyard monitor B --log sqlite:///x.db --last N"}
    )
    assert drift_rejudge.log_url_of({"log": "sqlite:///y.db"}) == "sqlite:///y.db"


def test_rejudge_copies_a_window_with_its_feedback(tmp_path: Path) -> None:
    """A real SQLite prediction log: the copy holds the window's predictions and only their
    truths, and the monitor's newest-N query finds them."""
    source = tmp_path / "log.db"
    engine = sa.create_engine(f"sqlite:///{source}")
    when = datetime(2026, 12, 1, tzinfo=UTC)
    with engine.begin() as connection:
        prepare_schema(connection)
        for i in range(1, 7):
            connection.execute(
                predictions.insert().values(
                    request_id=f"r{i}",
                    server_request_id=f"s{i}",
                    created_at=when,
                    model="m",
                    version="1",
                    route="/predict",
                    status=200,
                    latency_ms=1.0,
                    inputs={"x": i},
                    outputs={"y": i},
                )
            )
            connection.execute(
                feedback.insert().values(
                    server_request_id=f"s{i}", received_at=when, model="m", truth={"y": -i}
                )
            )
    engine.dispose()
    assert drift_rejudge.answered_ids(source, "m") == [1, 2, 3, 4, 5, 6]
    url = drift_rejudge.copy_window(source, [3, 4, 5], tmp_path / "window.db")
    copy = sa.create_engine(url)
    with copy.connect() as connection:
        kept = connection.execute(sa.select(predictions.c.id, predictions.c.inputs)).all()
        truths = connection.execute(sa.select(feedback.c.server_request_id)).scalars().all()
    copy.dispose()
    assert [(row.id, row.inputs) for row in kept] == [(3, {"x": 3}), (4, {"x": 4}), (5, {"x": 5})]
    assert sorted(truths) == ["s3", "s4", "s5"]
