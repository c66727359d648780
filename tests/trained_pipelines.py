"""Real models trained once per test session on the real shared data, for every test that needs
one: the end-to-end integration tests and the behavioural model tests.

Each fixture runs the real stages (fetch -> prepare -> train with ``experiment=quick`` ->
evaluate -> export) the first time a test asks for it; later tests, in any module, get the same
run and bundle. Registered for the whole suite by ``conftest.py`` (``pytest_plugins``), so that a
session-scoped fixture is built once, not once per module that imports it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig

from conftest import shared_datasets_root
from modelyard.core.bundle import Bundle
from modelyard.core.config import load_config
from modelyard.stages import evaluate, export, fetch, prepare, train
from modelyard.stages.train import TrainResult

#: The real image archives, their class counts and image counts.
IMAGE_ARCHIVES = {
    "eurosat": ("eurosat_rgb.zip", 10, 21_688),
    "plants": ("plantvillage_potato.zip", 3, 1_713),
}


class Pipeline:
    """The artifacts of one quick pipeline run: configuration, run, evaluation, bundle."""

    def __init__(
        self,
        cfg: DictConfig,
        trained: TrainResult,
        metrics: dict[str, Any],
        bundle: Bundle,
        fetched: Any,
        prepared: dict[str, Any],
    ) -> None:
        self.cfg = cfg
        self.trained = trained
        self.metrics = metrics
        self.bundle = bundle
        self.fetched = fetched
        self.prepared = prepared

    @property
    def prepared_dir(self) -> Path:
        return Path(self.cfg.paths.prepared)


def run_quick_pipeline(overrides: list[str], source: Path) -> Pipeline:
    """fetch -> prepare -> train -> evaluate -> export with ``experiment=quick``."""
    cfg = load_config(["experiment=quick", *overrides])
    fetched = fetch.run(cfg, source=str(source), progress=False)
    prepared = prepare.run(cfg)
    return train_quick_pipeline(cfg, fetched, prepared)


def train_quick_pipeline(cfg: DictConfig, fetched: Any, prepared: dict[str, Any]) -> Pipeline:
    """train -> evaluate -> export on data already fetched and prepared for ``cfg``."""
    trained = train.run(cfg)
    metrics, _ = evaluate.run(cfg, model=trained.run_dir)
    bundle = export.run(cfg, run_dir=trained.run_dir)
    return Pipeline(cfg, trained, metrics, bundle, fetched, prepared)


@dataclass(frozen=True)
class PreparedData:
    """A project's real data, fetched and prepared once per session; read-only for its users."""

    #: ``paths.raw`` and ``paths.prepared`` pointing at it (each user keeps its own workdir).
    overrides: list[str]
    fetched: Any
    prepared: dict[str, Any]


@pytest.fixture(scope="session")
def nilm_data(nilm_source: Path, tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    """The real UK-DALE and REFIT houses fetched and prepared once (prepare alone takes seconds),
    for the NILM pipeline below and for every module that trains its own NILM model."""
    data = tmp_path_factory.mktemp("nilm-data")
    overrides = [f"paths.raw={data / 'raw'}", f"paths.prepared={data / 'prepared'}"]
    cfg = load_config(["experiment=quick", "tracking=none", f"paths.workdir={data}", *overrides])
    fetched = fetch.run(cfg, source=str(nilm_source), progress=False)
    return PreparedData(overrides, fetched, prepare.run(cfg))


@pytest.fixture(scope="session")
def nilm_pipeline(nilm_data: PreparedData, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """The NILM project (default tracking: the embedded MLflow store) on both real houses."""
    workdir = tmp_path_factory.mktemp("nilm-workdir")
    cfg = load_config(["experiment=quick", f"paths.workdir={workdir}", *nilm_data.overrides])
    return train_quick_pipeline(cfg, nilm_data.fetched, nilm_data.prepared)


@pytest.fixture(scope="session")
def avm_pipeline(tables_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """The AVM project on the real Boliga sales."""
    workdir = tmp_path_factory.mktemp("avm-workdir")
    overrides = [
        "project=avm",
        "tracking=none",
        f"paths.workdir={workdir}",
        "trainer.enable_progress_bar=false",
    ]
    return run_quick_pipeline(overrides, tables_source)


@pytest.fixture(scope="session")
def image_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Pipeline]:
    """``image_pipeline(project)``: the image project trained on its real archive, once per
    session and project; skips when the archive is absent."""
    done: dict[str, Pipeline] = {}

    def build(project: str) -> Pipeline:
        images = shared_datasets_root() / "images"
        archive = images / IMAGE_ARCHIVES[project][0]
        if not archive.is_file():
            pytest.skip(f"real image data not found at {archive} (set MODELYARD_DATA_ROOT)")
        if project not in done:
            overrides = [
                f"project={project}",
                "tracking=none",
                f"paths.workdir={tmp_path_factory.mktemp(f'{project}-workdir')}",
                "trainer.enable_progress_bar=false",
            ]
            done[project] = run_quick_pipeline(overrides, images)
        return done[project]

    return build
