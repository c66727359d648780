"""Mains outages recorded as zeros become invalid intervals; appliance zeros and short dips stay."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelyard.core.config import load_config
from modelyard.core.errors import ConfigError
from modelyard.core.families import load_task
from modelyard.projects.nilm.outages import MainsOutageRule, outage_mask
from modelyard.projects.nilm.preparation import PreparedHouse, prepare_house
from modelyard.projects.nilm.storage import load_house
from modelyard.stages import prepare
from nilm_fixtures import write_gzip_csv

NAN = np.nan
THREE_MINUTES = MainsOutageRule(floor_w=1.0, min_s=180)


# --------------------------------------------------------------------------- outage_mask


def test_outage_mask_marks_only_runs_at_or_below_the_floor_lasting_long_enough() -> None:
    # 1..2: two zeros (120 s); 4..6: 180 s at 1 W (at the floor, as long as the limit); 8..12:
    # four zeros cut in two by a missing reading; 14..17: four zeros (240 s); 19: 0.5 W once.
    mains = [50, 0, 0, 50, 1, 1, 1, 50, 0, 0, NAN, 0, 0, 50, 0, 0, 0, 0, 50, 0.5, 50]
    mask, runs = outage_mask(np.array(mains), 60, THREE_MINUTES)

    expected = np.zeros(len(mains), dtype=bool)
    expected[4:7] = True  # "at or below" the floor, for "at least" 180 s
    expected[14:18] = True
    np.testing.assert_array_equal(mask, expected)
    assert runs == 2


def test_outage_mask_counts_seconds_not_readings() -> None:
    mains = np.array([100.0] + [0.0] * 20 + [100.0])
    rule = MainsOutageRule(floor_w=0.0, min_s=60)
    assert outage_mask(mains, 6, rule)[0].sum() == 20  # 20 readings of 6 s = 120 s >= 60 s
    assert outage_mask(mains, 2, rule)[0].sum() == 0  # 40 s < 60 s
    assert outage_mask(mains, 6, None)[0].sum() == 0  # no rule


# --------------------------------------------------------------------------- prepare_house


def _house() -> pd.DataFrame:
    """Minutes 0..19: mains dips to 0 for 2 minutes (2..3) and is down for 6 (10..15); the kettle
    reads 0 (off) almost throughout; minute 17 has no mains reading (a short gap)."""
    mains = [300.0, 310, 0, 0, 320, 2500, 2400, 330, 300, 290, 0, 0, 0, 0, 0, 0, 280, NAN, 300, 310]
    kettle = [0.0, 0, 0, 0, 0, 2200, 2100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    index = pd.date_range("2014-01-01 00:00", periods=20, freq="60s", name="time")
    return pd.DataFrame({"aggregate": mains, "kettle": kettle}, index=index)


def test_a_zero_run_longer_than_the_limit_is_invalid_a_short_one_and_appliance_zeros_stay() -> None:
    house, report = prepare_house("h", _house(), ["kettle"], 60, 120, {}, THREE_MINUTES)

    expected_valid = np.ones(20, dtype=bool)
    expected_valid[10:16] = False
    np.testing.assert_array_equal(house.valid, expected_valid)
    # the two-minute dip is kept as read; the kettle's zeros are valid "off" readings
    np.testing.assert_array_equal(house.aggregate[2:4], [0.0, 0.0])
    assert house.valid[(house.targets[:, 0] == 0)].sum() == 20 - 2 - 6
    # the short gap at 17 lies between real readings: interpolated, (280 + 300) / 2
    assert house.aggregate[17] == 290.0
    assert (report.outage_zeros, report.outage_runs, report.long_gaps) == (6, 1, 0)
    assert report.invalid == report.long_gaps + report.outage_zeros == 6
    assert report.filled == 1


def test_a_gap_touching_an_outage_is_not_filled_towards_its_zeros() -> None:
    frame = _house()
    frame.iloc[16, 0] = NAN  # minute 16 now missing, between the outage (10..15) and 18
    frame.iloc[17, 0] = 300.0
    house, report = prepare_house("h", frame, ["kettle"], 60, 120, {}, THREE_MINUTES)

    assert not house.valid[16]  # one missing reading, short, but next to the outage
    assert (report.outage_zeros, report.long_gaps, report.filled) == (6, 1, 0)
    assert report.invalid == 7


def test_without_a_rule_zero_mains_stay_valid() -> None:
    house, report = prepare_house("h", _house(), ["kettle"], 60, 120, {}, None)
    assert house.valid.all()
    assert report.outage_zeros == report.invalid == 0


# --------------------------------------------------------------------------- configuration


def _data(**values: Any) -> dict[str, Any]:
    return {"mains_floor_w": 10, "mains_outage_s": 60} | values


def test_the_project_config_defines_the_rule() -> None:
    cfg = load_config(["project=nilm"])
    assert MainsOutageRule.from_config(cfg.project.data) == MainsOutageRule(10.0, 60.0)
    off = load_config(["project=nilm", "project.data.mains_floor_w=null"])
    assert MainsOutageRule.from_config(off.project.data) is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mains_floor_w": -1}, "mains_floor_w must be a number of watts >= 0 or null"),
        ({"mains_floor_w": "low"}, "mains_floor_w must be a number"),
        ({"mains_outage_s": 0}, "mains_outage_s must be a positive number of seconds"),
        ({"mains_outage_s": None}, "mains_outage_s must be a positive number"),
        ({"mains_outage_s": True}, "mains_outage_s must be a positive number"),
    ],
)
def test_a_bad_rule_setting_is_a_one_line_config_error(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        MainsOutageRule.from_config(_data(**values))


def test_a_missing_rule_setting_names_both_keys() -> None:
    with pytest.raises(ConfigError, match=r"mains_floor_w and project\.data\.mains_outage_s"):
        MainsOutageRule.from_config({"mains_floor_w": 10})


def test_a_config_saved_before_the_rule_still_loads_but_does_not_prepare(tmp_path: Path) -> None:
    """Export rebuilds the task from a run's saved config, which may predate the two keys."""
    old = load_config(
        ["project=nilm", "~project.data.mains_floor_w", "~project.data.mains_outage_s"]
    )
    task = load_task(old)  # what export does with a run's config
    with pytest.raises(ConfigError, match="must be set"):
        task.prepare(tmp_path / "raw", tmp_path / "prepared")


# --------------------------------------------------------------------------- prepare stage


def _prepare(source: Path, tmp_path: Path) -> tuple[dict[str, Any], PreparedHouse]:
    """Prepare ``source`` (one house, ``house_a``) with the project's own configuration."""
    cfg = load_config(
        [
            "project=nilm",
            f"paths.workdir={tmp_path / 'work'}",
            "project.data.train_houses=[house_a]",
            "project.data.test_houses=[]",
        ]
    )
    summary = prepare.run(cfg, source=source)
    prepared = Path(cfg.paths.prepared)
    assert json.loads((prepared / "prepare.json").read_text()) == summary
    return summary, load_house(prepared / "house_a.npz")


def test_the_prepare_summary_accounts_for_outage_intervals_per_house(tmp_path: Path) -> None:
    """300 minutes of a house whose logger writes zeros in every column for minutes 100..219."""
    rows = []
    for minute in range(300):
        mains = 0.0 if 100 <= minute < 220 else 250.0 + minute % 7
        time = pd.Timestamp("2014-03-01") + pd.Timedelta(minutes=minute)
        rows.append(f"{time:%Y-%m-%d %H:%M:%S},{mains},0,0,0,0")
    write_gzip_csv(tmp_path / "raw" / "house_a" / "2014-03.csv.gz", rows)

    summary, house = _prepare(tmp_path / "raw", tmp_path)

    reported = summary["houses"]["house_a"]
    assert summary["mains_outage"] == {"mains_floor_w": 10.0, "mains_outage_s": 60.0}
    assert (reported["outage_zeros"], reported["outage_runs"], reported["invalid"]) == (120, 1, 120)
    # 99-reading windows: 100 - 99 + 1 = 2 before the outage, none in the 80 minutes after it
    assert reported["windows"] == 2
    assert not house.valid[100:220].any()
    assert house.valid[:100].all() and house.valid[220:].all()


# --------------------------------------------------------------------------- real data

REFIT_OUTAGE_MONTHS = ("2013-11", "2013-12", "2014-01", "2014-02")


def test_refit_house2_winter_2013_outage_is_invalid_after_preparation(
    nilm_source: Path, tmp_path: Path
) -> None:
    """REFIT house 2 reads 0 W, rows marked valid, from late October 2013 to mid-February 2014.

    Only those four months are prepared (a few seconds).
    """
    house_dir = tmp_path / "raw" / "house_a"
    house_dir.mkdir(parents=True)
    for month in REFIT_OUTAGE_MONTHS:
        (house_dir / f"{month}.csv.gz").symlink_to(nilm_source / "refit_house2" / f"{month}.csv.gz")

    summary, house = _prepare(tmp_path / "raw", tmp_path)

    times = house.times.astype("datetime64[ns]")
    stretch = (times >= np.datetime64("2013-11-01")) & (times < np.datetime64("2014-02-13"))
    assert (~house.valid[stretch]).mean() > 0.99  # all but the afternoon of 26 December
    assert not (house.valid & (house.aggregate <= 10)).any()  # no valid zero mains anywhere
    reported = summary["houses"]["house_a"]
    assert reported["outage_zeros"] == int((~house.valid).sum()) > 140_000
