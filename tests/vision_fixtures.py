"""A tiny but real vision bundle for tests: an ONNX classifier of an image's mean colour."""

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from modelyard.core.bundle import Bundle, TensorSpec, write_bundle

IMAGE_SIZE = 16


def make_vision_bundle(
    target: Path, classes: tuple[str, ...] = ("Forest", "River", "Sea")
) -> Bundle:
    """A tiny real ONNX classifier (mean colour -> logits) as an ``eurosat`` vision bundle."""
    from onnx import TensorProto, helper, numpy_helper, save

    weights = np.random.default_rng(0).normal(size=(3, len(classes))).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "weights"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, None, None])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(classes)])],
        initializer=[numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx_path = target.parent / "tiny.onnx"
    save(model, str(onnx_path))
    return write_bundle(
        target,
        onnx_path,
        {
            "project": "eurosat",
            "task": "vision",
            "name": "eurosat-tiny",
            "version": "20261122-120000",
            "created_at": datetime(2026, 11, 22, 12, 0, tzinfo=UTC),
            "inputs": [
                TensorSpec(
                    name="image", dtype="float32", shape=["batch", 3, IMAGE_SIZE, IMAGE_SIZE]
                )
            ],
            "outputs": [TensorSpec(name="logits", dtype="float32", shape=["batch", len(classes)])],
            "preprocessing": {
                "classes": list(classes),
                "image_size": IMAGE_SIZE,
                "mean": [0.4, 0.4, 0.4],
                "std": [0.2, 0.2, 0.2],
            },
        },
    )
