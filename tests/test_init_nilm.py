"""``modelyard init nilm``: a NILM project for a user's own houses (a folder of CSV houses or a
NILMTK HDF5 file), written to ``conf/project/<name>.yaml`` and run by the real commands.

Small folders the tests write check the inference and every refusal; the real UK-DALE / REFIT
houses go from init to one HTTP prediction. The working directory and the check that the
installed package is unchanged are ``test_init_project``'s (its ``workdir`` fixture).
"""

import hashlib
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

import test_hdf5_reader as nilmtk
import test_init_project as init_tests
from cli_helpers import assert_user_error, modelyard_in_process, modelyard_ok
from modelyard.core.config import load_config, shipped_config_dir
from modelyard.projects.nilm.survey import infer_levels
from modelyard.serving.server_process import running_server
from nilm_fixtures import write_gzip_csv

workdir = init_tests.workdir  # the fixture: an empty working directory, the package unchanged
QUICK = init_tests.QUICK
#: One epoch of a few small batches (on top of experiment=quick): the pipeline, not the model.
TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "project.data.batch_size=64",
    "trainer.log_every_n_steps=1",
]
SHIPPED = yaml.safe_load((shipped_config_dir() / "project" / "nilm.yaml").read_text())


def _month(
    path: Path, month: str, columns: list[str], *, days: int = 2, fridge_w: float = 90.0
) -> Path:
    """``days`` of 1-minute readings starting on the 1st of ``month`` in ``columns`` (Time, the
    mains, appliances): a kettle boiling three times a day, a fridge cycling, a microwave now and
    then, on a 120 W base load."""
    times = pd.date_range(f"{month}-01", periods=days * 1440, freq="60s")
    minute = np.arange(times.size) % 1440
    values = {
        "Kettle": np.where(np.isin(minute // 3, [140, 260, 400]), 2000.0, 0.0),
        "Fridge": np.where((np.arange(times.size) // 20) % 2 == 0, fridge_w, 0.0),
        "Microwave": np.where(minute // 2 == 380, 1100.0, 0.0),
    }
    present = [c for c in columns if c in values]
    aggregate = 120.0 + sum((values[c] for c in present), np.zeros(times.size))
    mains = columns[1]  # the second column, after Time
    table = {"Time": times.strftime("%Y-%m-%d %H:%M:%S"), mains: aggregate}
    frame = pd.DataFrame(table | {c: values[c] for c in present})[columns]
    rows = [",".join(str(v) for v in row) for row in frame.itertuples(index=False)]
    return write_gzip_csv(path / f"{month}.csv.gz", rows, header=",".join(frame.columns))


def _houses(
    root: Path, houses: dict[str, list[str]], months: tuple[str, ...] = ("2024-01",)
) -> Path:
    for house, columns in houses.items():
        for month in months:
            _month(root / house, month, columns)
    return root


STANDARD = ["Time", "Aggregate", "Kettle", "Microwave"]


def test_known_appliances_take_the_shipped_thresholds_and_unknown_ones_are_inferred(
    workdir: Path,
) -> None:
    _houses(
        workdir / "homes",
        {"flat": [*STANDARD, "Fridge"], "cottage": [*STANDARD, "Fridge"]},
        ("2024-01", "2024-02"),
    )
    init = modelyard_ok("init", "nilm", "homes", "--source", "homes")
    written = (workdir / "conf" / "project" / "homes.yaml").read_text()
    assert "CHECK these" in written
    assert "'fridge' is not a kind the shipped project knows" in init.stderr
    cfg = load_config(["project=homes", *QUICK])
    appliances = cfg.project.appliances
    assert list(appliances) == ["kettle", "microwave", "fridge"]
    for known in ("kettle", "microwave"):
        assert dict(appliances[known]) == SHIPPED["appliances"][known]
    # a 90 W fridge: on above 10 % of its on power (>= 10 W), impossible above 1.5 x its highest
    assert dict(appliances.fridge) == {"on_threshold_w": 10, "limit_w": 200}
    data = cfg.project.data
    assert data.format == "csv" and data.mains_column == "Aggregate" and data.interval_s == 60
    assert list(data.test_houses) == ["flat"] and list(data.train_houses) == ["cottage"]
    sums = {f.path: f.sha256 for f in data.files}
    flat = workdir / "homes" / "flat" / "2024-01.csv.gz"
    assert sums["flat/2024-01.csv.gz"] == hashlib.sha256(flat.read_bytes()).hexdigest()
    # the NILM family's quick model and schedule stand in for files the project has none of
    assert list(cfg.model.channels) == [16, 16, 24] and cfg.trainer.limit_train_batches == 60
    assert load_config(["project=homes"]).sweep.n_trials == 20


def test_inferred_levels() -> None:
    levels = infer_levels([np.r_[np.zeros(900), np.full(100, 1500.0)]], ceiling_w=23000)
    assert (levels.on_threshold_w, levels.limit_w) == (150, 2300)
    assert infer_levels([np.zeros(10)], 23000).on_threshold_w == 10  # never below 10 W
    assert infer_levels([np.full(10, 20000.0)], 23000).limit_w == 23000  # never above the house


def test_one_house_is_split_in_time_and_prepares(workdir: Path) -> None:
    months = ("2024-01", "2024-02", "2024-03", "2024-04", "2024-05")
    _houses(workdir / "mine", {"home": STANDARD}, months)
    init = modelyard_ok("init", "nilm", "solo", "--source", "mine")
    assert "one house: a time split" in init.stderr
    data = load_config(["project=solo"]).project.data
    assert list(data.train_houses) == ["home_train"] and list(data.test_houses) == ["home_test"]
    files = [(f.path, f.remote) for f in data.files]
    assert files[0] == ("home_train/2024-01.csv.gz", "home/2024-01.csv.gz")
    assert files[-1] == ("home_test/2024-05.csv.gz", "home/2024-05.csv.gz")
    modelyard_ok("data", "fetch", "project=solo", "--no-progress")
    raw = workdir / ".modelyard" / "data" / "raw" / "solo"
    assert sorted(p.name for p in (raw / "home_train").iterdir())[-1] == "2024-04.csv.gz"
    assert [p.name for p in (raw / "home_test").iterdir()] == ["2024-05.csv.gz"]
    modelyard_ok("data", "prepare", "project=solo")
    prepared = workdir / ".modelyard" / "data" / "prepared" / "solo"
    assert (prepared / "home_train.npz").is_file() and (prepared / "home_test.npz").is_file()


def test_mains_appliance_and_test_house_options(workdir: Path) -> None:
    columns = ["Time", "Total", "Kettle", "Microwave", "Fridge"]
    _houses(workdir / "homes", {"a": columns, "b": columns, "c": columns})
    modelyard_ok(
        "init", "nilm", "picked", "--source", "homes", "--mains", "Total",
        "--appliance", "Kettle", "--appliance", "fridge", "--test-house", "a",
    )  # fmt: skip
    cfg = load_config(["project=picked"]).project
    assert list(cfg.appliances) == ["kettle", "fridge"]
    assert cfg.data.mains_column == "Total"
    assert list(cfg.data.train_houses) == ["b", "c"] and list(cfg.data.test_houses) == ["a"]
    modelyard_ok("data", "fetch", "project=picked", "--no-progress")
    prepared = modelyard_ok("data", "prepare", "project=picked")
    assert '"appliances": [\n    "kettle",\n    "fridge"\n  ]' in prepared.stdout


def test_appliances_not_in_every_house_are_left_out(workdir: Path) -> None:
    _houses(workdir / "homes", {"a": [*STANDARD, "Fridge"], "b": STANDARD})
    init = modelyard_ok("init", "nilm", "common", "--source", "homes")
    assert "left out ['fridge']: not metered in every house" in init.stderr
    assert list(load_config(["project=common"]).project.appliances) == ["kettle", "microwave"]


def test_finer_readings_are_averaged(workdir: Path) -> None:
    house = workdir / "fast" / "home"
    for month in ("2024-01", "2024-02"):
        times = pd.date_range(f"{month}-01", periods=240, freq="15s")
        rows = [
            f"{t:%Y-%m-%d %H:%M:%S},{150 + i % 7},{2000 * (i % 40 < 4)}"
            for i, t in enumerate(times)
        ]
        write_gzip_csv(house / f"{month}.csv.gz", rows, header="Time,Aggregate,Kettle")
    init = modelyard_ok("init", "nilm", "fast", "--source", "fast")
    assert "readings every 15 s are averaged to data.interval_s 60 s" in init.stderr
    assert load_config(["project=fast"]).project.data.interval_s == 60


def test_coarser_readings_set_the_interval(workdir: Path) -> None:
    house = workdir / "slow" / "home"
    _month(house, "2024-01", STANDARD)
    frame = pd.read_csv(house / "2024-01.csv.gz").iloc[::5]
    for month in ("2024-01", "2024-02"):
        rows = [",".join(str(v) for v in row) for row in frame.itertuples(index=False)]
        write_gzip_csv(house / f"{month}.csv.gz", rows, header=",".join(frame.columns))
    init = modelyard_ok("init", "nilm", "slow", "--source", "slow")
    assert "readings every 300 s" in init.stderr
    data = load_config(["project=slow"]).project.data
    assert data.interval_s == 300 and data.max_fill_s == 900


def _nilmtk_file(path: Path, second: str = "kettle") -> Path:
    """Two NILMTK buildings of 3 hours at 1 minute: mains, a kettle (or ``second``), a fridge in
    building 1."""
    start = pd.Timestamp("2014-07-01 11:00", tz="UTC")

    def meter(values: np.ndarray) -> pd.DataFrame:
        return nilmtk._meter_frame(start, values.size, "60s", {nilmtk.ACTIVE: values})

    kettle = np.where(np.arange(180) % 60 < 3, 2000.0, 0.0)
    with pd.HDFStore(path, mode="w") as store:
        for building in (1, 2):
            store.put(f"/building{building}/elec/meter1", meter(200.0 + kettle), format="table")
            store.put(f"/building{building}/elec/meter2", meter(kettle), format="table")
            appliances = [{"type": second, "instance": 1, "meters": [2]}]
            if building == 1:
                store.put("/building1/elec/meter3", meter(np.full(180, 80.0)), format="table")
                appliances.append({"type": "fridge", "instance": 1, "meters": [3]})
            metadata = {
                "elec_meters": {1: {"site_meter": True}, 2: {"submeter_of": 1}, 3: {}},
                "appliances": appliances,
            }
            nilmtk._set_metadata(store, f"/building{building}", metadata)
        nilmtk._set_metadata(store, "/", {"name": "MINI", "timezone": nilmtk.LONDON})
    return path


def test_a_nilmtk_file_from_its_metadata(workdir: Path) -> None:
    (workdir / "h5").mkdir()
    h5 = _nilmtk_file(workdir / "h5" / "mini.h5")
    init = modelyard_ok("init", "nilm", "mini", "--source", str(h5))
    assert "not modelled: ['fridge']" in init.stderr
    data = load_config(["project=mini"]).project.data
    assert data.format == "nilmtk_hdf5" and data.source == "h5"
    assert dict(data.hdf5.buildings) == {"building1": 1, "building2": 2}
    assert data.hdf5.file == "mini.h5" and list(data.test_houses) == ["building2"]
    assert [f.sha256 for f in data.files] == [hashlib.sha256(h5.read_bytes()).hexdigest()]
    modelyard_ok("data", "fetch", "project=mini", "--no-progress")
    modelyard_ok("data", "prepare", "project=mini")
    assert (workdir / ".modelyard" / "data" / "prepared" / "mini" / "building1.npz").is_file()


@pytest.fixture(scope="module")
def bad_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One source for each way init refuses its input (written once for all the cases)."""
    root = tmp_path_factory.mktemp("sources")
    _houses(root / "standard", {"a": STANDARD, "b": STANDARD})
    (root / "empty").mkdir()
    _houses(root / "mains-only", {"a": ["Time", "Aggregate"], "b": ["Time", "Aggregate"]})
    _houses(root / "corrupt", {"a": STANDARD, "b": STANDARD})
    (root / "corrupt" / "b" / "2024-02.csv.gz").write_bytes(b"\x1f\x8b\x08 not gzip")
    _houses(root / "mixed", {"a": STANDARD, "b": STANDARD})
    _month(root / "mixed" / "b", "2024-02", ["Time", "Aggregate", "Kettle"])
    _houses(root / "apart", {"a": ["Time", "Aggregate", "Fridge"], "b": STANDARD})
    _houses(root / "one-file", {"a": STANDARD})
    (root / "notes.txt").write_text("not data\n")
    (root / "h5").mkdir()
    _nilmtk_file(root / "h5" / "mini.h5")
    _nilmtk_file(root / "h5" / "toasters.h5", second="toaster")
    return root


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["x", "--source", "data/no-such"], "no such folder or file"),
        (["x", "--source", "data/empty"], "no houses found"),
        (["x", "--source", "data/mains-only"], "no appliance columns"),
        (["x", "--source", "data/standard", "--mains", "Total"], "no 'Total' column"),
        (["x", "--source", "data/corrupt"], "cannot read"),
        (["x", "--source", "data/mixed"], "every file of a house needs the same columns"),
        (["x", "--source", "data/apart"], "no appliance is metered in every house"),
        (["x", "--source", "data/standard", "--appliance", "toaster"], "['toaster']: not metered"),
        (["x", "--source", "data/apart", "--appliance", "fridge"], "houses ['b'] do not meter it"),
        (["x", "--source", "data/standard", "--test-house", "z"], "--test-house ['z']"),
        (
            ["x", "--source", "data/standard", "--test-house", "a", "--test-house", "b"],
            "every house",
        ),
        (["x", "--source", "data/one-file"], "needs two or more (monthly) files"),
        (["x", "--source", "data/notes.txt"], "not HDF5"),
        (["x", "--source", "data/h5"], "for the NILMTK file in it, give --source"),
        (["x", "--source", "data/h5/mini.h5", "--mains", "Total"], "--mains is for CSV folders"),
        (["x", "--source", "data/h5/mini.h5", "--appliance", "fridge"], "add these rows by hand"),
        (["x", "--source", "data/h5/toasters.h5"], "no building meters a kind"),
        (["nilm", "--source", "data/standard"], "shipped project"),
        (["taken", "--source", "data/standard"], "pass --force"),
    ],
)
def test_bad_input_is_one_clear_line(
    workdir: Path, bad_sources: Path, args: list[str], fragment: str
) -> None:
    (workdir / "data").symlink_to(bad_sources)
    taken = workdir / "conf" / "project" / "taken.yaml"
    taken.parent.mkdir(parents=True)
    taken.write_text("name: taken\n")
    assert_user_error(modelyard_in_process("init", "nilm", *args), fragment)
    assert taken.read_text() == "name: taken\n"
    assert sorted(p.name for p in taken.parent.iterdir()) == ["taken.yaml"]


#: Real months copied per house: enough for a test house day and a few training batches.
REAL_MONTHS = {"refit_house2": ["2014-03"], "ukdale_house2": ["2013-06"]}


@pytest.mark.slow
def test_real_houses_from_init_to_a_served_prediction(workdir: Path, nilm_source: Path) -> None:
    """The real UK-DALE and REFIT houses as a user's own folder, through init (thresholds of the
    known appliances are the shipped ones), fetch, prepare, train, export and serve, to one HTTP
    prediction; nothing in the package changes (the ``workdir`` fixture checks)."""
    for house, months in REAL_MONTHS.items():
        (workdir / "meters" / house).mkdir(parents=True)
        for month in months:
            data = (nilm_source / house / f"{month}.csv.gz").read_bytes()
            (workdir / "meters" / house / f"{month}.csv.gz").write_bytes(data)
    init = modelyard_ok("init", "nilm", "myhomes", "--source", "meters")
    assert "test houses ['ukdale_house2']" in init.stderr
    cfg = load_config(["project=myhomes"]).project
    assert {a: dict(row) for a, row in cfg.appliances.items()} == {
        a: SHIPPED["appliances"][a]
        for a in ("kettle", "dishwasher", "washing_machine", "microwave")
    }
    project = ["project=myhomes", *QUICK]
    modelyard_ok("data", "fetch", *project, "--no-progress")
    modelyard_ok("data", "prepare", *project)
    trained = modelyard_ok("train", *project, *TINY)
    assert "best checkpoint" in trained.stderr
    modelyard_ok("export", *project)
    bundles = workdir / ".modelyard" / "bundles" / "myhomes"
    bundle = bundles / (bundles / "LATEST").read_text().strip()
    mains = pd.read_csv(workdir / "meters" / "ukdale_house2" / "2013-06.csv.gz")["Aggregate"]
    day = mains.iloc[600:900].ffill().fillna(0.0).tolist()
    with running_server(bundle) as url:
        answer = httpx.post(f"{url}/predict", json={"aggregate_w": day}, timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["length"] == len(day)
    assert list(body["appliances"]) == ["kettle", "dishwasher", "washing_machine", "microwave"]
    assert all(len(series) == len(day) for series in body["appliances"].values())
