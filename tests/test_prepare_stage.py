"""The prepare stage driven by configuration alone, for both raw layouts."""

import gzip
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import DictConfig
from PIL import Image

from modelyard.core.config import load_config
from modelyard.core.errors import ConfigError, DataError
from modelyard.projects.nilm.storage import load_house
from modelyard.stages import prepare
from tabular_fixtures import synthetic_sales

#: Only kettle and washing machine: the other rows of the appliance table dropped.
APPLIANCES = ("~project.appliances.microwave", "~project.appliances.dishwasher")


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
            *APPLIANCES,
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
    meters = {name: report["read"] for name, report in on_disk["reading"].items()}
    assert meters == {f"mini.h5:/building1/elec/meter{m}": 1200 for m in (1, 8, 12)}


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


def test_nilm_prepare_reports_the_rows_of_every_file_and_meter(tmp_path: Path) -> None:
    source = tmp_path / "raw"
    write_csv_house(source / "house_b", 300, slice(100, 110))
    write_csv_house(source / "house_c", 300, slice(0, 0))
    cfg = load_config(
        [
            f"paths.workdir={tmp_path / 'work'}",
            "project.data.train_houses=[house_b]",
            "project.data.test_houses=[house_c]",
        ]
    )

    reading = prepare.run(cfg, source=source)["reading"]

    assert set(reading) == {"house_b/2014-01.csv.gz", "house_c/2014-01.csv.gz"}
    assert reading["house_b/2014-01.csv.gz"] | {"refused_by_reason": {}} == {
        "unit": "rows",
        "lines": 291,
        "header_lines": 1,
        "blank_lines": 0,
        "read": 290,
        "kept": 290,
        "filtered": 0,
        "refused": 0,
        "refused_fraction": 0.0,
        "filtered_by_rule": {},
        "refused_by_reason": {},
    }
    on_disk = json.loads((Path(cfg.paths.prepared) / "prepare.json").read_text())
    assert on_disk["reading"] == reading


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


# ---------------------------------------------------------------------------------------------
# Row accounting and the refusal policy (tabular)
# ---------------------------------------------------------------------------------------------


def avm_config(tmp_path: Path, *overrides: str) -> DictConfig:
    return load_config(["project=avm", f"paths.workdir={tmp_path / 'work'}", *overrides])


def write_sales(tmp_path: Path, damage: dict[int, str]) -> Path:
    """2,000 synthetic sales; ``damage`` replaces lines (1-based) with malformed text."""
    lines = synthetic_sales(2_000).splitlines()
    for number, text in damage.items():
        lines[number - 1] = text
    source = tmp_path / "raw"
    source.mkdir()
    (source / "boliga_sales_2021.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return source


def test_prepare_reports_read_kept_filtered_and_refused(tmp_path: Path) -> None:
    source = write_sales(tmp_path, {7: '"Testvej 1 st.,2100 By,1.000.000,01-07-2021,50 ,20.000'})

    cfg = avm_config(tmp_path, "project.data.max_refused_fraction=0.01")
    summary = prepare.run(cfg, source)

    reading = summary["reading"]["boliga_sales_2021.csv"]
    assert reading["refused_by_reason"] == {"unclosed_quote": {"count": 1, "first": [7]}}
    assert reading["read"] == reading["lines"] == 2_000
    assert reading["read"] == reading["kept"] + reading["filtered"] + reading["refused"]
    assert reading["kept"] == sum(summary["rows"].values())
    assert reading["filtered_by_rule"]["floor is not null"] == 100  # the houses
    on_disk = json.loads((Path(cfg.paths.prepared) / "prepare.json").read_text())
    assert on_disk["reading"]["boliga_sales_2021.csv"] == reading


def test_refused_rows_above_the_threshold_fail_with_one_precise_line(tmp_path: Path) -> None:
    glued = "a,b,c,d,e,f,g,h,i"
    source = write_sales(tmp_path, {5: glued, 9: glued, 30: '"x'})
    with pytest.raises(DataError) as failure:
        prepare.run(avm_config(tmp_path), source)
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith("boliga_sales_2021.csv: 3 of 2000 rows refused (0.150%)")
    assert "too_many_fields 2 (lines 5, 9)" in message and "unclosed_quote 1 (line 30)" in message
    assert "max_refused_fraction=0.001" in message


def test_on_refused_warn_goes_on_with_a_loud_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = write_sales(tmp_path, {5: "a,b,c,d,e,f,g,h,i", 9: "x,y,z,1,2,3,4,5"})
    cfg = avm_config(tmp_path, "project.data.on_refused=warn")
    with caplog.at_level("WARNING"):
        summary = prepare.run(cfg, source)
    assert summary["reading"]["boliga_sales_2021.csv"]["refused"] == 2
    assert "REFUSED ROWS boliga_sales_2021.csv: 2 of 2000 rows refused" in caplog.text


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("project.data.max_refused_fraction=2", "project.data.max_refused_fraction"),
        ("project.data.max_refused_fraction=lots", "project.data.max_refused_fraction"),
        ("project.data.on_refused=ignore", "project.data.on_refused"),
        ("project.data.max_field_length=0", "project.data.max_field_length"),
    ],
)
def test_bad_refusal_options_are_config_errors_naming_the_key(
    tmp_path: Path, override: str, key: str
) -> None:
    with pytest.raises(ConfigError, match=f"{key} must be"):
        prepare.run(avm_config(tmp_path, override), tmp_path)


def test_the_real_avm_file_passes_the_default_threshold(
    tables_source: Path, tmp_path: Path
) -> None:
    summary = prepare.run(avm_config(tmp_path), tables_source)
    reading = summary["reading"]["boliga_sales_2021.csv"]
    # One line of 32,818 is two sales glued together by a lost newline: refused, 0.003 %.
    assert reading["refused_by_reason"] == {"too_many_fields": {"count": 1, "first": [19_957]}}
    assert reading["read"] == reading["kept"] + reading["filtered"] + reading["refused"] == 32_818
    assert reading["kept"] == sum(summary["rows"].values())
    assert reading["filtered_by_rule"]["outlier rule on price_per_m2 (training rows)"] > 0


def test_image_prepare_reports_every_file_of_the_archive(tmp_path: Path) -> None:
    source = tmp_path / "raw"
    source.mkdir()
    with zipfile.ZipFile(source / "eurosat_rgb.zip", "w") as archive:
        for kind, colour in (("Forest", (0, 120, 0)), ("River", (0, 0, 200))):
            for i in range(10):
                image = io.BytesIO()
                Image.new("RGB", (8, 8), colour).save(image, "PNG")
                archive.writestr(f"Top/{kind}/{i}.png", image.getvalue())
        archive.writestr("Top/River/notes.txt", b"about rivers")
        archive.writestr("__MACOSX/Top/River/._0.png", b"fork")
    cfg = load_config(
        ["project=eurosat", f"paths.workdir={tmp_path / 'work'}", "project.data.image_size=8"]
    )

    summary = prepare.run(cfg, source=source)

    report = summary["reading"]["eurosat_rgb.zip"]
    assert (report["read"], report["kept"], report["filtered"], report["refused"]) == (22, 20, 2, 0)
    assert sum(sum(part.values()) for part in summary["per_split_and_class"].values()) == 20
