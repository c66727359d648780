"""ONNX Runtime session around a bundle's model file, with deliberate thread settings."""

from pathlib import Path

import numpy as np
import onnxruntime as ort

from modelyard.core.errors import BundleError


class OnnxModel:
    """One input, one output: a float32 batch in, a float32 batch out."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        options = ort.SessionOptions()
        # 0 lets ONNX Runtime use one thread per physical core; set explicitly when several
        # server workers share a host so they do not oversubscribe the cores.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BundleError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise BundleError(f"{path}: expected one input and one output tensor")
        self.input_name: str = inputs[0].name
        self.output_name: str = outputs[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        result = self.session.run([self.output_name], {self.input_name: batch.astype(np.float32)})
        return np.asarray(result[0])
