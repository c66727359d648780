"""Each task family checks its own facts against the bundle's tensors before it serves.

The NILM cases are in test_bundle_trust.py. Here: a tiny real image classifier (vision) and a
real AVM export (tabular), each with its manifest edited and re-sealed, so that the digest passes
and the family's own check is what refuses the bundle.
"""

import shutil
import tempfile
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from bundle_factory import edit_sealed_manifest, export_small_onnx
from modelyard.core.bundle import Bundle, TensorSpec, load_bundle, write_bundle
from modelyard.core.errors import BundleError
from modelyard.serving.app import create_app
from tabular_fixtures import build_avm_bundle

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

CLASSES = ["cat", "dog", "fish"]
IMAGE_SIZE = 8


def make_vision_bundle(target: Path) -> Bundle:
    """A seeded, untrained conv net: (batch, 3, 8, 8) images -> (batch, 3) logits."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, len(CLASSES))
    ).eval()
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = Path(scratch) / "model.onnx"
        example = torch.zeros((2, 3, IMAGE_SIZE, IMAGE_SIZE))
        export_small_onnx(net, example, onnx_path, "image", "logits")
        shape: list[int | str] = ["batch", 3, IMAGE_SIZE, IMAGE_SIZE]
        return write_bundle(
            target,
            onnx_path,
            {
                "project": "plants",
                "task": "vision",
                "name": "plants-tiny",
                "version": "20261205-080000",
                "created_at": datetime(2026, 12, 5, 8, 0, tzinfo=UTC),
                "inputs": [TensorSpec(name="image", dtype="float32", shape=shape)],
                "outputs": [
                    TensorSpec(name="logits", dtype="float32", shape=["batch", len(CLASSES)])
                ],
                "preprocessing": {
                    "classes": CLASSES,
                    "image_size": IMAGE_SIZE,
                    "mean": [0.5, 0.5, 0.5],
                    "std": [0.25, 0.25, 0.25],
                },
            },
        )


@pytest.fixture(scope="module")
def vision_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_vision_bundle(tmp_path_factory.mktemp("vision") / "bundle")


@pytest.fixture(scope="module")
def avm_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return build_avm_bundle(tmp_path_factory, rows=300)[1]


def edited_copy(bundle: Bundle, tmp_path: Path, edit: Any) -> Path:
    copy = Path(shutil.copytree(bundle.path, tmp_path / "bundle"))
    edit_sealed_manifest(copy, edit)
    return copy


def test_the_consistent_bundles_serve(vision_bundle: Bundle, avm_bundle: Bundle) -> None:
    for bundle in (vision_bundle, avm_bundle):
        with TestClient(create_app(load_bundle(bundle.path))) as client:
            assert client.get("/ready").status_code == 200


def test_vision_refuses_a_class_list_the_model_cannot_score(
    vision_bundle: Bundle, tmp_path: Path
) -> None:
    edited = edited_copy(
        vision_bundle, tmp_path, lambda raw: raw["preprocessing"]["classes"].append("bird")
    )

    with pytest.raises(BundleError, match=r"4 classes needs 4 on axis -1 of output logits"):
        create_app(load_bundle(edited))


def test_vision_refuses_an_image_size_the_model_does_not_take(
    vision_bundle: Bundle, tmp_path: Path
) -> None:
    edited = edited_copy(
        vision_bundle, tmp_path, lambda raw: raw["preprocessing"].update(image_size=16)
    )

    with pytest.raises(BundleError, match=r"image_size 16 needs 16 on axis -2 of input image"):
        create_app(load_bundle(edited))


def test_tabular_refuses_features_that_do_not_fill_the_model_input(
    avm_bundle: Bundle, tmp_path: Path
) -> None:
    width = avm_bundle.manifest.inputs[0].shape[-1]
    edited = edited_copy(
        avm_bundle, tmp_path, lambda raw: raw["preprocessing"]["features"]["numeric"].pop()
    )

    with pytest.raises(BundleError, match=r"encoded features needs \d+ on axis -1") as caught:
        create_app(load_bundle(edited))
    assert f"declared ['batch', {width}]" in str(caught.value)
