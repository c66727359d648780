"""Energy measurement from hardware counters, on a real powercap-layout directory tree."""

import os
from pathlib import Path

import pytest

from modelyard.core.energy import EnergyMeter, RaplCounters

MAX_RANGE_UJ = 262_143_328_850


def make_powercap(root: Path, counters: dict[str, int]) -> Path:
    """Directories laid out like /sys/class/powercap (packages and one sub-zone)."""
    for zone, value in counters.items():
        (root / zone).mkdir(parents=True)
        (root / zone / "energy_uj").write_text(f"{value}\n")
        (root / zone / "max_energy_range_uj").write_text(f"{MAX_RANGE_UJ}\n")
    return root


def set_counter(root: Path, zone: str, value: int) -> None:
    (root / zone / "energy_uj").write_text(f"{value}\n")


def test_rapl_package_zones_are_summed_and_subzones_ignored(tmp_path: Path) -> None:
    root = make_powercap(
        tmp_path, {"intel-rapl:0": 1_000_000, "intel-rapl:1": 5_000_000, "intel-rapl:0:0": 7}
    )
    counters = RaplCounters(root)
    assert [z.name for z in counters.zones] == ["intel-rapl:0", "intel-rapl:1"]
    before = counters.read_uj()
    set_counter(root, "intel-rapl:0", 3_500_000)  # +2.5 J
    set_counter(root, "intel-rapl:1", 6_000_000)  # +1.0 J
    set_counter(root, "intel-rapl:0:0", 999_999_999)  # a sub-zone: already inside package 0
    assert counters.joules_between(before, counters.read_uj()) == pytest.approx(3.5)


def test_a_counter_that_wrapped_around_is_corrected(tmp_path: Path) -> None:
    root = make_powercap(tmp_path, {"intel-rapl:0": MAX_RANGE_UJ - 1_000_000})
    counters = RaplCounters(root)
    before = counters.read_uj()
    set_counter(root, "intel-rapl:0", 500_000)  # 1.0 J to the top, 0.5 J after the wrap
    assert counters.joules_between(before, counters.read_uj()) == pytest.approx(1.5)


def test_meter_reports_cpu_energy_when_rapl_is_readable(tmp_path: Path) -> None:
    root = make_powercap(tmp_path, {"intel-rapl:0": 0})
    with EnergyMeter(powercap=root, gpu=False) as meter:
        set_counter(root, "intel-rapl:0", 42_000_000)
    assert meter.report is not None
    report = meter.report.as_dict()
    assert report["measured"] is True
    assert report["cpu_joules"] == pytest.approx(42.0)
    assert report["total_joules"] == pytest.approx(42.0)
    assert report["gpu_joules"] is None
    assert report["sources"] == ["RAPL (1 CPU package(s))"]


def test_without_counters_the_meter_says_why_instead_of_guessing(tmp_path: Path) -> None:
    with EnergyMeter(powercap=tmp_path / "absent", gpu=True) as meter:
        pass
    assert meter.report is not None
    report = meter.report.as_dict()
    if report["gpu_joules"] is None:  # the usual case on machines without an NVIDIA GPU
        assert report["measured"] is False and report["total_joules"] is None
        assert any(reason.startswith("GPU:") for reason in report["unavailable"])
    assert report["cpu_joules"] is None
    assert any("no RAPL powercap interface" in reason for reason in report["unavailable"])


def test_a_powercap_tree_without_packages_is_reported(tmp_path: Path) -> None:
    (tmp_path / "dtpm").mkdir()
    counters = RaplCounters(tmp_path)
    assert counters.zones == [] and "exposes no RAPL package zone" in str(counters.problem)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file; permissions cannot be tested")
def test_unreadable_counters_are_reported_as_such(tmp_path: Path) -> None:
    root = make_powercap(tmp_path, {"intel-rapl:0": 1})
    (root / "intel-rapl:0" / "energy_uj").chmod(0)
    counters = RaplCounters(root)
    assert counters.zones == [] and "not readable" in str(counters.problem)
