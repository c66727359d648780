"""Plots: choosing the busiest days, and writing a real PNG for one of them."""

import struct
from pathlib import Path

import numpy as np

from modelyard.projects.nilm.plots import busiest_days, plot_day
from nilm_fixtures import MINUTE_NS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
START = np.datetime64("2014-03-01T00:00", "ns").astype(np.int64)


def _three_days() -> tuple[np.ndarray, np.ndarray]:
    """Hourly readings for 2014-03-01..03, two appliances.

    Energy per day (sum over both appliances): 1 March 24 * (10 + 0) = 240;
    2 March 24 * (10 + 0) + one 5000 W hour = 5240; 3 March 24 * (10 + 30) = 960.
    """
    hours = 72
    times = START + np.arange(hours, dtype=np.int64) * 60 * MINUTE_NS
    targets = np.zeros((hours, 2), dtype=np.float32)
    targets[:, 0] = 10.0
    targets[48:, 1] = 30.0
    targets[24 + 18, 1] = 5000.0  # 2 March, 18:00
    return times, targets


def test_busiest_days_picks_the_day_with_most_energy() -> None:
    times, targets = _three_days()
    assert busiest_days(times, targets, 1) == [np.datetime64("2014-03-02")]
    assert busiest_days(times, targets, 3) == [
        np.datetime64("2014-03-02"),
        np.datetime64("2014-03-03"),
        np.datetime64("2014-03-01"),
    ]
    # asking for more days than there are gives every day once
    assert len(busiest_days(times, targets, 10)) == 3


def test_busiest_days_counts_energy_not_peaks() -> None:
    # Day 1 has one 1000 W spike; day 2 a steady 100 W all day: 2400 > 1000.
    times = START + np.arange(48, dtype=np.int64) * 60 * MINUTE_NS
    targets = np.zeros((48, 1), dtype=np.float32)
    targets[5, 0] = 1000.0
    targets[24:, 0] = 100.0
    assert busiest_days(times, targets, 1) == [np.datetime64("2014-03-02")]


def test_plot_day_writes_a_png(tmp_path: Path) -> None:
    times, targets = _three_days()
    aggregate = targets.sum(axis=1) + 150.0
    predicted = targets * 0.9
    path = tmp_path / "plots" / "nested" / "house_2_2014-03-02.png"

    written = plot_day(
        path,
        np.datetime64("2014-03-02"),
        times,
        aggregate,
        targets,
        predicted,
        ["kettle", "microwave"],
        "house 2, busiest day",
    )

    assert written == path
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 10_000
    # IHDR: width and height in pixels = figsize (12, 2 * (2 appliances + 1)) inches * 90 dpi
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (12 * 90, 6 * 90)
