"""The prepare stage driven by configuration alone, for both raw layouts."""

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelyard.core.config import load_config
from modelyard.core.errors import ConfigError, DataError
from modelyard.projects.nilm.storage import load_house
from modelyard.stages import prepare

APPLIANCES = "project.data.appliances=[kettle,washing_machine]"


def write_nilmtk_file(path: Path) -> None:
    """Two hours of one building: 6 s mains = 300 W + kettle; kettle on 12:10-12:12 local."""
    index = pd.date_range("2014-07-01 11:00", periods=1200, freq="6s", tz="UTC")
    index = index.tz_convert("Europe/London")
    kettle = np.zeros(1200, dtype="float32")
    kettle[100:120] = 2000.0  # readings 100..119 = 12:10:00 .. 12:11:54 local
    tables = {"meter1": 300.0 + kettle, "meter8": kettle, "meter12": np.zeros(1200, "float32")}
    with pd.HDFStore(path, mode="w") as store:
        for name, values in tables.items():
            frame = pd.DataFrame({("power", "active"): values}, index=index)
            frame.columns = pd.MultiIndex.from_tuples(
                list(frame.columns), names=["physical_quantity", "type"]
            )
            store.put(f"/building1/elec/{name}", frame, format="table")
        store.get_node("/building1")._v_attrs.metadata = {
            "elec_meters": {1: {"site_meter": True}, 8: {}, 12: {}},
            "appliances": [
                {"type": "kettle", "instance": 1, "meters": [8]},
                {"type": "washing machine", "instance": 1, "meters": [12]},
            ],
        }


def test_prepare_reads_the_nilmtk_hdf5_layout_by_config(tmp_path: Path) -> None:
    source = tmp_path / "raw"
    source.mkdir()
    write_nilmtk_file(source / "mini.h5")
    cfg = load_config(
        [
            f"paths.workdir={tmp_path / 'work'}",
            "project.data.format=nilmtk_hdf5",
            "project.data.hdf5.file=mini.h5",
            "+project.data.hdf5.buildings.house_a=1",
            "~project.data.hdf5.buildings.ukdale_house2",
            APPLIANCES,
            "project.data.train_houses=[house_a]",
            "project.data.test_houses=[]",
        ]
    )
    summary = prepare.run(cfg, source=source)
    assert set(summary["houses"]) == {"house_a"}
    house = load_house(Path(cfg.paths.prepared) / "house_a.npz")
    assert len(house) == 120  # two hours at 1 minute
    assert house.valid.all()
    assert house.appliances == ("kettle", "washing_machine")
    minute = (np.datetime64("2014-07-01T12:10") - np.datetime64("2014-07-01T12:00")).astype(int)
    assert house.targets[minute, 0] == pytest.approx(2000.0)
    assert house.targets[minute + 2, 0] == pytest.approx(0.0)
    assert house.aggregate[minute] == pytest.approx(2300.0)
    assert house.aggregate[0] == pytest.approx(300.0)
    on_disk = json.loads((Path(cfg.paths.prepared) / "prepare.json").read_text())
    assert on_disk["houses"]["house_a"]["intervals"] == 120


def write_csv_house(directory: Path, minutes: int, gap: slice) -> None:
    directory.mkdir(parents=True)
    times = pd.date_range("2014-01-01", periods=minutes, freq="60s")
    frame = pd.DataFrame(
        {
            "Time": times,
            "Aggregate": 200.0,
            "Kettle": 0.0,
            "Dishwasher": 0.0,
            "WashingMachine": 0.0,
            "Microwave": 0.0,
        }
    )
    frame = frame.drop(index=frame.index[gap])
    with gzip.open(directory / "2014-01.csv.gz", "wt") as handle:
        frame.to_csv(handle, index=False)


def test_prepare_csv_marks_a_long_gap_and_fills_a_short_one(tmp_path: Path) -> None:
    source = tmp_path / "raw"
    write_csv_house(source / "house_b", 300, slice(100, 110))  # 10-minute gap: too long
    write_csv_house(source / "house_c", 300, slice(50, 52))  # 2-minute gap: filled
    cfg = load_config(
        [
            f"paths.workdir={tmp_path / 'work'}",
            "project.data.train_houses=[house_b]",
            "project.data.test_houses=[house_c]",
        ]
    )
    summary = prepare.run(cfg, source=source)
    assert summary["houses"]["house_b"]["invalid"] == 10
    assert summary["houses"]["house_c"]["filled"] == 2 * 5  # 2 readings x 5 series
    b = load_house(Path(cfg.paths.prepared) / "house_b.npz")
    assert not b.valid[100:110].any() and b.valid[:100].all() and b.valid[110:].all()


def test_prepare_errors_are_clear(tmp_path: Path) -> None:
    cfg = load_config([f"paths.workdir={tmp_path}"])
    with pytest.raises(DataError, match="data source not found"):
        prepare.run(cfg, source=tmp_path / "missing")
    with pytest.raises(ConfigError, match="format must be one of"):
        prepare.run(
            load_config([f"paths.workdir={tmp_path}", "project.data.format=parquet"]),
            source=tmp_path,
        )
    with pytest.raises(ConfigError, match="window"):
        prepare.run(
            load_config([f"paths.workdir={tmp_path}", "project.data.window=100"]), source=tmp_path
        )
