"""Tests for the NILMTK HDF5 reader, on small real files written the way NILMTK writes them."""

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelyard.core.errors import ConfigError, DataError
from modelyard.core.row_accounting import ReadLedger, RefusalPolicy
from modelyard.projects.nilm import hdf5_reader
from modelyard.projects.nilm.hdf5_reader import list_buildings, read_nilmtk_building

LONDON = "Europe/London"
ACTIVE = ("power", "active")
APPARENT = ("power", "apparent")

# Building 1 is recorded in summer (BST = UTC+1), so local and UTC times differ by an hour.
B1_START_UTC = pd.Timestamp("2014-07-01 11:00:00", tz="UTC")
B1_START_LOCAL = pd.Timestamp("2014-07-01 12:00:00")
# Building 2 spans the autumn change: 2014-10-26 01:00 UTC, when 02:00 BST becomes 01:00 GMT.
B2_START_UTC = pd.Timestamp("2014-10-26 00:00:00", tz="UTC")

BUILDING1_METADATA = {
    "instance": 1,
    "elec_meters": {
        1: {"site_meter": True, "device_model": "EcoManagerWholeHouse"},
        8: {"submeter_of": 0, "device_model": "EcoManagerTxPlug"},
        12: {"submeter_of": 0, "device_model": "EcoManagerTxPlug"},
        # A redundant parallel site meter: NILM Metadata marks it disabled so it is not summed.
        13: {"site_meter": True, "disabled": True, "device_model": "CurrentCostTx"},
    },
    "appliances": [
        {"type": "kettle", "instance": 1, "meters": [8]},
        {"type": "washing machine", "instance": 1, "meters": [12]},
        {"type": "fridge", "instance": 1, "meters": [9]},  # meter 9 has no table
    ],
}
BUILDING2_METADATA = {
    "instance": 2,
    "elec_meters": {1: {"site_meter": True}, 2: {"submeter_of": 1}},
    "appliances": [{"type": "washer dryer", "instance": 1, "meters": [2]}],
}


def _meter_frame(
    start: pd.Timestamp, periods: int, freq: str, columns: dict[tuple[str, str], Any]
) -> pd.DataFrame:
    """A meter table as NILMTK stores it: tz-aware index, (physical_quantity, type) columns."""
    index = pd.date_range(start, periods=periods, freq=freq).tz_convert(LONDON)
    frame = pd.DataFrame(
        {key: np.asarray(values, dtype="float32") for key, values in columns.items()},
        index=index,
    )
    frame.columns = pd.MultiIndex.from_tuples(
        list(frame.columns), names=["physical_quantity", "type"]
    )
    return frame


def _b1_mains() -> pd.DataFrame:
    """1 s mains for one minute: active = 100 + i, apparent = active + 10."""
    active = 100 + np.arange(60)
    return _meter_frame(B1_START_UTC, 60, "1s", {ACTIVE: active, APPARENT: active + 10})


def _b1_kettle() -> pd.DataFrame:
    """6 s kettle with apparent power only, on for readings 2-4."""
    values = [0, 0, 2000, 2000, 2000, 0, 0, 0, 0, 0]
    return _meter_frame(B1_START_UTC, 10, "6s", {APPARENT: values})


def _b1_washing_machine() -> pd.DataFrame:
    """6 s washing machine that only starts reporting half-way through the minute."""
    return _meter_frame(B1_START_UTC + pd.Timedelta("30s"), 5, "6s", {ACTIVE: [500.0] * 5})


def _b2_mains() -> pd.DataFrame:
    """1-minute mains across the autumn clock change: value = minutes since 00:00 UTC."""
    return _meter_frame(B2_START_UTC, 180, "60s", {ACTIVE: np.arange(180)})


def _set_metadata(store: pd.HDFStore, key: str, metadata: dict[str, Any]) -> None:
    """Attach metadata to a group node the way NILMTK's HDFDataStore.save_metadata does."""
    store.get_node(key)._v_attrs.metadata = metadata


@pytest.fixture(scope="module")
def h5_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A miniature ``ukdale.h5``: three buildings in the NILMTK layout."""
    path = tmp_path_factory.mktemp("nilmtk") / "mini.h5"
    tables = {
        "/building1/elec/meter1": _b1_mains(),
        "/building1/elec/meter8": _b1_kettle(),
        "/building1/elec/meter12": _b1_washing_machine(),
        "/building2/elec/meter1": _b2_mains(),
        "/building2/elec/meter2": _meter_frame(B2_START_UTC, 180, "60s", {ACTIVE: [7.0] * 180}),
        "/building3/elec/meter1": _b1_mains(),
    }
    with pd.HDFStore(path, mode="w") as store:
        for key, frame in tables.items():
            # pandas refuses data_columns with MultiIndex columns; the index column is always
            # queryable (and PyTables-indexed) in table format, which is all `where` needs.
            store.put(key, frame, format="table")
        store.get_node("/")._v_attrs.metadata = {"name": "MINI", "timezone": LONDON}
        _set_metadata(store, "/building1", BUILDING1_METADATA)
        _set_metadata(store, "/building2", BUILDING2_METADATA)
        # building3 has data but no metadata at all
    return path


def _local_index(periods: int, start: pd.Timestamp = B1_START_LOCAL) -> pd.DatetimeIndex:
    return pd.date_range(start, periods=periods, freq="6s", name="time")


def _b1_active_means() -> list[float]:
    """6 s means of the 1 s mains: readings 6k..6k+5 of 100 + i average to 102.5 + 6k."""
    return [102.5 + 6 * k for k in range(10)]


# --- metadata-driven reading ------------------------------------------------------------------


def test_metadata_mapping_resamples_to_6s_means(h5_path: Path) -> None:
    frame = read_nilmtk_building(h5_path, 1, ["kettle", "washing machine"])

    assert list(frame.columns) == ["aggregate", "kettle", "washing_machine"]
    pd.testing.assert_index_equal(frame.index, _local_index(10))
    assert frame.index.tz is None
    assert (frame.dtypes == "float64").all()
    assert frame["aggregate"].tolist() == _b1_active_means()  # active, not apparent (+10)
    assert frame["kettle"].tolist() == [0, 0, 2000, 2000, 2000, 0, 0, 0, 0, 0]
    washing = frame["washing_machine"]
    assert washing.iloc[:5].isna().all()  # not recorded yet: stays NaN
    assert washing.iloc[5:].tolist() == [500.0] * 5


def test_apparent_power_is_the_fallback_and_is_logged(
    h5_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger=hdf5_reader.__name__):
        read_nilmtk_building(h5_path, 1, ["kettle"])

    assert "/building1/elec/meter8: using column ('power', 'apparent')" in caplog.text
    assert "/building1/elec/meter1: using column ('power', 'active')" in caplog.text


def test_coarser_resample_interval(h5_path: Path) -> None:
    frame = read_nilmtk_building(h5_path, 1, [], resample="30s")

    pd.testing.assert_index_equal(
        frame.index, pd.date_range(B1_START_LOCAL, periods=2, freq="30s", name="time")
    )
    assert frame["aggregate"].tolist() == [114.5, 144.5]


def test_chunked_reading_gives_exact_means(h5_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 7-row chunks split most 6 s intervals across two chunks.
    monkeypatch.setattr(hdf5_reader, "CHUNK_ROWS", 7)
    frame = read_nilmtk_building(h5_path, 1, ["kettle"])

    assert frame["aggregate"].tolist() == _b1_active_means()


def test_washer_dryer_stands_in_for_washing_machine(h5_path: Path) -> None:
    frame = read_nilmtk_building(h5_path, 2, ["washing_machine"], resample="30min")

    assert (frame["washing_machine"] == 7.0).all()


def test_appliance_names_are_normalised(h5_path: Path) -> None:
    frame = read_nilmtk_building(h5_path, 1, ["Washing Machine", "washing_machine", "Kettle"])

    assert list(frame.columns) == ["aggregate", "washing_machine", "kettle"]


# --- explicit meters --------------------------------------------------------------------------


def test_explicit_meters_override_metadata(h5_path: Path) -> None:
    frame = read_nilmtk_building(h5_path, 1, ["kettle"], meters={"kettle": 12})

    assert frame["kettle"].iloc[5:].tolist() == [500.0] * 5
    assert frame["aggregate"].tolist() == _b1_active_means()


def test_several_meters_are_summed_after_alignment(h5_path: Path) -> None:
    frame = read_nilmtk_building(h5_path, 1, [], meters={"aggregate": [1, 12]})

    # meter 12 is missing for the first 30 s: a partial sum would understate, so NaN
    assert frame["aggregate"].iloc[:5].isna().all()
    expected = [mean + 500.0 for mean in _b1_active_means()[5:]]
    assert frame["aggregate"].iloc[5:].tolist() == expected


def test_building_without_metadata_reads_with_explicit_meters(h5_path: Path) -> None:
    frame = read_nilmtk_building(h5_path, 3, [], meters={"Aggregate": 1})

    assert frame["aggregate"].tolist() == _b1_active_means()


# --- time range and time zones ----------------------------------------------------------------


def test_start_end_select_a_half_open_local_range(h5_path: Path) -> None:
    # local BST times: 12:00:12 BST is 11:00:12 UTC in the file
    frame = read_nilmtk_building(
        h5_path, 1, ["kettle"], start="2014-07-01 12:00:12", end="2014-07-01 12:00:30"
    )

    pd.testing.assert_index_equal(
        frame.index, _local_index(3, B1_START_LOCAL + pd.Timedelta("12s"))
    )
    assert frame["aggregate"].tolist() == _b1_active_means()[2:5]
    assert frame["kettle"].tolist() == [2000.0] * 3


def test_start_only_and_end_only(h5_path: Path) -> None:
    tail = read_nilmtk_building(h5_path, 1, [], start="2014-07-01 12:00:54")
    head = read_nilmtk_building(h5_path, 1, [], end="2014-07-01 12:00:06")

    assert tail["aggregate"].tolist() == [_b1_active_means()[-1]]
    assert head["aggregate"].tolist() == [_b1_active_means()[0]]


def test_meter_without_readings_in_range_is_all_nan(h5_path: Path) -> None:
    frame = read_nilmtk_building(h5_path, 1, ["washing_machine"], end="2014-07-01 12:00:30")

    pd.testing.assert_index_equal(frame.index, _local_index(5))
    assert frame["washing_machine"].isna().all()
    assert frame["aggregate"].tolist() == _b1_active_means()[:5]


def test_autumn_clock_change_gives_naive_duplicate_free_local_index(h5_path: Path) -> None:
    frame = read_nilmtk_building(h5_path, 2, [], resample="30min")

    # UTC 00:00, 00:30 are 01:00, 01:30 BST; UTC 01:00, 01:30 repeat them as GMT and are dropped
    expected_index = pd.DatetimeIndex(
        ["2014-10-26 01:00", "2014-10-26 01:30", "2014-10-26 02:00", "2014-10-26 02:30"],
        name="time",
    )
    pd.testing.assert_index_equal(frame.index, expected_index)
    assert frame.index.is_unique and frame.index.is_monotonic_increasing
    assert frame["aggregate"].tolist() == [14.5, 44.5, 134.5, 164.5]


def test_timezone_argument_converts_to_that_zone(h5_path: Path) -> None:
    frame = read_nilmtk_building(h5_path, 2, [], resample="30min", timezone="UTC")

    expected_index = pd.date_range("2014-10-26 00:00", periods=6, freq="30min", name="time")
    pd.testing.assert_index_equal(frame.index, expected_index)
    assert frame["aggregate"].tolist() == [14.5, 44.5, 74.5, 104.5, 134.5, 164.5]


def test_start_end_follow_the_timezone_argument(h5_path: Path) -> None:
    frame = read_nilmtk_building(
        h5_path,
        2,
        [],
        resample="30min",
        timezone="UTC",
        start="2014-10-26 01:00",
        end="2014-10-26 02:00",
    )

    assert frame["aggregate"].tolist() == [74.5, 104.5]


# --- errors -----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"HDF5 file not found: .*absent\.h5"):
        read_nilmtk_building(tmp_path / "absent.h5", 1, [])


def test_not_an_hdf5_file(tmp_path: Path) -> None:
    path = tmp_path / "fake.h5"
    path.write_text("Time,Aggregate\n")
    with pytest.raises(DataError, match=r"fake\.h5 is not an HDF5 file"):
        list_buildings(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="expected an HDF5 file, got a directory"):
        list_buildings(tmp_path)


def test_missing_building_lists_those_present(h5_path: Path) -> None:
    with pytest.raises(DataError, match=r"building 5 is not in .*; buildings present: \[1, 2, 3\]"):
        read_nilmtk_building(h5_path, 5, [])


def test_unknown_appliance_names_it_and_lists_types(h5_path: Path) -> None:
    with pytest.raises(DataError) as info:
        read_nilmtk_building(h5_path, 1, ["microwave"])

    message = str(info.value)
    assert "no meter for appliance 'microwave' in building 1" in message
    assert "appliance types present: ['fridge', 'kettle', 'washing_machine']" in message


def test_building_without_metadata_needs_explicit_meters(h5_path: Path) -> None:
    with pytest.raises(DataError, match=r"building 3 has no NILMTK metadata.*'aggregate'"):
        read_nilmtk_building(h5_path, 3, [])


def test_missing_meter_table_lists_meters_present(h5_path: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"meter 9 of building 1 has no table /building1/elec/meter9 in .*"
        r"meters present: \[1, 8, 12\]",
    ):
        read_nilmtk_building(h5_path, 1, ["fridge"])


def test_empty_range_is_an_error(h5_path: Path) -> None:
    with pytest.raises(DataError, match=r"building 1 .* has no readings in"):
        read_nilmtk_building(h5_path, 1, [], start="2020-01-01", end="2020-01-02")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
        ({"resample": "often"}, "resample 'often' is not a pandas interval"),
        ({"resample": "1MS"}, "must be a fixed positive interval"),
        ({"start": "yesterday-ish"}, "start 'yesterday-ish' is not a date/time"),
        ({"start": "2014-07-02", "end": "2014-07-01"}, "is not before end"),
        ({"meters": {"aggregate": "one"}}, r"meters\['aggregate'\] must be a meter number"),
    ],
)
def test_bad_arguments(h5_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read_nilmtk_building(h5_path, 1, [], **kwargs)


# --- list_buildings ---------------------------------------------------------------------------


def test_list_buildings(h5_path: Path) -> None:
    assert list_buildings(h5_path) == [1, 2, 3]


# --- row accounting ---------------------------------------------------------------------------


def test_every_meter_reports_its_readings_and_non_finite_ones_are_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "holes.h5"
    active = (100 + np.arange(60)).astype("float64")
    active[[5, 6]] = np.nan
    active[7] = np.inf  # on main this made its interval's mean inf
    with pd.HDFStore(path, mode="w") as store:
        frame = _meter_frame(B1_START_UTC, 60, "1s", {ACTIVE: active})
        store.put("/building1/elec/meter1", frame, format="table")
        _set_metadata(store, "/building1", {"elec_meters": {1: {"site_meter": True}}})
    ledger = ReadLedger(RefusalPolicy(max_refused_fraction=0.1))

    house = read_nilmtk_building(path, 1, [], ledger=ledger)

    assert np.isfinite(house["aggregate"]).all()
    assert house["aggregate"].iloc[:2].tolist() == [102.0, 109.5]  # 5, 6 and 7 left out
    report = ledger.to_json()["holes.h5:/building1/elec/meter1"]
    assert (report["unit"], report["read"], report["kept"], report["refused"]) == (
        "readings",
        60,
        57,
        3,
    )
    assert report["refused_by_reason"]["not_finite"]["first"] == [
        "2014-07-01 12:00:05+01:00",
        "2014-07-01 12:00:06+01:00",
        "2014-07-01 12:00:07+01:00",
    ]
    with pytest.raises(DataError, match=r"3 of 60 readings refused \(5.000%\): not_finite 3"):
        read_nilmtk_building(path, 1, [])
