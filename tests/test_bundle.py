"""Bundles on real files: writing, loading, and every way a bundle can be refused."""

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bundle_factory import (
    AGGREGATE_LIMIT_W,
    APPLIANCES,
    VERSION,
    WINDOW,
    edit_sealed_manifest,
    make_nilm_bundle,
)
from modelyard.core.bundle import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    MODEL_FILE,
    Bundle,
    load_bundle,
    write_bundle,
)
from modelyard.core.errors import BundleError, ModelyardError

pytest_plugins = ["bundle_fixtures"]  # source_bundle, bundle_dir


def manifest_fields(bundle: Bundle) -> dict[str, Any]:
    """What ``write_bundle`` takes: every manifest field except the two it computes."""
    return bundle.manifest.model_dump(exclude={"sha256", "model_file"})


def edit_manifest(bundle_dir: Path, **changes: Any) -> None:
    """Change top-level fields and re-seal, so the checks after the digest are what is tested."""
    edit_sealed_manifest(bundle_dir, lambda raw: raw.update(changes))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_keeps_every_manifest_field(source_bundle: Bundle) -> None:
    loaded = load_bundle(source_bundle.path)

    assert loaded.manifest == source_bundle.manifest
    manifest = loaded.manifest
    assert manifest.format_version == FORMAT_VERSION
    assert (manifest.project, manifest.task, manifest.name) == ("nilm", "nilm", "nilm-seq2point")
    assert manifest.version == VERSION
    assert manifest.created_at.tzinfo is not None
    assert [(s.name, s.shape) for s in manifest.inputs] == [("mains", ["batch", WINDOW])]
    assert [(s.name, s.shape) for s in manifest.outputs] == [("power", ["batch", len(APPLIANCES)])]
    assert manifest.preprocessing["window"] == WINDOW
    assert manifest.preprocessing["interval_s"] == 60
    assert manifest.preprocessing["appliances"] == list(APPLIANCES)
    assert set(manifest.preprocessing["normalisation"]) == {
        "aggregate_mean",
        "aggregate_std",
        "target_mean",
        "target_std",
    }
    assert manifest.preprocessing["max_aggregate_w"] == AGGREGATE_LIMIT_W
    assert (manifest.preprocessing["min_length"], manifest.preprocessing["max_length"]) == (
        WINDOW,
        500,
    )


def test_manifest_is_plain_json_with_the_model_hash(source_bundle: Bundle) -> None:
    assert sorted(p.name for p in source_bundle.path.iterdir()) == [MANIFEST_FILE, MODEL_FILE]
    raw = json.loads((source_bundle.path / MANIFEST_FILE).read_text())

    assert raw["model_file"] == MODEL_FILE
    assert source_bundle.model_path == source_bundle.path / MODEL_FILE
    assert raw["sha256"] == file_sha256(source_bundle.model_path)
    assert source_bundle.manifest.sha256 == raw["sha256"]
    assert len(raw["sha256"]) == 64


def test_tampered_model_fails_the_integrity_check(bundle_dir: Path) -> None:
    model = bundle_dir / MODEL_FILE
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    model.write_bytes(bytes(data))

    with pytest.raises(BundleError, match="integrity check") as caught:
        load_bundle(bundle_dir)
    message = str(caught.value)
    assert "sha256" in message
    assert file_sha256(model) in message


def test_truncated_model_fails_the_integrity_check(bundle_dir: Path) -> None:
    model = bundle_dir / MODEL_FILE
    model.write_bytes(model.read_bytes()[:100])

    with pytest.raises(BundleError, match=r"failed its integrity check: sha256"):
        load_bundle(bundle_dir)


def test_missing_manifest_is_not_a_bundle(bundle_dir: Path) -> None:
    (bundle_dir / MANIFEST_FILE).unlink()

    with pytest.raises(BundleError, match=r"is not a bundle: manifest\.json is missing"):
        load_bundle(bundle_dir)


def test_missing_model_file(bundle_dir: Path) -> None:
    (bundle_dir / MODEL_FILE).unlink()

    with pytest.raises(BundleError, match=r"model file model\.onnx is missing"):
        load_bundle(bundle_dir)


def test_manifest_naming_another_model_file_that_is_absent(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, model_file="other.onnx")

    with pytest.raises(BundleError, match=r"model file other\.onnx is missing"):
        load_bundle(bundle_dir)


def test_invalid_json_manifest(bundle_dir: Path) -> None:
    (bundle_dir / MANIFEST_FILE).write_text('{"project": "nilm",')

    with pytest.raises(BundleError, match="is not valid JSON"):
        load_bundle(bundle_dir)


def test_non_utf8_manifest(bundle_dir: Path) -> None:
    (bundle_dir / MANIFEST_FILE).write_bytes(b"\xff\xfe\x00garbage")

    with pytest.raises(BundleError, match="is not valid JSON"):
        load_bundle(bundle_dir)


def test_wrong_format_version(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, format_version=FORMAT_VERSION + 1)

    with pytest.raises(BundleError) as caught:
        load_bundle(bundle_dir)
    message = str(caught.value)
    assert f"format_version {FORMAT_VERSION + 1}" in message
    assert f"reads version {FORMAT_VERSION}" in message


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"sha256": None}, "sha256"),
        ({"created_at": "not a date"}, "created_at"),
        ({"inputs": [{"name": "mains", "dtype": "float32"}]}, "inputs"),
        ({"preprocessing": ["window", 15]}, "preprocessing"),
    ],
)
def test_manifest_failing_validation_names_the_field(
    bundle_dir: Path, change: dict[str, Any], field: str
) -> None:
    edit_manifest(bundle_dir, **change)

    with pytest.raises(BundleError, match="is not a valid manifest") as caught:
        load_bundle(bundle_dir)
    assert field in str(caught.value)


def test_manifest_missing_a_required_field(bundle_dir: Path) -> None:
    raw = json.loads((bundle_dir / MANIFEST_FILE).read_text())
    del raw["project"]
    (bundle_dir / MANIFEST_FILE).write_text(json.dumps(raw))

    with pytest.raises(BundleError, match="is not a valid manifest") as caught:
        load_bundle(bundle_dir)
    assert "project" in str(caught.value)


def test_a_file_is_not_a_bundle(bundle_dir: Path) -> None:
    with pytest.raises(BundleError, match="bundle directory not found"):
        load_bundle(bundle_dir / MODEL_FILE)


def test_a_missing_path_is_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="bundle directory not found") as caught:
        load_bundle(tmp_path / "nowhere")
    assert "nowhere" in str(caught.value)


def test_bundle_errors_are_user_errors() -> None:
    """The CLI prints ModelyardError as one line; bundle problems must be among them."""
    assert issubclass(BundleError, ModelyardError)


def test_write_bundle_leaves_only_the_bundle_behind(source_bundle: Bundle, tmp_path: Path) -> None:
    parent = tmp_path / "bundles"
    written = write_bundle(parent / "v1", source_bundle.model_path, manifest_fields(source_bundle))

    assert [p.name for p in parent.iterdir()] == ["v1"]
    assert written.path == (parent / "v1").resolve()
    assert written.manifest.sha256 == source_bundle.manifest.sha256
    assert load_bundle(written.path).manifest == written.manifest


def test_write_bundle_replaces_an_existing_bundle(source_bundle: Bundle, tmp_path: Path) -> None:
    target = tmp_path / "bundles" / "current"
    old = write_bundle(target, source_bundle.model_path, manifest_fields(source_bundle))
    (target / "stray.txt").write_text("left over from the old bundle")

    new = make_nilm_bundle(target, window=WINDOW, appliances=APPLIANCES, seed=1)

    assert new.manifest.sha256 != old.manifest.sha256
    assert sorted(p.name for p in target.iterdir()) == [MANIFEST_FILE, MODEL_FILE]
    assert [p.name for p in target.parent.iterdir()] == ["current"]
    assert load_bundle(target).manifest.sha256 == file_sha256(target / MODEL_FILE)


def test_failed_write_keeps_the_old_bundle_and_cleans_up(
    source_bundle: Bundle, tmp_path: Path
) -> None:
    target = tmp_path / "bundles" / "current"
    old = write_bundle(target, source_bundle.model_path, manifest_fields(source_bundle))
    fields = manifest_fields(source_bundle)
    del fields["version"]

    with pytest.raises(ValidationError, match="version"):
        write_bundle(target, source_bundle.model_path, fields)

    assert [p.name for p in target.parent.iterdir()] == ["current"]
    assert load_bundle(target).manifest == old.manifest


def test_write_bundle_from_a_missing_model_file_cleans_up(
    source_bundle: Bundle, tmp_path: Path
) -> None:
    parent = tmp_path / "bundles"

    with pytest.raises(FileNotFoundError):
        write_bundle(parent / "v1", tmp_path / "missing.onnx", manifest_fields(source_bundle))

    assert list(parent.iterdir()) == []
