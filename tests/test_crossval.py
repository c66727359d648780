"""k-fold cross-validation (``modelyard crossval``): stratified folds drawn from the prepared
training and validation images only, each fold trained and evaluated by the ordinary stages, and
the pooled out-of-fold scores with their interval.

The fold tests are fast units on labels and small prepared directories; one test runs the real
command line in-process (Typer's runner, one torch import) on real EuroSAT images as a user's own
two-class folder, and checks the report, the tracked runs and the refusals.
"""

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import assert_user_error, modelyard_in_process, modelyard_ok
from conftest import shared_datasets_root
from modelyard.core.config_dir import CONFIG_DIR_ENV
from modelyard.core.errors import ConfigError, DataError
from modelyard.projects.vision.crossval import load_pool, write_fold
from modelyard.projects.vision.image_cache import load_part, save_classes, save_part
from modelyard.projects.vision.image_folders import stratified_folds
from modelyard.tracking.mlflow_backend import client_for

#: Three classes of 11, 7 and 5 images: uneven, so that rounding shows.
LABELS = np.array([0] * 11 + [1] * 7 + [2] * 5)[np.random.default_rng(3).permutation(23)]


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_folds_are_disjoint_cover_every_row_and_keep_the_class_mix(folds: int) -> None:
    parts = stratified_folds(LABELS, folds, seed=0)
    assert len(parts) == folds
    joined = np.concatenate(parts)
    assert np.array_equal(np.sort(joined), np.arange(LABELS.size))  # covering, and disjoint
    sizes = [part.size for part in parts]
    assert max(sizes) - min(sizes) <= 1
    for label in range(3):
        per_fold = [int((LABELS[part] == label).sum()) for part in parts]
        assert max(per_fold) - min(per_fold) <= 1, (label, per_fold)
        assert min(per_fold) >= 1  # every fold holds every class


def test_folds_are_deterministic_for_a_seed() -> None:
    first = stratified_folds(LABELS, 3, seed=7)
    again = stratified_folds(LABELS, 3, seed=7)
    other = stratified_folds(LABELS, 3, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize(
    ("folds", "fragment"),
    [
        (1, "at least 2"),
        (0, "at least 2"),
        (True, "at least 2"),
        (6, "more folds than the smallest class has images (5)"),
    ],
)
def test_impossible_folds_are_refused(folds: int, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        stratified_folds(LABELS, folds, seed=0)


def _prepared(directory: Path) -> Path:
    """A prepared directory whose train and val images are numbered in their pixels, and whose
    test split is not a readable file: a fold that read it would fail."""
    classes = ["a", "b"]
    labels = {"train": np.array([0] * 8 + [1] * 6), "val": np.array([0, 0, 1, 1])}
    start = 0
    for part, part_labels in labels.items():
        pixels = np.zeros((part_labels.size, 4, 4, 3), np.uint8)
        pixels[:, 0, 0, 0] = np.arange(start, start + part_labels.size)
        start += part_labels.size
        save_part(directory, part, pixels, part_labels)
    (directory / "test.npz").write_bytes(b"not the test split")
    save_classes(directory, classes, {})
    return directory


def test_the_pool_is_train_and_val_and_the_test_split_is_never_read(tmp_path: Path) -> None:
    prepared = _prepared(tmp_path / "prepared")
    with pytest.raises((DataError, ValueError, OSError, zipfile.BadZipFile)):
        load_part(prepared, "test")  # the test split really is unreadable
    pool = load_pool(prepared)
    assert pool.classes == ["a", "b"]
    assert pool.labels.tolist() == [0] * 8 + [1] * 6 + [0, 0, 1, 1]
    assert pool.pixels[:, 0, 0, 0].tolist() == list(range(18))

    parts = stratified_folds(pool.labels, 3, seed=0)
    for k, held_out in enumerate(parts):
        fold = tmp_path / f"fold-{k}"
        counts = write_fold(pool, held_out, fold, val_fraction=0.25, seed=0)
        ids = {part: load_part(fold, part)[0][:, 0, 0, 0].tolist() for part in counts}
        assert sorted(ids["test"]) == held_out.tolist()  # the held-out fold, and only it
        assert sorted(ids["train"] + ids["val"] + ids["test"]) == list(range(18))
        assert not set(ids["val"]) & set(ids["test"])
        # the inner validation split is stratified: both classes, from the training folds
        assert min(counts["val"].values()) >= 1
        assert json.loads((fold / "classes.json").read_text())["classes"] == ["a", "b"]


# -- the real command line on real images ----------------------------------------------------------

#: Two EuroSAT classes as a user's own small binary folder, images per class.
EUROSAT_PAIR = ("Forest", "SeaLake")
PER_CLASS = 20
#: 3 folds of one short epoch each, the embedded MLflow store (the default tracking).
RUN = [
    "project=coast",
    "experiment=quick",
    "trainer.enable_progress_bar=false",
    "cv.folds=3",
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working directory with a user's own folder of real EuroSAT images."""
    archive = shared_datasets_root() / "images" / "eurosat_rgb.zip"
    if not archive.is_file():
        pytest.skip(f"real EuroSAT images not found at {archive} (set MODELYARD_DATA_ROOT)")
    monkeypatch.chdir(tmp_path)
    for variable in ("MODELYARD_HOME", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv(CONFIG_DIR_ENV, "")
    monkeypatch.delenv(CONFIG_DIR_ENV)
    with zipfile.ZipFile(archive) as source:
        for name in EUROSAT_PAIR:
            members = sorted(m for m in source.namelist() if f"/{name}/" in m)[:PER_CLASS]
            (tmp_path / "images" / name).mkdir(parents=True)
            for member in members:
                (tmp_path / "images" / name / Path(member).name).write_bytes(source.read(member))
    yield tmp_path


@pytest.mark.slow
def test_crossval_of_a_real_two_class_folder(workdir: Path) -> None:
    modelyard_ok("init", "image", "coast", "--source", "images")
    modelyard_ok("data", "fetch", "project=coast", "--no-progress")
    prepared = json.loads(modelyard_ok("data", "prepare", "project=coast").stdout)
    per_split = prepared["per_split_and_class"]
    pooled_images = sum(per_split["train"].values()) + sum(per_split["val"].values())

    result = modelyard_ok("crossval", *RUN, "--name", "first")
    directory = workdir / ".modelyard" / "crossval" / "coast" / "first"
    report = json.loads((directory / "crossval.json").read_text())
    assert report["cv"] == {"folds": 3, "seed": 0}
    assert report["classes"] == list(EUROSAT_PAIR)
    assert report["pool"]["images"] == pooled_images  # train + val, not the test split
    rows = report["folds"]
    assert [row["fold"] for row in rows] == [1, 2, 3]
    assert sum(row["images"] for row in rows) == pooled_images
    pooled = report["pooled"]
    assert pooled["images"] == pooled_images
    assert sum(map(sum, pooled["confusion_matrix"])) == pooled_images
    # the pooled count of correct images is each fold's evaluation's, added up
    assert pooled["correct"] == sum(round(row["accuracy"] * row["images"]) for row in rows)
    assert pooled["accuracy"] == pytest.approx(pooled["correct"] / pooled_images)
    interval = pooled["accuracy_interval"]
    assert interval["n"] == pooled_images
    assert interval["low"] <= pooled["accuracy"] <= interval["high"]
    assert 0.0 <= pooled["binary"]["roc_auc"] <= 1.0
    assert pooled["binary"]["positive_class"] == "SeaLake"
    at_threshold = pooled["binary"]["at_threshold"]  # the served decision, each fold's threshold
    assert at_threshold["images"] == pooled_images
    assert at_threshold["accuracy_interval"]["n"] == pooled_images
    assert pooled["baseline"]["accuracy"] == pytest.approx(0.5)
    accuracies = [row["accuracy"] for row in rows]
    assert report["across_folds"]["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert report["across_folds"]["accuracy"]["std"] == pytest.approx(np.std(accuracies, ddof=1))
    assert "pooled out-of-fold: accuracy" in result.stdout
    assert "report:" in result.stderr
    # each fold's run and evaluation beside its prepared images; the project's runs untouched
    for k in (1, 2, 3):
        assert (directory / "runs" / f"fold-{k}" / "checkpoints" / "best.ckpt").is_file()
    assert not (workdir / ".modelyard" / "runs").exists()

    # one tracked parent with a child per fold, in the embedded store
    client = client_for(f"sqlite:///{workdir / '.modelyard' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("coast").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_name for r in parents] == ["first"]
    assert parents[0].data.metrics["pooled/accuracy"] == pytest.approx(pooled["accuracy"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.info.run_name for r in children) == ["fold-1", "fold-2", "fold-3"]

    # bad input, through the same command line: one clear line each
    assert_user_error(modelyard_in_process("crossval", *RUN, "cv.folds=1"), "at least 2")
    assert_user_error(
        modelyard_in_process("crossval", *RUN, "cv.folds=40"),
        "more folds than the smallest class has images",
    )
    assert_user_error(modelyard_in_process("crossval", *RUN, "--name", "first"), "already holds")


@pytest.mark.parametrize(
    ("project", "fragment"), [("nilm", "split by house"), ("kc_house", "regressions")]
)
def test_other_families_are_refused_in_one_line(
    project: str, fragment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert_user_error(modelyard_in_process("crossval", f"project={project}"), fragment)
