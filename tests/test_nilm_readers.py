"""Readers of the 1-minute CSV layout: house discovery, monthly files, and clear errors."""

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import shared_datasets_root
from modelyard.core.errors import DataError
from modelyard.core.row_accounting import ReadLedger, RefusalPolicy
from modelyard.projects.nilm.readers import (
    discover_houses,
    read_csv_house,
    snake_case,
)
from nilm_fixtures import CSV_HEADER, write_gzip_csv

COLUMNS = ["aggregate", "kettle", "dishwasher", "washing_machine", "microwave"]
REAL_NILM = shared_datasets_root() / "nilm"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("WashingMachine", "washing_machine"),
        ("Aggregate", "aggregate"),
        ("Kettle", "kettle"),
        ("dishwasher", "dishwasher"),
        ("  Microwave ", "microwave"),
        ("Fridge Freezer", "fridge_freezer"),
        ("Tumble-Dryer", "tumble_dryer"),
        ("Appliance1", "appliance1"),
        ("TV2Set", "tv2_set"),
    ],
)
def test_snake_case(name: str, expected: str) -> None:
    assert snake_case(name) == expected


# --------------------------------------------------------------------------- discover_houses


def test_discover_houses_finds_every_house_directory_with_monthly_files(tmp_path: Path) -> None:
    write_gzip_csv(tmp_path / "house_b" / "2014-01.csv.gz", [])
    write_gzip_csv(tmp_path / "house_a" / "2014-01.csv.gz", [])
    (tmp_path / "house_c").mkdir()
    (tmp_path / "house_c" / "2014-01.csv").write_text(CSV_HEADER + "\n")
    (tmp_path / "empty_dir").mkdir()  # no monthly files: not a house
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not data")
    (tmp_path / "stray.txt").write_text("a file beside the houses")

    houses = discover_houses(tmp_path)

    assert houses == {
        "house_a": tmp_path / "house_a",
        "house_b": tmp_path / "house_b",
        "house_c": tmp_path / "house_c",
    }
    assert list(houses) == sorted(houses)


def test_discover_houses_root_that_is_itself_a_house(tmp_path: Path) -> None:
    house = tmp_path / "ukdale_house9"
    write_gzip_csv(house / "2013-05.csv.gz", [])
    write_gzip_csv(house / "2013-06.csv.gz", [])
    assert discover_houses(house) == {"ukdale_house9": house}


def test_discover_houses_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="not found") as info:
        discover_houses(missing)
    assert str(missing) in str(info.value)


def test_discover_houses_file_instead_of_directory(tmp_path: Path) -> None:
    a_file = write_gzip_csv(tmp_path / "2014-01.csv.gz", [])
    with pytest.raises(DataError, match="got a file"):
        discover_houses(a_file)


def test_discover_houses_no_houses(tmp_path: Path) -> None:
    (tmp_path / "house_1").mkdir()
    (tmp_path / "house_1" / "data.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match="no houses found") as info:
        discover_houses(tmp_path)
    assert "*.csv.gz" in str(info.value)


# --------------------------------------------------------------------------- read_csv_house


def _row(time: str, *watts: float) -> str:
    return ",".join([time, *(repr(float(w)) for w in watts)])


def test_read_csv_house_joins_monthly_files_sorted_without_duplicates(tmp_path: Path) -> None:
    house = tmp_path / "house_1"
    # February is written first and holds rows out of order; January's last minute reappears
    # at the start of February (with different values: the first file's reading must win).
    write_gzip_csv(
        house / "2014-02.csv.gz",
        [
            _row("2014-02-01 00:01:00", 310, 0, 0, 0, 0),
            _row("2014-01-31 23:59:00", 999, 9, 9, 9, 9),
            _row("2014-02-01 00:00:00", 300, 2000, 0, 0, 0),
        ],
    )
    write_gzip_csv(
        house / "2014-01.csv.gz",
        [
            _row("2014-01-31 23:58:00", 200, 0, 0, 0, 0),
            _row("2014-01-31 23:59:00", 210, 0, 5, 0, 0),
            _row("2014-01-31 23:59:00", 777, 7, 7, 7, 7),  # duplicate inside one file
        ],
    )

    frame = read_csv_house(house)

    assert list(frame.columns) == COLUMNS
    expected_index = pd.DatetimeIndex(
        ["2014-01-31 23:58", "2014-01-31 23:59", "2014-02-01 00:00", "2014-02-01 00:01"]
    )
    assert list(frame.index) == list(expected_index)
    assert frame.index.is_monotonic_increasing
    assert frame.index.is_unique
    assert frame["aggregate"].tolist() == [200.0, 210.0, 300.0, 310.0]
    assert frame["dishwasher"].tolist() == [0.0, 5.0, 0.0, 0.0]
    assert frame["kettle"].tolist() == [0.0, 0.0, 2000.0, 0.0]
    assert all(dtype == np.float64 for dtype in frame.dtypes)
    assert frame.index.tz is None


def test_read_csv_house_keeps_missing_readings_as_nan(tmp_path: Path) -> None:
    house = tmp_path / "house_1"
    write_gzip_csv(
        house / "2014-01.csv.gz",
        ["2014-01-01 00:00:00,100.0,,0,0,0", "2014-01-01 00:01:00,,1.0,0,0,0"],
    )
    frame = read_csv_house(house)
    assert np.isnan(frame["kettle"].iloc[0])
    assert np.isnan(frame["aggregate"].iloc[1])
    assert frame["aggregate"].iloc[0] == 100.0


def test_read_csv_house_without_files(tmp_path: Path) -> None:
    (tmp_path / "house_1").mkdir()
    with pytest.raises(DataError, match="no CSV files"):
        read_csv_house(tmp_path / "house_1")


def test_read_csv_house_corrupt_gzip(tmp_path: Path) -> None:
    house = tmp_path / "house_1"
    house.mkdir()
    bad = house / "2014-01.csv.gz"
    bad.write_bytes(b"this is not gzip data at all\n" * 10)
    with pytest.raises(DataError, match="cannot read") as info:
        read_csv_house(house)
    assert str(bad) in str(info.value)


def test_read_csv_house_truncated_gzip(tmp_path: Path) -> None:
    house = tmp_path / "house_1"
    rows = [_row(f"2014-01-01 00:{m:02d}:00", 100 + m, 0, 0, 0, 0) for m in range(60)]
    good = write_gzip_csv(house / "2014-01.csv.gz", rows)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"2014-01\.csv\.gz"):
        read_csv_house(house)


@pytest.mark.parametrize("gzipped", [True, False])
def test_read_csv_house_empty_file(tmp_path: Path, gzipped: bool) -> None:
    house = tmp_path / "house_1"
    house.mkdir()
    if gzipped:
        empty = house / "2014-01.csv.gz"
        with gzip.open(empty, "wb"):
            pass
    else:
        empty = house / "2014-01.csv"
        empty.write_bytes(b"")
    with pytest.raises(DataError, match="is empty") as info:
        read_csv_house(house)
    assert str(empty) in str(info.value)


def test_read_csv_house_missing_time_column(tmp_path: Path) -> None:
    house = tmp_path / "house_1"
    write_gzip_csv(
        house / "2014-01.csv.gz",
        ["2014-01-01 00:00:00,1,0,0,0,0"],
        header="Timestamp,Aggregate,Kettle,Dishwasher,WashingMachine,Microwave",
    )
    with pytest.raises(DataError, match="no 'Time' column"):
        read_csv_house(house)


def test_read_csv_house_missing_aggregate_column(tmp_path: Path) -> None:
    house = tmp_path / "house_1"
    write_gzip_csv(
        house / "2014-01.csv.gz",
        ["2014-01-01 00:00:00,1,0,0,0,0"],
        header="Time,Mains,Kettle,Dishwasher,WashingMachine,Microwave",
    )
    with pytest.raises(DataError, match="no 'Aggregate' column"):
        read_csv_house(house)


def test_read_csv_house_non_numeric_power(tmp_path: Path) -> None:
    house = tmp_path / "house_1"
    write_gzip_csv(
        house / "2014-01.csv.gz",
        ["2014-01-01 00:00:00,100,0,0,0,0", "2014-01-01 00:01:00,lots,0,0,0,0"],
    )
    with pytest.raises(
        DataError, match=r"1 of 2 rows refused \(50.000%\): not_a_number 1 \(line 3\)"
    ):
        read_csv_house(house)


def test_read_csv_house_non_time_values(tmp_path: Path) -> None:
    house = tmp_path / "house_1"
    write_gzip_csv(house / "2014-01.csv.gz", ["yesterday,100,0,0,0,0"])
    with pytest.raises(DataError, match=r"not_a_time 1 \(line 2\)"):
        read_csv_house(house)


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(
    not (REAL_NILM / "ukdale_house2").is_dir(),
    reason=f"real NILM data not present at {REAL_NILM / 'ukdale_house2'}",
)
def test_read_real_ukdale_house2() -> None:
    frame = read_csv_house(REAL_NILM / "ukdale_house2")

    assert len(frame) == 204948
    assert list(frame.columns) == COLUMNS
    steps = np.diff(frame.index.to_numpy().astype("datetime64[s]").astype(np.int64))
    assert (steps == 60).all()
    aggregate = frame["aggregate"].to_numpy()
    assert not np.isnan(aggregate).any()
    assert (aggregate >= 0).all()


# --------------------------------------------------------------------------- row accounting


def _minutes(count: int) -> list[str]:
    times = pd.date_range("2014-01-01", periods=count, freq="60s")
    return [_row(str(time), 100 + m, 0, 0, 0, 0) for m, time in enumerate(times)]


def test_an_unclosed_quote_costs_one_row_not_the_rest_of_the_file(tmp_path: Path) -> None:
    # pandas' C parser makes everything after line 12's quote one field (no line survives).
    rows = _minutes(2_000)
    rows[10] = '"' + rows[10]
    write_gzip_csv(tmp_path / "house_1" / "2014-01.csv.gz", rows)
    ledger = ReadLedger(RefusalPolicy(max_refused_fraction=0.01))

    frame = read_csv_house(tmp_path / "house_1", ledger)

    assert len(frame) == 1_999
    report = ledger.to_json()["house_1/2014-01.csv.gz"]
    assert report["refused_by_reason"] == {"unclosed_quote": {"count": 1, "first": [12]}}
    assert (report["lines"], report["read"], report["kept"]) == (2_001, 2_000, 1_999)


def test_a_bad_reading_refuses_its_row_and_warns_under_the_threshold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = _minutes(2_000)
    rows[99] = rows[99].replace(",0.0,", ",lots,", 1)
    rows[199] = "yesterday" + rows[199][19:]
    write_gzip_csv(tmp_path / "house_1" / "2014-01.csv.gz", rows)
    ledger = ReadLedger(RefusalPolicy(max_refused_fraction=0.01))

    with caplog.at_level("WARNING"):
        frame = read_csv_house(tmp_path / "house_1", ledger)

    assert len(frame) == 1_998
    refused = ledger.to_json()["house_1/2014-01.csv.gz"]["refused_by_reason"]
    assert refused == {
        "not_a_number": {"count": 1, "first": [101]},
        "not_a_time": {"count": 1, "first": [201]},
    }
    assert "REFUSED ROWS house_1/2014-01.csv.gz: 2 of 2000 rows refused" in caplog.text


def test_repeated_times_are_counted_as_filtered_in_their_file(tmp_path: Path) -> None:
    house = tmp_path / "house_1"
    write_gzip_csv(house / "2014-01.csv.gz", _minutes(3))
    write_gzip_csv(
        house / "2014-02.csv.gz", [*_minutes(2), _row("2014-01-01 00:03:00", 1, 0, 0, 0, 0)]
    )
    ledger = ReadLedger()

    frame = read_csv_house(house, ledger)

    assert len(frame) == 4
    reports = ledger.to_json()
    assert reports["house_1/2014-01.csv.gz"]["filtered"] == 0
    second = reports["house_1/2014-02.csv.gz"]
    assert second["filtered_by_rule"] == {"repeated time (first reading kept)": 2}
    assert second["read"] == second["kept"] + second["filtered"] == 3


@pytest.mark.skipif(
    not (REAL_NILM / "refit_house2").is_dir(),
    reason=f"real NILM data not present at {REAL_NILM / 'refit_house2'}",
)
def test_every_line_of_the_real_files_is_accounted_for() -> None:
    ledger = ReadLedger()
    for house in ("ukdale_house2", "refit_house2"):
        read_csv_house(REAL_NILM / house, ledger)
    for name, report in ledger.to_json().items():
        assert report["refused"] == 0, name
        assert report["read"] == report["lines"] - 1 == report["kept"], name
