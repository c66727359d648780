"""benchmarks/drift.py without data: its arguments and its window logic (the benchmark itself
replays real data through a real server and is run by hand; docs/benchmarks.md)."""

import itertools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import drift


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
