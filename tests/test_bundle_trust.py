"""Nothing in a bundle is trusted blindly: its files stay inside it, its manifest is covered by a
digest (and optionally an HMAC signature), and its model must match the tensors it declares.

Every test works on a copy of a real NILM bundle (real ONNX model, real ONNX Runtime, real
server); edits that must get past the digest to reach a later check are re-sealed, as someone
with write access to the bundle would.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from bundle_factory import WINDOW, edit_sealed_manifest
from modelyard.cli import app as cli_app
from modelyard.core.bundle import (
    FORMAT_VERSION,
    INT8_MODEL_FILE,
    LEGACY_FORMAT_VERSION,
    MANIFEST_FILE,
    MODEL_FILE,
    Bundle,
    load_bundle,
    reseal_bundle,
)
from modelyard.core.bundle_integrity import KEY_FILE_ENV, LEGACY, BundleKey, content_digest
from modelyard.core.errors import BundleError
from modelyard.serving.app import create_app
from modelyard.serving.server_process import running_server
from modelyard.serving.settings import ServerSettings

pytest_plugins = ["bundle_fixtures"]  # source_bundle, bundle_dir

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

SERIES = {"aggregate_w": [300.0] * 40}


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "bundle.key"
    path.write_text("a3f1" * 16 + "\n")
    return path


@pytest.fixture
def other_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "other.key"
    path.write_text("77e0" * 16 + "\n")
    return path


def raw_manifest(bundle_dir: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((bundle_dir / MANIFEST_FILE).read_text())
    return loaded


def edit_without_resealing(bundle_dir: Path, edit: Any) -> None:
    raw = raw_manifest(bundle_dir)
    edit(raw)
    (bundle_dir / MANIFEST_FILE).write_text(json.dumps(raw, indent=2))


def serve_cli(bundle_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``modelyard serve`` in a subprocess; only used where it must not start."""
    return subprocess.run(
        [sys.executable, "-m", "modelyard", "serve", str(bundle_dir), "--port", "1", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if k != KEY_FILE_ENV},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert fragment in lines[0], lines[0]


# -- files: every file the bundle uses lives inside it ------------------------------------------
@pytest.mark.parametrize("name", ["/etc/hostname", "/etc/passwd"])
def test_an_absolute_model_file_is_refused_and_never_read(bundle_dir: Path, name: str) -> None:
    edit_sealed_manifest(bundle_dir, lambda raw: raw.update(model_file=name))

    with pytest.raises(BundleError, match="not a plain file name") as caught:
        load_bundle(bundle_dir)
    outside_hash = hashlib.sha256(Path(name).read_bytes()).hexdigest()
    assert outside_hash not in str(caught.value)
    assert "sha256 is" not in str(caught.value)


def test_serve_refuses_a_model_outside_the_bundle_in_one_line(bundle_dir: Path) -> None:
    edit_sealed_manifest(bundle_dir, lambda raw: raw.update(model_file="/etc/hostname"))

    result = serve_cli(bundle_dir, "--prediction-log", "none")

    assert_one_line_error(result, "model_file: Value error, '/etc/hostname' is not a plain file")


def test_a_parent_reference_is_refused_even_when_the_model_there_matches(
    bundle_dir: Path,
) -> None:
    shutil.copyfile(bundle_dir / MODEL_FILE, bundle_dir.parent / "outside.onnx")
    edit_sealed_manifest(bundle_dir, lambda raw: raw.update(model_file="../outside.onnx"))

    with pytest.raises(BundleError, match="not a plain file name"):
        load_bundle(bundle_dir)


def int8_record(model_file: str, sha256: str) -> dict[str, Any]:
    """A complete, valid quantization record naming ``model_file``."""
    same = {"fp32": 1.0, "int8": 1.0, "relative_change": 0.0, "higher_is_better": False}
    return {
        "model_file": model_file,
        "sha256": sha256,
        "method": "dynamic",
        "calibration_rows": 0,
        "quantized_ops": ["MatMul"],
        "tolerance": 0.01,
        "metrics": {"kettle.mae_w": {**same, "within_tolerance": True}},
        "within_tolerance": True,
        "size_bytes": {"fp32": 1, "int8": 1},
        "speed": {"batch": 1, "threads": 1, "fp32_ms": 1.0, "int8_ms": 1.0, "speedup": 1.0},
    }


def test_a_parent_reference_in_the_int8_record_is_refused(bundle_dir: Path) -> None:
    shutil.copyfile(bundle_dir / MODEL_FILE, bundle_dir.parent / INT8_MODEL_FILE)
    edit_sealed_manifest(
        bundle_dir,
        lambda raw: raw.update(quantization=int8_record(f"../{INT8_MODEL_FILE}", raw["sha256"])),
    )

    with pytest.raises(BundleError, match=r"quantization\.model_file") as caught:
        load_bundle(bundle_dir)
    assert "not a plain file name" in str(caught.value)


def test_a_symlinked_int8_model_is_refused(bundle_dir: Path) -> None:
    outside = bundle_dir.parent / "int8.onnx"
    shutil.copyfile(bundle_dir / MODEL_FILE, outside)  # same bytes: the sha256 matches
    (bundle_dir / INT8_MODEL_FILE).symlink_to(outside)
    edit_sealed_manifest(
        bundle_dir, lambda raw: raw.update(quantization=int8_record(INT8_MODEL_FILE, raw["sha256"]))
    )

    with pytest.raises(BundleError, match=r"INT8 model file model\.int8\.onnx is a symbolic link"):
        load_bundle(bundle_dir)
    (bundle_dir / INT8_MODEL_FILE).unlink()
    shutil.copyfile(outside, bundle_dir / INT8_MODEL_FILE)
    assert load_bundle(bundle_dir).manifest.quantization is not None  # a real file is fine


def test_a_symlinked_manifest_is_refused(bundle_dir: Path) -> None:
    outside = bundle_dir.parent / "manifest.json"
    (bundle_dir / MANIFEST_FILE).rename(outside)
    (bundle_dir / MANIFEST_FILE).symlink_to(outside)

    with pytest.raises(BundleError, match=r"manifest manifest\.json is a symbolic link"):
        load_bundle(bundle_dir)


def test_the_bundle_directory_itself_may_be_a_link(bundle_dir: Path) -> None:
    current = bundle_dir.parent / "current"
    current.symlink_to(bundle_dir)

    assert load_bundle(current).manifest.sha256 == load_bundle(bundle_dir).manifest.sha256


# -- the manifest's own content ------------------------------------------------------------------
@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda raw: raw["metrics"]["overall"].update(mae_w=0.01), id="metrics"),
        pytest.param(
            lambda raw: raw["preprocessing"]["normalisation"].update(aggregate_std=1.0),
            id="preprocessing",
        ),
        pytest.param(lambda raw: raw["outputs"][0].update(name="watts"), id="outputs"),
        pytest.param(lambda raw: raw.update(git_commit="f" * 40), id="provenance"),
        pytest.param(lambda raw: raw.update(unknown_field=1), id="an-added-field"),
    ],
)
def test_any_edit_of_the_manifest_is_refused_with_what_to_do(bundle_dir: Path, edit: Any) -> None:
    edit_without_resealing(bundle_dir, edit)

    with pytest.raises(BundleError, match="was changed after export") as caught:
        load_bundle(bundle_dir)
    assert "re-export the bundle" in str(caught.value)
    assert "modelyard bundle sign" in str(caught.value)


def test_reformatting_the_manifest_keeps_its_digest(bundle_dir: Path) -> None:
    """The digest covers the content (canonical JSON), not the file's whitespace or key order."""
    raw = raw_manifest(bundle_dir)
    shuffled = dict(reversed(list(raw.items())))
    (bundle_dir / MANIFEST_FILE).write_text(json.dumps(shuffled, separators=(",", ":")))

    assert load_bundle(bundle_dir).trust.digest == raw["integrity"]["digest"]


def test_a_new_bundle_records_its_digest(source_bundle: Bundle) -> None:
    raw = raw_manifest(source_bundle.path)

    assert raw["format_version"] == FORMAT_VERSION
    assert raw["integrity"]["digest"] == content_digest(raw)
    assert raw["integrity"]["signature"] is None
    assert source_bundle.trust.state == "digest verified"


def test_a_version_2_manifest_without_its_integrity_record_is_refused(bundle_dir: Path) -> None:
    edit_without_resealing(bundle_dir, lambda raw: raw.pop("integrity"))

    with pytest.raises(BundleError, match="has no integrity record"):
        load_bundle(bundle_dir)


# -- signatures ----------------------------------------------------------------------------------
def test_a_signed_bundle_verifies_with_its_key(bundle_dir: Path, key_file: Path) -> None:
    key = BundleKey.from_file(key_file)
    reseal_bundle(bundle_dir, key)

    bundle = load_bundle(bundle_dir, key, require_signature=True)

    assert bundle.trust.signature_verified
    assert bundle.trust.key_id == key.key_id
    assert bundle.trust.state == "digest and signature verified"
    assert key_file.read_text().strip() not in (bundle_dir / MANIFEST_FILE).read_text()


def test_a_signature_made_with_another_key_is_refused(
    bundle_dir: Path, key_file: Path, other_key_file: Path
) -> None:
    reseal_bundle(bundle_dir, BundleKey.from_file(other_key_file))

    with pytest.raises(BundleError, match=r"is signed with key .*not with the given key"):
        load_bundle(bundle_dir, BundleKey.from_file(key_file))


def test_a_recomputed_digest_under_an_old_signature_is_refused(
    bundle_dir: Path, key_file: Path
) -> None:
    """Without the key, an attacker can recompute the digest but not the signature."""
    key = BundleKey.from_file(key_file)
    reseal_bundle(bundle_dir, key)
    signature = raw_manifest(bundle_dir)["integrity"]["signature"]

    def forge(raw: dict[str, Any]) -> None:
        raw["metrics"]["overall"]["mae_w"] = 0.01
        raw["integrity"] = {"digest": content_digest(raw), "signature": signature}

    edit_without_resealing(bundle_dir, forge)

    assert load_bundle(bundle_dir).trust.signed  # the digest alone cannot tell
    with pytest.raises(BundleError, match="signature does not match"):
        load_bundle(bundle_dir, key)


@pytest.mark.parametrize("field", ["digest", "signature"])
def test_a_malformed_integrity_record_is_an_invalid_manifest(
    bundle_dir: Path, key_file: Path, field: str
) -> None:
    reseal_bundle(bundle_dir, BundleKey.from_file(key_file))

    def garble(raw: dict[str, Any]) -> None:
        if field == "digest":
            raw["integrity"]["digest"] = "\u00e9" * 64
        else:
            raw["integrity"]["signature"]["value"] = "\u00e9" * 64

    edit_without_resealing(bundle_dir, garble)

    with pytest.raises(BundleError, match=rf"not a valid manifest.*integrity\.{field}"):
        load_bundle(bundle_dir, BundleKey.from_file(key_file))


def test_a_stripped_signature_is_refused_when_one_is_required(
    bundle_dir: Path, key_file: Path
) -> None:
    key = BundleKey.from_file(key_file)
    reseal_bundle(bundle_dir, key)
    edit_sealed_manifest(bundle_dir, lambda raw: raw["metrics"]["overall"].update(mae_w=0.01))

    assert load_bundle(bundle_dir, key).trust.state == "digest verified"
    with pytest.raises(BundleError, match="is not signed and a signature is required"):
        load_bundle(bundle_dir, key, require_signature=True)


def test_a_short_key_is_refused(tmp_path: Path) -> None:
    weak = tmp_path / "weak.key"
    weak.write_text("secret\n")

    with pytest.raises(BundleError, match="holds 6 bytes; use at least 32"):
        BundleKey.from_file(weak)


def test_signing_refuses_a_manifest_edited_since_its_digest(
    bundle_dir: Path, key_file: Path
) -> None:
    edit_without_resealing(bundle_dir, lambda raw: raw["metrics"]["overall"].update(mae_w=0.01))
    key = BundleKey.from_file(key_file)

    with pytest.raises(BundleError, match="was changed after export"):
        reseal_bundle(bundle_dir, key)
    signed = reseal_bundle(bundle_dir, key, accept_edits=True)
    assert signed.manifest.metrics["overall"]["mae_w"] == 0.01
    assert signed.trust.signature_verified


# -- legacy bundles (format version 1, written before the integrity record) ----------------------
def write_legacy(bundle_dir: Path) -> None:
    """A manifest exactly as modelyard wrote it before the integrity record existed."""
    raw = raw_manifest(bundle_dir)
    del raw["integrity"]
    raw["format_version"] = LEGACY_FORMAT_VERSION
    (bundle_dir / MANIFEST_FILE).write_text(json.dumps(raw, indent=2) + "\n")


def test_a_legacy_bundle_still_serves_and_says_what_was_verified(
    bundle_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_legacy(bundle_dir)
    bundle = load_bundle(bundle_dir)

    with TestClient(create_app(bundle)) as client:
        info = client.get("/info").json()
        assert client.post("/predict", json=SERIES).status_code == 200
    assert info["integrity"] == {
        "state": LEGACY,
        "digest": None,
        "signed": False,
        "signature_verified": False,
        "key_id": None,
    }
    assert "is a legacy bundle" in caplog.text


def test_a_legacy_bundle_still_has_its_model_checked(bundle_dir: Path) -> None:
    write_legacy(bundle_dir)
    model = bundle_dir / MODEL_FILE
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")

    with pytest.raises(BundleError, match="failed its integrity check"):
        load_bundle(bundle_dir)


def test_a_legacy_bundle_is_refused_when_a_signature_is_required(
    bundle_dir: Path, key_file: Path
) -> None:
    write_legacy(bundle_dir)

    with pytest.raises(BundleError, match=r"legacy bundle \(no integrity record\)"):
        load_bundle(bundle_dir, BundleKey.from_file(key_file), require_signature=True)


def test_signing_a_legacy_bundle_upgrades_it(bundle_dir: Path, key_file: Path) -> None:
    write_legacy(bundle_dir)
    signed = reseal_bundle(bundle_dir, BundleKey.from_file(key_file))

    assert signed.manifest.format_version == FORMAT_VERSION
    assert signed.trust.signature_verified


# -- the model against its manifest --------------------------------------------------------------
def test_an_edited_appliance_list_refuses_to_start(bundle_dir: Path) -> None:
    """The digest is valid (re-sealed): the contract check itself must catch the edit."""
    edit_sealed_manifest(
        bundle_dir, lambda raw: raw["preprocessing"].update(appliances=["kettle", "fridge", "tv"])
    )
    bundle = load_bundle(bundle_dir)

    with pytest.raises(
        BundleError, match=r"contradicts itself: preprocessing.appliances lists \['fridge', 'tv'\]"
    ):
        create_app(bundle)


def test_outputs_edited_to_agree_with_the_appliances_still_disagree_with_the_model(
    bundle_dir: Path,
) -> None:
    def three_appliances(raw: dict[str, Any]) -> None:
        pre = raw["preprocessing"]
        pre["appliances"] = ["kettle", "fridge", "tv"]
        for table in (pre["on_threshold_w"], pre["limit_w"]):
            table.update(fridge=15.0, tv=15.0)
        raw["outputs"][0]["shape"] = ["batch", 3]

    edit_sealed_manifest(bundle_dir, three_appliances)

    with pytest.raises(BundleError, match=r"output power has shape \[.*2\].*declares \[batch, 3\]"):
        create_app(load_bundle(bundle_dir))


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda raw: raw["inputs"][0].update(name="aggregate"), "inputs are ['mains']"),
        (lambda raw: raw["inputs"][0].update(dtype="float64"), "input mains is float32"),
        (lambda raw: raw["inputs"][0].update(shape=["batch", WINDOW, 1]), "input mains has"),
        (lambda raw: raw["inputs"][0].update(shape=["batch", 16]), "declares [batch, 16]"),
    ],
)
def test_declared_tensors_must_be_the_models(bundle_dir: Path, edit: Any, fragment: str) -> None:
    edit_sealed_manifest(bundle_dir, edit)

    with pytest.raises(BundleError, match="does not match its manifest") as caught:
        create_app(load_bundle(bundle_dir))
    assert fragment in str(caught.value)


def test_serve_refuses_a_self_contradicting_bundle_in_one_line(bundle_dir: Path) -> None:
    edit_sealed_manifest(
        bundle_dir, lambda raw: raw["preprocessing"].update(appliances=["kettle", "fridge", "tv"])
    )

    for workers in ("1", "2"):
        result = serve_cli(bundle_dir, "--workers", workers, "--prediction-log", "none")
        assert_one_line_error(result, "the manifest contradicts itself")


# -- serving with signatures ---------------------------------------------------------------------
def test_serve_requires_a_valid_signature_when_asked(
    bundle_dir: Path, key_file: Path, other_key_file: Path
) -> None:
    required = ["--require-signature", "--prediction-log", "none"]
    unsigned = serve_cli(bundle_dir, "--bundle-key-file", str(key_file), *required)
    assert_one_line_error(unsigned, "is not signed and a signature is required")

    no_key = serve_cli(bundle_dir, *required)
    assert_one_line_error(no_key, "no key was given")

    reseal_bundle(bundle_dir, BundleKey.from_file(other_key_file))
    wrong = serve_cli(bundle_dir, "--bundle-key-file", str(key_file), *required)
    assert_one_line_error(wrong, "not with the given key")

    write_legacy(bundle_dir)
    legacy = serve_cli(bundle_dir, "--bundle-key-file", str(key_file), *required)
    assert_one_line_error(legacy, "legacy bundle")


def test_a_signed_bundle_serves_and_info_reports_its_key(bundle_dir: Path, key_file: Path) -> None:
    key = BundleKey.from_file(key_file)
    signed = reseal_bundle(bundle_dir, key)
    args = ["--bundle-key-file", str(key_file), "--require-signature", "--prediction-log", "none"]

    with running_server(bundle_dir, extra_args=args) as url:
        info = httpx.get(f"{url}/info", timeout=10).json()["integrity"]
        answered = httpx.post(f"{url}/predict", json=SERIES, timeout=10).status_code

    assert answered == 200
    assert info == {
        "state": "digest and signature verified",
        "digest": signed.manifest.integrity.digest if signed.manifest.integrity else None,
        "signed": True,
        "signature_verified": True,
        "key_id": key.key_id,
    }


def test_server_settings_carry_the_signature_policy_to_workers(key_file: Path) -> None:
    settings = ServerSettings(bundle_key_file=str(key_file), require_signature=True)

    assert ServerSettings.model_validate_json(settings.to_env()) == settings


# -- the bundle command group ---------------------------------------------------------------------
def test_bundle_sign_then_verify(bundle_dir: Path, key_file: Path, other_key_file: Path) -> None:
    runner = CliRunner()
    key_id = BundleKey.from_file(key_file).key_id

    sign = ["bundle", "sign", str(bundle_dir), "--key-file", str(key_file)]
    signed = runner.invoke(cli_app, sign)
    assert signed.exit_code == 0, signed.output
    assert f"signed with key {key_id}" in signed.stderr

    verified = runner.invoke(
        cli_app,
        ["bundle", "verify", str(bundle_dir), "--key-file", str(key_file), "--require-signature"],
    )
    assert verified.exit_code == 0, verified.output
    assert f"OK, digest and signature verified (key {key_id})" in verified.stderr

    wrong = runner.invoke(
        cli_app, ["bundle", "verify", str(bundle_dir), "--key-file", str(other_key_file)]
    )
    assert wrong.exit_code == 2
    assert "not with the given key" in wrong.stderr


def test_bundle_verify_finds_a_self_contradicting_bundle(bundle_dir: Path) -> None:
    edit_sealed_manifest(
        bundle_dir, lambda raw: raw["preprocessing"].update(appliances=["kettle", "fridge", "tv"])
    )

    result = CliRunner().invoke(cli_app, ["bundle", "verify", str(bundle_dir)])

    assert result.exit_code == 2
    assert "the manifest contradicts itself" in result.stderr


def test_bundle_seal_records_an_intended_edit(bundle_dir: Path) -> None:
    edit_without_resealing(bundle_dir, lambda raw: raw["metrics"]["overall"].update(mae_w=9.0))
    runner = CliRunner()

    refused = runner.invoke(cli_app, ["bundle", "seal", str(bundle_dir)])
    assert refused.exit_code == 2
    assert "was changed after export" in refused.stderr

    sealed = runner.invoke(cli_app, ["bundle", "seal", str(bundle_dir), "--accept-edits"])
    assert sealed.exit_code == 0, sealed.output
    assert load_bundle(bundle_dir).manifest.metrics["overall"]["mae_w"] == 9.0
