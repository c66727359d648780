"""The vision contract: written by training into the bundle, read back by the task and serving."""

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contract_helpers import assert_refused_in_one_line
from modelyard.core.bundle import load_bundle
from modelyard.projects.vision.contract import VisionContract
from modelyard.serving.app import create_app
from modelyard.serving.settings import ServerSettings
from vision_fixtures import make_vision_bundle

CONTRACT = VisionContract(
    classes=("Forest", "River", "Sea"),
    image_size=16,
    mean=(0.4, 0.4, 0.4),
    std=(0.2, 0.2, 0.2),
    test_time_augmentation="hflip",
)


def test_the_contract_round_trips_through_its_json() -> None:
    assert VisionContract.parse(CONTRACT.to_preprocessing()) == CONTRACT


def test_an_old_layout_without_test_time_views_parses_to_none(tmp_path: Path) -> None:
    """As format 1/2 bundles wrote it: classes, size, mean, std (no resize note or views)."""
    bundle = make_vision_bundle(tmp_path / "bundle", image_size=16)

    contract = VisionContract.parse(bundle.manifest.preprocessing)

    assert contract == CONTRACT.model_copy(update={"test_time_augmentation": "none"})


def test_serving_shows_the_contract(tmp_path: Path) -> None:
    bundle = load_bundle(make_vision_bundle(tmp_path / "bundle", image_size=16).path)
    details = TestClient(create_app(bundle, settings=ServerSettings())).get("/info").json()

    shown = details["details"]
    assert (shown["classes"], shown["image_size"]) == (["Forest", "River", "Sea"], 16)
    assert shown["test_time_augmentation"] == "none"


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        ({"image_size": "large"}, "image_size: Input should be a valid integer"),
        ({"mean": [0.4, 0.4]}, "mean: Tuple should have at least 3 items"),
        ({"classes": []}, "classes: Tuple should have at least 1 item"),
    ],
)
def test_a_broken_contract_is_one_line_that_says_how_to_re_export(
    edit: dict[str, Any], fragment: str
) -> None:
    assert_refused_in_one_line(VisionContract.parse, CONTRACT.to_preprocessing() | edit, fragment)
