"""INT8 quantization at export, on real data, real files and the real ONNX Runtime.

One quick NILM training run on the real houses is exported once through the command line (in
process, to import torch once) with ``--quantize``; the tests read that bundle, damage copies of
it, and check how export, loading and :func:`serving_model_path` answer.
"""

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from omegaconf import DictConfig
from typer.testing import CliRunner

from bundle_factory import edit_sealed_manifest
from cli_helpers import assert_user_error
from modelyard.cli import app
from modelyard.core.bundle import (
    INT8_MODEL_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    Bundle,
    load_bundle,
    serving_model_path,
    write_bundle,
)
from modelyard.core.bundle_examples import EXAMPLES_DIR
from modelyard.core.bundle_integrity import BundleKey
from modelyard.core.config import load_config
from modelyard.core.errors import BundleError, ConfigError
from modelyard.core.families import load_task
from modelyard.core.reference_profile import PROFILE_FILE
from modelyard.projects.quantization import (
    QuantizationError,
    QuantizeSettings,
    op_types,
    quantize_model,
    requested,
    verdict,
)
from modelyard.serving.runtime import OnnxModel
from modelyard.stages import evaluate, export, train
from trained_pipelines import PreparedData

pytestmark = pytest.mark.integration

APPLIANCES = ["kettle", "microwave", "dishwasher", "washing_machine"]
GATE_METRICS = sorted(f"{name}.mae_w" for name in APPLIANCES)


@dataclass(frozen=True)
class Exported:
    cfg: DictConfig
    run_dir: Path
    bundle: Bundle
    cli: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def exported(nilm_data: PreparedData, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """A quick seq2point trained on the real houses, exported by ``modelyard export --quantize``."""
    workdir = tmp_path_factory.mktemp("workdir")
    overrides = [
        "experiment=quick",
        "tracking=none",
        f"paths.workdir={workdir}",
        *nilm_data.overrides,
    ]
    cfg = load_config(overrides)
    run_dir = train.run(cfg).run_dir
    target = workdir / "bundle"
    cli = export_command(*overrides, "--run", str(run_dir), "--output", str(target), "--quantize")
    assert cli.returncode == 0, cli.stderr
    return Exported(cfg, run_dir, load_bundle(target), cli)


def export_command(*args: str) -> subprocess.CompletedProcess[str]:
    """``modelyard export ARGS`` through the real Typer app, in this process."""
    outcome = CliRunner().invoke(app, ["export", *args])
    return subprocess.CompletedProcess(args, outcome.exit_code, outcome.stdout, outcome.stderr)


@pytest.fixture
def bundle_copy(exported: Exported, tmp_path: Path) -> Path:
    """A private copy of the quantized bundle, free to be damaged."""
    return Path(shutil.copytree(exported.bundle.path, tmp_path / "bundle"))


def edit_manifest(bundle_dir: Path, edit: Any) -> None:
    """Edit and re-seal: the checks after the manifest digest are what these tests exercise."""
    edit_sealed_manifest(bundle_dir, edit)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_close_outputs(fp32: np.ndarray, int8: np.ndarray) -> None:
    """Outputs are standardised targets (1.0 = one standard deviation of appliance power).

    The model's hard on/off gate may flip on a rare window whose score sits at its threshold
    (the evaluation metrics account for that); every other output must agree closely.
    """
    difference = np.abs(int8 - fp32)
    agree = difference < 0.25
    assert agree.mean() > 0.99
    assert difference[agree].mean() < 0.01


# -- the exported INT8 model -------------------------------------------------------------------
def test_bundle_holds_a_smaller_verified_int8_model(exported: Exported) -> None:
    bundle = exported.bundle
    record = bundle.manifest.quantization
    assert record is not None
    files = sorted(p.name for p in bundle.path.iterdir())
    assert files == sorted([MANIFEST_FILE, MODEL_FILE, INT8_MODEL_FILE, PROFILE_FILE, EXAMPLES_DIR])
    int8 = bundle.path / INT8_MODEL_FILE
    assert record.model_file == INT8_MODEL_FILE
    assert record.sha256 == file_sha256(int8)
    assert record.size_bytes.fp32 == bundle.model_path.stat().st_size
    assert record.size_bytes.int8 == int8.stat().st_size
    assert record.size_bytes.int8 < record.size_bytes.fp32 / 3  # INT8 weights: ~4x smaller
    assert record.method == "static_qdq"
    assert record.calibration_rows == 512
    assert record.quantized_ops == ["Conv", "Gemm"]
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(op_types(int8))
    assert record.note is None
    speed = record.speed
    assert speed.batch == 512 and speed.threads == 1
    assert speed.fp32_ms > 0 and speed.int8_ms > 0
    assert speed.speedup == pytest.approx(speed.fp32_ms / speed.int8_ms, rel=1e-2)


def test_metric_changes_are_measured_on_the_evaluation_data(
    exported: Exported, tmp_path: Path
) -> None:
    record = exported.bundle.manifest.quantization
    assert record is not None
    assert record.tolerance == 0.01  # the configured default
    assert sorted(record.metrics) == GATE_METRICS
    # the fp32 column is what `modelyard evaluate` reports for the bundle on the same data
    scored, _ = evaluate.run(exported.cfg, model=exported.bundle.path, output=tmp_path / "m.json")
    gates = load_task(exported.cfg).gate_metrics(scored)
    for name, change in record.metrics.items():
        assert change.fp32 == pytest.approx(gates[name].value, rel=1e-9)
        assert change.higher_is_better is False
        relative = (change.int8 - change.fp32) / change.fp32
        assert change.relative_change == pytest.approx(relative)
        assert abs(relative) < 0.1  # INT8 is close, whatever the verdict
        assert change.within_tolerance == (change.int8 <= change.fp32 * 1.01)
    assert record.within_tolerance == all(c.within_tolerance for c in record.metrics.values())


def test_int8_outputs_follow_fp32_on_real_windows(exported: Exported) -> None:
    bundle = exported.bundle
    task = load_task(exported.cfg)
    windows = task.example_input(bundle.manifest.preprocessing, 1024)  # real mains, test house
    fp32 = OnnxModel(bundle.model_path).run(windows)
    # the INT8 file itself, whatever the verdict on its metrics (serving may refuse it)
    int8 = OnnxModel(bundle.path / INT8_MODEL_FILE).run(windows)
    assert int8.shape == fp32.shape == (1024, len(APPLIANCES))
    # the gate holds most windows at "off": make sure the comparison sees real predictions
    assert len(np.unique(fp32, axis=0)) >= 10
    assert_close_outputs(fp32, int8)


def test_cli_prints_the_verdict(exported: Exported) -> None:
    record = exported.bundle.manifest.quantization
    assert record is not None
    output = " ".join((exported.cli.stdout + exported.cli.stderr).split())
    assert "Traceback" not in output
    assert f"bundle: {exported.bundle.path}" in output
    expected = "INT8 within the 1.00% tolerance" if record.within_tolerance else "INT8 OUTSIDE"
    assert expected in output
    assert "model.int8.onnx (static_qdq, 512 calibration rows)" in output


# -- loading and serving -----------------------------------------------------------------------
def test_a_tampered_int8_model_is_refused(bundle_copy: Path) -> None:
    int8 = bundle_copy / INT8_MODEL_FILE
    data = bytearray(int8.read_bytes())
    data[len(data) // 2] ^= 0xFF
    int8.write_bytes(bytes(data))

    with pytest.raises(BundleError) as caught:
        load_bundle(bundle_copy)
    message = str(caught.value)
    assert f"{int8} failed its integrity check: sha256 is {file_sha256(int8)}" in message


def test_a_missing_int8_model_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / INT8_MODEL_FILE).unlink()

    with pytest.raises(BundleError, match=r"INT8 model file model\.int8\.onnx is missing"):
        load_bundle(bundle_copy)


def test_serving_picks_int8_only_when_asked_and_within_tolerance(bundle_copy: Path) -> None:
    def within(raw: dict[str, Any]) -> None:
        for change in raw["quantization"]["metrics"].values():
            change.update(int8=change["fp32"], relative_change=0.0, within_tolerance=True)
        raw["quantization"]["within_tolerance"] = True

    edit_manifest(bundle_copy, within)
    bundle = load_bundle(bundle_copy)

    assert serving_model_path(bundle, quantized=False) == bundle_copy / MODEL_FILE
    assert serving_model_path(bundle, quantized=True) == bundle_copy / INT8_MODEL_FILE


def test_serving_refuses_int8_outside_tolerance(bundle_copy: Path) -> None:
    def outside(raw: dict[str, Any]) -> None:
        record = raw["quantization"]
        for name, change in record["metrics"].items():
            worse = 1.043 if name == "kettle.mae_w" else 1.002
            change.update(int8=change["fp32"] * worse, relative_change=worse - 1)
            change["within_tolerance"] = worse - 1 <= 0.01
        record["within_tolerance"] = False

    edit_manifest(bundle_copy, outside)
    bundle = load_bundle(bundle_copy)

    assert serving_model_path(bundle, quantized=False) == bundle.model_path
    with pytest.raises(BundleError) as caught:
        serving_model_path(bundle, quantized=True)
    message = str(caught.value)
    assert "the INT8 model changed kettle.mae_w by +4.30%" in message
    assert "above the 1.00% tolerance; serve the fp32 model" in message
    assert bundle.manifest.quantization is not None
    said = verdict(bundle.manifest.quantization)
    assert said.startswith("INT8 OUTSIDE the 1.00% tolerance")
    assert "serves the fp32 model only" in said
    assert "worst gate metric kettle.mae_w +4.30%" in said


def test_a_hand_edited_verdict_is_not_a_valid_manifest(bundle_copy: Path) -> None:
    def contradict(raw: dict[str, Any]) -> None:
        change = raw["quantization"]["metrics"]["kettle.mae_w"]
        if change["within_tolerance"]:  # values made far worse, the verdict left saying "ok"
            change.update(int8=change["fp32"] * 2, relative_change=1.0)
        else:  # values made equal, the verdict left saying "outside"
            change.update(int8=change["fp32"], relative_change=0.0)

    edit_manifest(bundle_copy, contradict)

    with pytest.raises(BundleError, match="is not a valid manifest") as caught:
        load_bundle(bundle_copy)
    assert "metrics.kettle.mae_w.within_tolerance contradicts its values" in str(caught.value)


def test_a_bundle_without_int8_still_loads_and_says_how_to_get_one(bundle_copy: Path) -> None:
    edit_manifest(bundle_copy, lambda raw: raw.pop("quantization"))  # a pre-quantization manifest
    (bundle_copy / INT8_MODEL_FILE).unlink()
    bundle = load_bundle(bundle_copy)
    assert bundle.manifest.quantization is None

    assert serving_model_path(bundle, quantized=False) == bundle.model_path
    with pytest.raises(BundleError, match="this bundle has no INT8 model; export with --quantize"):
        serving_model_path(bundle, quantized=True)


def test_write_bundle_refuses_an_extra_file_outside_the_bundle(
    exported: Exported, tmp_path: Path
) -> None:
    fields = exported.bundle.manifest.model_dump(exclude={"sha256", "model_file"})
    parent = tmp_path / "bundles"
    with pytest.raises(ValueError, match="not a plain file name"):
        write_bundle(
            parent / "v1", exported.bundle.model_path, fields, {"../escape.onnx": Path(__file__)}
        )
    assert list(parent.iterdir()) == []


# -- what export refuses -----------------------------------------------------------------------
def test_export_refuses_an_int8_model_it_cannot_measure(exported: Exported, tmp_path: Path) -> None:
    """Without the run's prepared data there is no evaluation: no unmeasured INT8 model."""
    run_dir = Path(shutil.copytree(exported.run_dir, tmp_path / "run"))
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    saved["paths"]["prepared"] = str(tmp_path / "nowhere")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    target = tmp_path / "bundle"

    with pytest.raises(QuantizationError) as caught:
        export.run(exported.cfg, run_dir=run_dir, output=target, quantize=True)
    message = str(caught.value)
    assert "cannot measure the INT8 model: the run's evaluation data is not available" in message
    assert str(tmp_path / "nowhere") in message
    assert not target.exists()


def test_tree_ensembles_are_refused_clearly(kc_house_data: list[str], tmp_path: Path) -> None:
    """A LightGBM graph has nothing INT8 can speed up: asking for it is an error, not a no-op."""
    cfg = load_config(
        [
            *kc_house_data,
            f"paths.workdir={tmp_path}",
            "tracking=none",
            "model=lightgbm",
            "model.n_estimators=20",
            "model.early_stopping_rounds=5",
        ]
    )
    run_dir = train.run(cfg).run_dir
    target = tmp_path / "bundle"

    refused = export_command(
        *kc_house_data, f"paths.workdir={tmp_path}", "--run", str(run_dir),
        "--output", str(target), "--quantize",
    )  # fmt: skip
    assert_user_error(refused, "INT8 quantization does not apply to this model")
    assert "TreeEnsembleRegressor" in refused.stderr
    assert "export without --quantize" in refused.stderr
    assert not target.exists()
    with pytest.raises(QuantizationError, match="does not apply"):
        export.run(cfg, run_dir=run_dir, output=target, quantize=True)
    assert not target.exists()
    assert export.run(cfg, run_dir=run_dir, output=target).manifest.quantization is None


def test_dynamic_quantization_when_asked_for(exported: Exported, tmp_path: Path) -> None:
    output = tmp_path / INT8_MODEL_FILE
    model = quantize_model(exported.bundle.model_path, output, np.empty(0), "dynamic", tmp_path)
    assert (model.method, model.calibration_rows) == ("dynamic", 0)
    assert {"DynamicQuantizeLinear", "ConvInteger"} <= set(op_types(output))
    windows = load_task(exported.cfg).example_input(exported.bundle.manifest.preprocessing, 256)
    fp32 = OnnxModel(exported.bundle.model_path).run(windows)
    int8 = OnnxModel(output).run(windows)
    assert_close_outputs(fp32, int8)


# -- signing at export ------------------------------------------------------------------------
def test_export_signs_the_bundle_with_the_key_given(exported: Exported, tmp_path: Path) -> None:
    key_file = tmp_path / "bundle.key"
    key_file.write_text("5c" * 32 + "\n")
    target = tmp_path / "signed"
    overrides = ["experiment=quick", "tracking=none", f"paths.workdir={tmp_path}"]
    run = ["--run", str(exported.run_dir), "--output", str(target), "--no-quantize"]

    cli = export_command(*overrides, *run, "--sign-key-file", str(key_file))

    assert cli.returncode == 0, cli.stderr
    assert "signed)" in cli.stderr
    key = BundleKey.from_file(key_file)
    assert load_bundle(target, key, require_signature=True).trust.signature_verified
    short = tmp_path / "short.key"
    short.write_text("too short\n")
    refused = export_command(*overrides, *run, "--sign-key-file", str(short))
    assert_user_error(refused, "use at least 32 random bytes")


def test_real_models_pass_the_tensor_check(exported: Exported) -> None:
    """The start-up check against the manifest accepts what export really writes (INT8 too)."""
    bundle = exported.bundle
    verified = CliRunner().invoke(app, ["bundle", "verify", str(bundle.path)])

    assert verified.exit_code == 0, verified.stderr
    assert "OK, digest verified" in verified.stderr
    OnnxModel(bundle.path / INT8_MODEL_FILE, expected=bundle.manifest)  # raises on a mismatch


# -- settings ----------------------------------------------------------------------------------
def test_quantization_is_off_unless_asked_for_and_flags_override_the_config() -> None:
    cfg = load_config([])
    assert requested(cfg) is None
    assert requested(cfg, quantize=True) == QuantizeSettings(tolerance=0.01)
    on = load_config(["export.quantize=true", "export.quantize_tolerance=0.05"])
    assert requested(on) == QuantizeSettings(tolerance=0.05)
    assert requested(on, tolerance=0.002) == QuantizeSettings(tolerance=0.002)
    assert requested(on, quantize=False) is None


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["export.quantize_tolerance=-0.1"], r"export\.quantize_tolerance\) must be a relative"),
        (["export.quantize_method=fp16"], "export.quantize_method must be one of"),
        (["export.calibration_rows=0"], "export.calibration_rows must be at least 1"),
    ],
)
def test_bad_quantization_settings_are_config_errors(overrides: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        requested(load_config(["export.quantize=true", *overrides]))
