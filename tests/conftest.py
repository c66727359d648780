"""Shared fixtures: where the real datasets are, and an isolated working directory per test."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from postgres_server import PostgresServer, available, postgres_server

REPO = Path(__file__).resolve().parents[1]
#: Session-scoped real trained models, shared by every module that uses them.
pytest_plugins = ["trained_pipelines"]


@pytest.fixture(scope="session", autouse=True)
def isolated_workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Whatever the suite writes to the default working directory (servers' prediction logs,
    tracking stores) goes to a temporary one, never into the checkout's ``.modelyard``."""
    from modelyard.core.runs import HOME_ENV

    previous = os.environ.get(HOME_ENV)
    home = tmp_path_factory.mktemp("modelyard-home")
    if previous is None:
        os.environ[HOME_ENV] = str(home)
    yield Path(os.environ[HOME_ENV])
    if previous is None:
        os.environ.pop(HOME_ENV, None)


def shared_datasets_root() -> Path:
    """``$MODELYARD_DATA_ROOT`` or ``../shared/datasets`` beside the checkout."""
    return Path(os.environ.get("MODELYARD_DATA_ROOT", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def nilm_source() -> Path:
    """The real 1-minute UK-DALE/REFIT houses; tests needing them skip when they are absent."""
    path = shared_datasets_root() / "nilm"
    if not (path / "ukdale_house2").is_dir() or not (path / "refit_house2").is_dir():
        pytest.skip(f"real NILM data not found at {path} (set MODELYARD_DATA_ROOT)")
    return path


@pytest.fixture(scope="session")
def tables_source() -> Path:
    """The real Boliga sales table; tests needing it skip when it is absent."""
    path = shared_datasets_root() / "tables"
    if not (path / "boliga_sales_2021.csv").is_file():
        pytest.skip(f"real tabular data not found at {path} (set MODELYARD_DATA_ROOT)")
    return path


@pytest.fixture(scope="session")
def kc_house_data(tables_source: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The real King County table fetched and prepared once per session.

    Returns the overrides that point a configuration at it (``project``, ``paths.raw``,
    ``paths.prepared``); each test still chooses its own ``paths.workdir``.
    """
    from modelyard.core.config import load_config
    from modelyard.stages import fetch, prepare

    data = tmp_path_factory.mktemp("kc_house_data")
    overrides = [
        "project=kc_house",
        f"paths.raw={data / 'raw'}",
        f"paths.prepared={data / 'prepared'}",
    ]
    cfg = load_config([*overrides, f"paths.workdir={data}", "tracking=none"])
    fetch.run(cfg, source=str(tables_source), progress=False)
    prepare.run(cfg)
    return overrides


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on 127.0.0.1 for one test module; skips when it cannot run."""
    reason = available()
    if reason is not None:
        pytest.skip(reason)
    with postgres_server() as server:
        yield server
