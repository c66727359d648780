"""The vision contract: written by training into the bundle, read back by the task and serving."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from bundle_factory import edit_sealed_manifest
from contract_helpers import assert_refused_in_one_line
from modelyard.core.bundle import Bundle, load_bundle
from modelyard.core.config import load_config
from modelyard.core.errors import ConfigError
from modelyard.projects.vision.contract import VisionContract, VisionLimits
from modelyard.projects.vision.image_cache import PARTS, save_classes, save_part
from modelyard.projects.vision.task import VisionTask
from modelyard.serving.app import create_app
from modelyard.serving.settings import ServerSettings
from vision_fixtures import encode, make_vision_bundle

CONTRACT = VisionContract(
    classes=("Forest", "River", "Sea"),
    image_size=16,
    mean=(0.4, 0.4, 0.4),
    std=(0.2, 0.2, 0.2),
    test_time_augmentation="hflip",
    limits=VisionLimits(top_k=2, max_upload_bytes=5000, max_concurrent_decodes=3),
)
#: A project's ``serving:`` block that differs from every default.
SERVING = {
    "top_k": 2,
    "max_upload_bytes": 5000,
    "max_pixels": 1_000_000,
    "max_decoded_bytes": 4_000_000,
    "max_concurrent_decodes": 3,
    "max_decode_wait_s": 2.5,
}


def test_the_contract_round_trips_through_its_json() -> None:
    assert VisionContract.parse(CONTRACT.to_preprocessing()) == CONTRACT


def test_an_old_layout_without_test_time_views_parses_to_none(tmp_path: Path) -> None:
    """As format 1/2 bundles wrote it: classes, size, mean, std (no resize note or views)."""
    bundle = make_vision_bundle(tmp_path / "bundle", image_size=16, old_layout=True)

    contract = VisionContract.parse(bundle.manifest.preprocessing)

    assert contract == CONTRACT.model_copy(
        update={"test_time_augmentation": "none", "limits": VisionLimits()}
    )


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


# --- request limits ----------------------------------------------------------------------------


def info_details(bundle: Bundle, **overrides: int) -> dict[str, Any]:
    client = TestClient(create_app(bundle, overrides=overrides or None, settings=ServerSettings()))
    details: dict[str, Any] = client.get("/info").json()["details"]
    return details


def shown_limits(details: dict[str, Any]) -> dict[str, Any]:
    return {name: details[name] for name in VisionLimits.model_fields}


@pytest.mark.parametrize("project", ["eurosat", "plants"])
def test_training_writes_the_projects_serving_limits_into_the_contract(
    tmp_path: Path, project: str
) -> None:
    """The task's contract (what export copies into the bundle) holds the project's
    ``serving:`` limits, every key read from the shipped configuration."""
    pixels = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    for part in PARTS:
        save_part(tmp_path, part, pixels, np.array([0, 1, 0, 1]))
    save_classes(tmp_path, ["Forest", "Sea"], {})
    cfg = load_config([f"project={project}", f"paths.prepared={tmp_path}"])
    task = VisionTask(cfg)
    datamodule = task.datamodule()
    datamodule.setup()

    written = task.preprocessing(datamodule)

    serving = cfg.project.serving
    assert written["limits"] == {name: serving[name] for name in VisionLimits.model_fields}
    assert VisionContract.parse(written).limits == VisionLimits(**written["limits"])


def test_a_bad_serving_limit_in_the_configuration_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"project.serving top_k: .*\(got 'three'\)"):
        VisionLimits.from_serving_config({"top_k": "three"})


def test_new_and_old_layouts_serve_the_same_limits(tmp_path: Path) -> None:
    """A new bundle's contract and an old bundle's saved ``project.serving`` give one /info."""
    new = load_bundle(make_vision_bundle(tmp_path / "new", serving=SERVING).path)
    old = load_bundle(make_vision_bundle(tmp_path / "old", serving=SERVING, old_layout=True).path)

    assert new.manifest.preprocessing["limits"] == SERVING
    assert "limits" not in old.manifest.preprocessing
    assert VisionContract.from_manifest(old.manifest) == VisionContract.from_manifest(new.manifest)
    assert shown_limits(info_details(new)) == shown_limits(info_details(old)) == SERVING


def test_an_old_bundle_without_serving_settings_gets_the_defaults(tmp_path: Path) -> None:
    old = load_bundle(make_vision_bundle(tmp_path / "old", old_layout=True).path)

    assert shown_limits(info_details(old)) == VisionLimits().model_dump()


def test_serving_never_reads_the_training_configuration(tmp_path: Path) -> None:
    """A new bundle's config (provenance) disagreeing with its contract changes nothing."""
    make_vision_bundle(tmp_path / "bundle", serving=SERVING)

    def misleading(raw: dict[str, Any]) -> None:
        raw["config"]["project"]["serving"] = {"top_k": 1, "max_upload_bytes": 10}

    edit_sealed_manifest(tmp_path / "bundle", misleading)

    assert shown_limits(info_details(load_bundle(tmp_path / "bundle"))) == SERVING


def test_serve_overrides_replace_the_contracts_limits(tmp_path: Path) -> None:
    bundle = load_bundle(make_vision_bundle(tmp_path / "bundle", serving=SERVING).path)

    assert shown_limits(info_details(bundle, top_k=1)) == SERVING | {"top_k": 1}


@pytest.mark.parametrize("old_layout", [False, True])
def test_an_upload_over_the_limit_is_refused_in_both_layouts(
    tmp_path: Path, old_layout: bool
) -> None:
    bundle = make_vision_bundle(tmp_path / "bundle", serving=SERVING, old_layout=old_layout)
    client = TestClient(create_app(load_bundle(bundle.path), settings=ServerSettings()))
    upload = {"file": ("big.png", b"\x89PNG" + bytes(SERVING["max_upload_bytes"]), "image/png")}

    refused = client.post("/predict", files=upload)

    assert refused.status_code == 413
    assert f"upload larger than {SERVING['max_upload_bytes']} bytes" in refused.json()["detail"]
    small = encode(Image.new("RGB", (16, 16), (30, 120, 30)), "PNG")
    assert client.post("/predict", files={"file": ("small.png", small, "image/png")}).is_success
