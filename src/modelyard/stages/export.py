"""Stage: export a training run to a bundle (ONNX + manifest), refusing a model that drifts.

The parity check runs the exported graph in ONNX Runtime on real input windows at two batch sizes
(proving the batch axis is really dynamic) and compares every output (the prediction, and a
vision model's embedding) with the framework model; the export fails, and writes nothing, if any
output differs by more than ``tolerance``.

With quantization asked for (``--quantize`` or ``export.quantize``), the bundle also holds an INT8
model scored against the fp32 one on the run's evaluation data (see :mod:`.quantize`); it is
written even when the INT8 model falls outside its tolerance (as evidence, never served), but not
at all when the INT8 model cannot be made or measured.

Every bundle also gets the task's reference profile (``reference_profile.json``): a bounded
sample of the training split described by the family's drift features, predicted by the exported
model, with the bundle's evaluation metrics; the monitor measures drift and realised accuracy
against it. A family without one yet exports without it, with a warning.

It also gets the task's examples (``examples/``, listed in the manifest and covered by its digest):
a few real test-split inputs a person can try at once (``GET /examples`` on the server).
"""

import json
import tempfile
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from pydantic import TypeAdapter

from modelyard.core.bundle import (
    INT8_MODEL_FILE,
    Bundle,
    ParityCheck,
    Quantization,
    new_version,
    write_bundle,
)
from modelyard.core.bundle_integrity import optional_key
from modelyard.core.config import to_plain
from modelyard.core.errors import ModelyardError
from modelyard.core.families import load_task
from modelyard.core.reference_profile import PROFILE_FILE
from modelyard.core.run_dir import RunDir
from modelyard.core.runs import mark_latest
from modelyard.projects.base import Task
from modelyard.projects.model_source import latest_run
from modelyard.projects.quantization import QuantizeSettings, quantize_and_measure, requested
from modelyard.projects.trained_model import ExportError, TrainedModel
from modelyard.serving.runtime import OnnxModel
from modelyard.tracking.base import TrackedRun
from modelyard.tracking.factory import resume_tracking

DEFAULT_TOLERANCE = 1e-4
PARITY_BATCHES = (1, 64)


def parity(model: TrainedModel, onnx_path: Path, example: np.ndarray) -> ParityCheck:
    """Largest absolute difference between the trained model and ONNX Runtime on ``example``,
    over every output of the graph."""
    runtime = OnnxModel(onnx_path)
    worst, samples = 0.0, 0
    for size in PARITY_BATCHES:
        batch = example[:size]
        produced, expected = runtime.run_outputs(batch), model.predict_outputs(batch)
        if len(produced) != len(expected):
            raise ExportError(
                f"the ONNX graph has {len(produced)} outputs, the trained model {len(expected)}"
            )
        for got, wanted in zip(produced, expected, strict=True):
            worst = max(worst, float(np.abs(got - wanted).max()))
        samples += batch.shape[0]
    return ParityCheck(max_abs_diff=worst, tolerance=0.0, samples=samples)


def _read_metrics(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        loaded = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelyardError(f"metrics file {path} is not valid JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ModelyardError(f"metrics file {path} does not hold a JSON object")
    return loaded


def run(
    cfg: DictConfig,
    run_dir: Path | None = None,
    output: Path | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    metrics: Path | None = None,
    quantize: bool | None = None,
    quantize_tolerance: float | None = None,
    sign_key_file: Path | None = None,
) -> Bundle:
    """Export ``run_dir`` (default: the latest run) to ``output`` (default: bundles/<version>).

    The manifest carries the evaluation metrics from ``metrics`` (default: the run's own
    ``evaluation/metrics.json``, when it has been evaluated). ``quantize`` and
    ``quantize_tolerance`` (default: ``cfg.export``) add the measured INT8 model; with
    ``sign_key_file`` the manifest's integrity record is signed (HMAC-SHA256).
    """
    key = optional_key(sign_key_file)  # a bad key fails before any work
    settings = requested(cfg, quantize, quantize_tolerance)
    run = (RunDir(Path(run_dir)) if run_dir is not None else latest_run(cfg)).require_trained()
    run_cfg = run.read_config()
    task = load_task(run_cfg)
    model = task.load_model(run)
    preprocessing = run.read_preprocessing()
    example = task.example_input(preprocessing, max(PARITY_BATCHES))
    inputs, outputs = task.tensor_specs(preprocessing)

    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = Path(scratch) / "model.onnx"
        model.export_onnx(onnx_path, example, inputs[0].name, [o.name for o in outputs])
        check = parity(model, onnx_path, example)
        check = ParityCheck(
            max_abs_diff=check.max_abs_diff, tolerance=tolerance, samples=check.samples
        )
        if not check.max_abs_diff <= tolerance:
            raise ExportError(
                f"ONNX export differs from the trained model by {check.max_abs_diff:.3g} "
                f"(tolerance {tolerance:g}); no bundle written"
            )
        quantization, extra_files = _quantize(task, preprocessing, onnx_path, settings)
        train = run.read_train_summary()
        evaluation = _read_metrics(run.evaluation_metrics if metrics is None else Path(metrics))
        profile_file = _reference_profile(task, run, preprocessing, onnx_path, evaluation)
        version = new_version()
        project = str(run_cfg.project.name)
        target = Path(output) if output is not None else Path(cfg.paths.bundles) / version
        bundle = write_bundle(
            target,
            onnx_path,
            {
                "project": project,
                "task": str(run_cfg.project.task),
                "name": f"{project}-{run_cfg.model.name}",
                "version": version,
                "created_at": datetime.now(UTC),
                "inputs": inputs,
                "outputs": outputs,
                "preprocessing": preprocessing,
                "metrics": evaluation,
                "parity": check,
                "git_commit": train.get("git_commit"),
                "git_dirty": train.get("git_dirty"),
                "data_fingerprint": train.get("data_fingerprint"),
                "config": to_plain(run_cfg),
                "tracking": _tracking_record(run.path),
                "quantization": quantization,
            },
            extra_files=extra_files,
            key=key,
            profile_file=profile_file,
            examples=task.examples(preprocessing),
        )
    if output is None:
        mark_latest(bundle.path)
    tracker = resume_tracking(run.path)
    if tracker.run is not None:
        tracker.log_artifact(bundle.path, "bundle")
        tracker.set_tags({"bundle_version": bundle.manifest.version})
        tracker.finish()
    return bundle


def _quantize(
    task: Task, preprocessing: dict[str, Any], onnx_path: Path, settings: QuantizeSettings | None
) -> tuple[Quantization | None, dict[str, Path]]:
    """The INT8 record and file (beside ``onnx_path``) when asked for; else nothing."""
    if settings is None:
        return None, {}
    int8_path = onnx_path.with_name(INT8_MODEL_FILE)
    record = quantize_and_measure(task, preprocessing, onnx_path, int8_path, settings)
    return record, {INT8_MODEL_FILE: int8_path}


def _reference_profile(
    task: Task, run: RunDir, preprocessing: dict[str, Any], onnx_path: Path, metrics: dict[str, Any]
) -> Path:
    """The task's reference profile, with the bundle's evaluation ``metrics``, written beside
    ``onnx_path``."""
    profile = task.reference_profile(run, preprocessing, onnx_path)
    path = onnx_path.with_name(PROFILE_FILE)
    # as the manifest stores them: plain JSON, a NaN or infinite score as null
    plain = TypeAdapter(dict[str, Any]).dump_python(metrics, mode="json")
    replace(profile, metrics=plain).write(path)
    return path


def _tracking_record(run_dir: Path) -> dict[str, str] | None:
    run = TrackedRun.read(run_dir)
    return None if run is None else asdict(run)
