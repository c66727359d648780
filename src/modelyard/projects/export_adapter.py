"""The serving adapter of a model being exported, before its bundle exists.

The reference profile must describe the training data exactly as the server will describe a
request, predictions included; the surest way is to ask the server's own adapter. It needs a
bundle, so one is assembled in memory from what the export has at hand (the task's tensors and
contract, the ONNX file) and never written: nothing in it is trusted or served.
"""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelyard.core.bundle import Bundle, Manifest
from modelyard.core.bundle_integrity import Trust
from modelyard.core.hashing import sha256_file
from modelyard.projects.base import Task
from modelyard.serving.adapter import ServingAdapter, build_adapter
from modelyard.serving.runtime import OnnxModel


def export_adapter(task: Task, preprocessing: dict[str, Any], onnx_model: Path) -> ServingAdapter:
    """The task family's serving adapter over ``onnx_model`` (ONNX Runtime, the bundle's
    default request limits), as ``modelyard serve`` would build it for the exported bundle."""
    inputs, outputs = task.tensor_specs(preprocessing)
    manifest = Manifest(
        project=str(task.cfg.project.name),
        task=str(task.cfg.project.task),
        name="being-exported",
        version="being-exported",
        created_at=datetime.now(UTC),
        sha256=sha256_file(onnx_model),
        inputs=inputs,
        outputs=outputs,
        preprocessing=preprocessing,
    )
    bundle = Bundle(path=onnx_model.parent, manifest=manifest, trust=Trust(state="being exported"))
    return build_adapter(bundle, OnnxModel(onnx_model, expected=manifest), None)
