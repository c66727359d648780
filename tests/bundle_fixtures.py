"""Pytest fixtures shared by the bundle tests (``pytest_plugins = ["bundle_fixtures"]``): one
real NILM bundle per module (window and appliances: bundle_factory's defaults) and a private copy
of it per test."""

import shutil
from pathlib import Path

import pytest

from bundle_factory import make_nilm_bundle
from modelyard.core.bundle import Bundle


@pytest.fixture(scope="module")
def source_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """One real bundle per module; tests that modify a bundle work on a copy."""
    return make_nilm_bundle(tmp_path_factory.mktemp("source") / "bundle")


@pytest.fixture
def bundle_dir(source_bundle: Bundle, tmp_path: Path) -> Path:
    """A private copy of the source bundle, free to be damaged."""
    return Path(shutil.copytree(source_bundle.path, tmp_path / "bundle"))
