"""Projects outside the package: ``modelyard init image|table`` writes ``conf/project/<name>.yaml``
in the working directory, every command finds it there (or in ``--config-dir``), and the family's
model, schedule and sweep stand in for files the project does not have.

The pipeline tests run the real commands in-process (Typer's runner, one torch import) in a
temporary working directory on images and a table the test writes, and check that nothing in the
installed package changed.
"""

import csv
import hashlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from cli_helpers import assert_user_error, modelyard_in_process, modelyard_ok
from conftest import shared_datasets_root
from modelyard.core.config import load_config, shipped_config_dir
from modelyard.core.config_dir import CONFIG_DIR_ENV
from modelyard.core.errors import ConfigError
from modelyard.serving.server_process import running_server

#: Seconds, not minutes: one epoch of a few batches (on top of experiment=quick).
QUICK = ["experiment=quick", "tracking=none", "trainer.enable_progress_bar=false"]


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working directory, as a new user's; the shipped config tree must not change."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MODELYARD_HOME", raising=False)
    # recorded so that a --config-dir given in a test is undone after it
    monkeypatch.setenv(CONFIG_DIR_ENV, "")
    monkeypatch.delenv(CONFIG_DIR_ENV)
    shipped = _tree_digest(shipped_config_dir())
    yield tmp_path
    assert _tree_digest(shipped_config_dir()) == shipped, "the installed package was changed"


def _image_folder(root: Path, classes: dict[str, int], side: int = 40) -> Path:
    """Real image files (PNG and JPEG) per class folder: a colour per class, with noise."""
    rng = np.random.default_rng(0)
    for k, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        colour = np.array([200 if k == 0 else 40, 90, 40 if k == 0 else 200])
        for i in range(count):
            pixels = (colour + rng.integers(-40, 40, (side, side + 8, 3))).clip(0, 255)
            suffix = "png" if i % 2 else "jpg"
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i:03d}.{suffix}")
    return root


def _table(path: Path, rows: int = 80) -> Path:
    rng = np.random.default_rng(1)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "size", "rooms", "zipCode", "city", "sold", "note", "price"])
        for i in range(rows):
            size = float(rng.integers(30, 160))
            zip_code = int(rng.choice([2100, 2200, 2300]))
            city = {2100: "East", 2200: "North", 2300: "Island"}[zip_code]
            price = size * (40000 + (zip_code - 2100) * 30 + rng.normal(0, 2000))
            sold = f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}"
            writer.writerow([i, size, 1 + int(size // 40), zip_code, city, sold, f"n{i}", price])
    return path


@pytest.mark.slow
def test_image_folder_to_bundle(workdir: Path) -> None:
    images = _image_folder(workdir / "my-images", {"dogs": 24, "cats": 24})
    init = modelyard_ok("init", "image", "pets", "--source", str(images))
    assert "2 classes, 48 images: cats: 24, dogs: 24" in init.stderr
    written = workdir / "conf" / "project" / "pets.yaml"
    assert written.is_file()
    assert "the threshold on 'dogs''s probability" in written.read_text()
    cfg = load_config(["project=pets", *QUICK])
    assert cfg.project.data.source == "my-images"
    assert cfg.project.data.image_size == 32
    # the vision family's quick model and schedule stand in for files the project has none of
    assert list(cfg.model.backbone_options.stages) == [16, 32, 64]
    assert cfg.trainer.max_epochs == 1

    project = ["project=pets", *QUICK]
    modelyard_ok("data", "fetch", *project, "--no-progress")
    prepared = modelyard_ok("data", "prepare", *project)
    assert "warning: the val split has fewer than 5 images of some classes" in prepared.stderr
    trained = modelyard_ok(
        "train", *project, "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"
    )
    assert "best checkpoint" in trained.stderr
    modelyard_ok("evaluate", *project)
    modelyard_ok("export", *project)
    bundles = workdir / ".modelyard" / "bundles" / "pets"
    bundle = bundles / (bundles / "LATEST").read_text().strip()
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["preprocessing"]["classes"] == ["cats", "dogs"]
    # two classes: a decision threshold chosen on validation, for the second class
    decision = manifest["preprocessing"]["decision"]
    assert decision["positive_class"] == "dogs" and decision["rule"] == "max_f1"
    assert 0.0 <= decision["threshold"] <= 1.0
    assert (bundle / "model.onnx").is_file()


@pytest.mark.slow
def test_table_to_bundle(workdir: Path) -> None:
    table = _table(workdir / "homes.csv")
    init = modelyard_ok("init", "table", "homes", "--source", str(table))
    assert "target: price (suggested" in init.stderr
    schema = load_config(["project=homes"]).project.table
    assert [f.name for f in schema.features.numeric] == ["size", "rooms"]
    assert [f.name for f in schema.features.categorical] == ["zipCode", "city"]
    assert [f.name for f in schema.features.date] == ["sold"]
    assert schema.read.dates == {"sold": "%Y-%m-%d"}
    assert "['id', 'note']" in init.stderr  # an identifier and free text are left out

    project = ["project=homes", *QUICK]
    cfg = load_config(project)
    assert cfg.model.kind == "mlp" and list(cfg.model.hidden) == [64, 32]
    assert cfg.sweep.n_trials == 20  # the tabular family's search space
    modelyard_ok("data", "fetch", *project, "--no-progress")
    modelyard_ok("data", "prepare", *project)
    modelyard_ok("train", *project)
    modelyard_ok("evaluate", *project)
    modelyard_ok("export", *project)
    assert (workdir / ".modelyard" / "bundles" / "homes" / "LATEST").is_file()


def test_config_dir_option_and_own_files_win(workdir: Path) -> None:
    own = workdir / "elsewhere"
    _table(workdir / "homes.csv")
    modelyard_ok("--config-dir", str(own), "init", "table", "homes", "--source", "homes.csv")
    assert (own / "project" / "homes.yaml").is_file()
    assert not (workdir / "conf").exists()
    # the project's own model file wins over the family's
    (own / "model").mkdir()
    (own / "model" / "homes_quick.yaml").write_text("defaults: [mlp, _self_]\nhidden: [8]\n")
    fetched = modelyard_ok(
        "--config-dir", str(own), "data", "fetch", "project=homes", "--no-progress"
    )
    assert "fetched 1 file(s)" in fetched.stderr
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CONFIG_DIR_ENV, str(own))
        assert list(load_config(["project=homes", "experiment=quick"]).model.hidden) == [8]
        assert list(load_config(["project=homes", "experiment=baseline"]).model.hidden) == [
            256,
            128,
            64,
        ]
        patch.setenv(CONFIG_DIR_ENV, str(workdir / "missing"))
        with pytest.raises(ConfigError, match="no such configuration folder"):
            load_config([])


def test_shipped_projects_compose_as_before(workdir: Path) -> None:
    # a user folder beside them changes nothing about the shipped projects
    (workdir / "conf" / "model").mkdir(parents=True)
    (workdir / "conf" / "model" / "plants_quick.yaml").write_text("name: shadow\n")
    for project in ("plants", "kc_house"):
        for experiment in ("quick", "baseline"):
            cfg = load_config([f"project={project}", f"experiment={experiment}"])
            assert cfg.model.name != "shadow"
    assert load_config(["project=avm", "experiment=baseline"]).model.kind == "lightgbm"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["init", "image", "x", "--source", "no-such-folder"], "no such folder"),
        (["init", "image", "x", "--source", "one-class"], "at least 2"),
        (["init", "image", "x", "--source", "empty"], "no images"),
        (["init", "image", "x", "--source", "homes.csv"], "neither a directory nor a zip"),
        (["init", "image", "plants", "--source", "two"], "shipped project"),
        (["init", "image", "a/b", "--source", "two"], "project name"),
        (["init", "image", "taken", "--source", "two"], "pass --force"),
        (["init", "table", "t", "--source", "homes.csv", "--target", "prize"], "'size', 'rooms'"),
        (["init", "table", "t", "--source", "homes.csv", "--target", "city"], "not numeric"),
        (["init", "table", "t", "--source", "no-such.csv"], "no such file"),
        (["init", "table", "t", "--source", "homes.csv", "--ignore", "sise"], "'sise'"),
        (
            [
                "init",
                "table",
                "t",
                "--source",
                "homes.csv",
                "--target",
                "price",
                "--ignore",
                "price",
            ],
            "is the target",
        ),
        (["init", "table", "t", "--source", "tiny.csv"], "10+ rows"),
        (["--config-dir", "missing", "train", "project=x"], "no such configuration folder"),
    ],
)
def test_bad_input_is_one_clear_line(workdir: Path, args: list[str], fragment: str) -> None:
    _image_folder(workdir / "one-class", {"only": 3}, side=8)
    _image_folder(workdir / "two", {"a": 2, "b": 2}, side=8)
    (workdir / "empty").mkdir()
    _table(workdir / "homes.csv")
    (workdir / "tiny.csv").write_text("a,b\n1,2\n")
    (workdir / "conf" / "project").mkdir(parents=True)
    (workdir / "conf" / "project" / "taken.yaml").write_text("name: taken\n")
    assert_user_error(modelyard_in_process(*args), fragment)
    assert (workdir / "conf" / "project" / "taken.yaml").read_text() == "name: taken\n"


def test_ignored_columns_are_no_features(workdir: Path) -> None:
    _table(workdir / "homes.csv")
    modelyard_ok(
        "init", "table", "t", "--source", "homes.csv", "--ignore", "rooms", "--ignore", "city"
    )
    table = load_config(["project=t"]).project.table
    assert [f.name for f in table.features.numeric] == ["size"]
    assert [f.name for f in table.features.categorical] == ["zipCode"]


def test_a_zip_is_recorded_with_its_checksum(workdir: Path) -> None:
    folder = _image_folder(workdir / "two", {"b": 3, "a": 3}, side=8)
    archive = workdir / "data" / "two.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(folder.rglob("*.*")):
            zipped.write(path, path.relative_to(workdir).as_posix())
    modelyard_ok("init", "image", "zipped", "--source", str(archive))
    cfg = load_config(["project=zipped"])
    assert cfg.project.data.source == "data" and cfg.project.data.archive == "two.zip"
    expected = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert [dict(f) for f in cfg.project.data.files] == [{"path": "two.zip", "sha256": expected}]
    assert cfg.sweep.n_trials == 12  # the vision family's search space
    modelyard_ok("data", "fetch", "project=zipped", "--no-progress")
    assert (workdir / ".modelyard" / "data" / "raw" / "zipped" / "two.zip").is_file()


def test_force_overwrites(workdir: Path) -> None:
    _image_folder(workdir / "two", {"a": 2, "b": 2}, side=8)
    target = workdir / "conf" / "project" / "taken.yaml"
    target.parent.mkdir(parents=True)
    target.write_text("name: taken\n")
    modelyard_ok("init", "image", "taken", "--source", "two", "--force")
    assert "task: vision" in target.read_text()


#: Two EuroSAT classes as a user's own binary folder; images per class (a small dataset).
EUROSAT_PAIR = ("Forest", "SeaLake")
PER_CLASS = 40


def _eurosat_pair(target: Path) -> Path:
    """``PER_CLASS`` real EuroSAT images of each of ``EUROSAT_PAIR``, as a plain class folder."""
    archive = shared_datasets_root() / "images" / "eurosat_rgb.zip"
    if not archive.is_file():
        pytest.skip(f"real EuroSAT images not found at {archive} (set MODELYARD_DATA_ROOT)")
    with zipfile.ZipFile(archive) as source:
        for name in EUROSAT_PAIR:
            members = sorted(m for m in source.namelist() if f"/{name}/" in m)[:PER_CLASS]
            (target / name).mkdir(parents=True)
            for member in members:
                (target / name / Path(member).name).write_bytes(source.read(member))
    return target


@pytest.mark.slow
def test_a_real_binary_folder_from_init_to_a_served_decision(workdir: Path) -> None:
    """A user's own two-class folder (real EuroSAT images) through init, train, evaluate with
    ROC-AUC and a threshold, export and serve, to one HTTP prediction with the decision; nothing
    in the package changes (the ``workdir`` fixture checks)."""
    images = _eurosat_pair(workdir / "my-images")
    init = modelyard_ok("init", "image", "coast", "--source", str(images))
    assert f"2 classes, {2 * PER_CLASS} images" in init.stderr
    project = ["project=coast", *QUICK]
    modelyard_ok("data", "fetch", *project, "--no-progress")
    modelyard_ok("data", "prepare", *project)
    modelyard_ok("train", *project, "trainer.max_epochs=2")
    evaluated = modelyard_ok("evaluate", *project)
    headline = json.loads(evaluated.stdout)  # two classes: ranking scores and the threshold
    assert {"accuracy", "macro_f1", "roc_auc", "pr_auc", "threshold"} <= set(headline)
    modelyard_ok("export", *project)

    bundles = workdir / ".modelyard" / "bundles" / "coast"
    bundle = bundles / (bundles / "LATEST").read_text().strip()
    manifest = json.loads((bundle / "manifest.json").read_text())
    binary = manifest["metrics"]["binary"]
    assert binary["positive_class"] == "SeaLake"  # the second class in order
    assert 0.0 <= binary["roc_auc"] <= 1.0 and 0.0 <= binary["pr_auc"] <= 1.0
    decision = manifest["preprocessing"]["decision"]
    assert decision["positive_class"] == "SeaLake"

    upload = next((images / "SeaLake").iterdir())
    with running_server(bundle) as url:
        answer = httpx.post(
            f"{url}/predict",
            files={"file": (upload.name, upload.read_bytes(), "image/jpeg")},
            timeout=30,
        )
    assert answer.status_code == 200, answer.text
    served = answer.json()["decision"]
    assert served["threshold"] == decision["threshold"]
    assert served["positive_class"] == "SeaLake"
    assert served["is_positive"] == (served["positive_probability"] >= served["threshold"])
    assert served["label"] == ("SeaLake" if served["is_positive"] else "Forest")


@pytest.mark.slow
def test_the_real_copenhagen_listings_from_init_to_a_served_price(
    workdir: Path, tables_source: Path
) -> None:
    """A real table the package knows nothing about, through configuration alone: init (target
    squaremeterPrice, leaving out the total price that gives it away) -> train -> evaluate ->
    export -> serve -> the bundle's own example request answered with a price."""
    listings = tables_source / "copenhagen_listings.csv"
    if not listings.is_file():
        pytest.skip(f"real listings table not found at {listings} (set MODELYARD_DATA_ROOT)")
    init = modelyard_ok(
        "init", "table", "listings", "--source", str(listings),
        "--target", "squaremeterPrice", "--ignore", "price",
    )  # fmt: skip
    assert "target: squaremeterPrice" in init.stderr
    schema = load_config(["project=listings"]).project.table
    features = [f.name for group in schema.features.values() for f in group]
    assert "price" not in features and "squaremeterPrice" not in features
    project = ["project=listings", *QUICK]
    modelyard_ok("data", "fetch", *project, "--no-progress")
    modelyard_ok("data", "prepare", *project)
    modelyard_ok("train", *project)
    evaluated = json.loads(modelyard_ok("evaluate", *project).stdout)
    assert evaluated  # the family's headline metrics, whatever their values
    modelyard_ok("export", *project)

    bundles = workdir / ".modelyard" / "bundles" / "listings"
    bundle = bundles / (bundles / "LATEST").read_text().strip()
    with running_server(bundle) as url:
        example = httpx.get(f"{url}/info", timeout=30).json()["details"]["example"]
        answer = httpx.post(f"{url}/predict", json=example, timeout=30)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert predictions and all(row["squaremeterPrice"] > 0 for row in predictions)
