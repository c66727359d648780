"""Both image projects end to end on the real shared zips: fetch -> prepare -> train (quick) ->
evaluate -> export -> real server on 127.0.0.1 -> one multipart upload over HTTP."""

import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conftest import shared_datasets_root
from modelyard.projects.vision.image_folders import index_image_folder, read_member
from modelyard.serving.server_process import running_server
from trained_pipelines import IMAGE_ARCHIVES, Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("project", sorted(IMAGE_ARCHIVES))
def test_image_project_from_real_zip_to_http(
    project: str, image_pipeline: Callable[[str], Pipeline]
) -> None:
    archive, n_classes, n_images = IMAGE_ARCHIVES[project]
    images = shared_datasets_root() / "images"
    pipeline = image_pipeline(project)
    summary = pipeline.prepared
    assert summary["images"] == n_images
    assert len(summary["classes"]) == n_classes
    per_part = summary["per_split_and_class"]
    assert sum(sum(part.values()) for part in per_part.values()) == n_images
    assert all(count >= 1 for part in per_part.values() for count in part.values())

    metrics = pipeline.metrics
    assert metrics["n_samples"] == sum(per_part["test"].values())
    assert metrics["accuracy"] > 1.0 / n_classes  # better than guessing, even after 20 batches
    bundle = pipeline.bundle
    assert bundle.manifest.parity is not None
    assert bundle.manifest.parity.max_abs_diff <= 1e-4

    index = index_image_folder(images / archive)
    member = index.members[0]
    with running_server(bundle.path) as url:
        response = httpx.post(
            f"{url}/predict",
            timeout=30,
            files={"file": (Path(member).name, read_member(index, member), "image/jpeg")},
        )
        refused = httpx.post(
            f"{url}/predict", timeout=30, files={"file": ("x.jpg", b"not an image", "image/jpeg")}
        )
    assert response.status_code == 200, response.text
    top = response.json()["top"]
    assert len(top) == min(3, n_classes)
    assert {t["label"] for t in top} <= set(summary["classes"])
    assert refused.status_code == 422

    # the examples: test images of different classes, the archive's own bytes
    examples = bundle.manifest.examples
    assert len(examples) == min(3, n_classes)
    shipped = {e.name.split("-", 1)[0] for e in examples}
    assert len(shipped) == len(examples) and shipped <= set(summary["classes"])
    # example names are "<class>-<file name>", the file name with unsafe characters as "_"
    members = {re.sub(r"[^A-Za-z0-9_.\-]+", "_", Path(m).name): m for m in index.members}
    for example in examples:
        found = bundle.example(example.name)
        assert found is not None
        assert found[1] == read_member(index, members[example.name.split("-", 1)[1]])
