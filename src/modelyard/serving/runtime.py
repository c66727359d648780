"""ONNX Runtime session around a bundle's model file, with deliberate thread settings.

Threads: one ONNX Runtime intra-op thread per core the worker may use (the cores divided among the
workers; the cores are the CPU affinity capped by a container's CPU quota, :mod:`.cpu_quota`),
one inter-op thread (these models are a single chain of operators), and no spinning:
an idle intra-op thread that spins waiting for work burns a core the event loop and the other
workers need.

Opened for serving (:func:`open_served_model`), a model is checked against its manifest's tensors
(:mod:`.tensor_contract`) after the operator's signature policy has been applied to the bundle.
"""

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from modelyard.core.bundle import Bundle, Manifest, serving_model_path
from modelyard.core.bundle_integrity import optional_key
from modelyard.core.errors import BundleError
from modelyard.serving.cpu_quota import CpuBudget, cpu_budget
from modelyard.serving.settings import ServerSettings
from modelyard.serving.tensor_contract import check_tensors


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota; at least 1."""
    return cpu_budget().cores


@dataclass(frozen=True)
class ThreadSizing:
    """A worker's ONNX Runtime intra-op threads and why that many (logged at start, in
    ``/ready``). ``source``: ``option`` (``--threads``), ``cgroup`` (a CPU quota smaller than
    the affinity) or ``affinity``."""

    threads: int
    source: str
    detail: str


def thread_sizing(
    requested: int, workers: int = 1, budget: CpuBudget | None = None
) -> ThreadSizing:
    """``requested`` threads when set, else the cores (``budget``, default this process's)
    shared fairly among ``workers``, at least 1."""
    if requested > 0:
        return ThreadSizing(requested, "option", f"{requested} (--threads)")
    budget = budget or cpu_budget()
    workers = max(1, workers)
    threads = max(1, budget.cores // workers)
    share = f" / {workers} workers" if workers > 1 else ""
    source = "cgroup" if budget.limited_by_quota else "affinity"
    return ThreadSizing(threads, source, f"{threads} = {budget.describe()}{share}")


def intra_op_threads(requested: int, workers: int = 1) -> int:
    """``requested`` when set, else the cores shared fairly among ``workers`` (at least 1)."""
    return thread_sizing(requested, workers).threads


class OnnxModel:
    """One input, one or more outputs: a float32 batch in, float32 batches out.

    The first output is the prediction (:meth:`run`); a model may have more, e.g. a vision
    model's compact embedding, which :meth:`run_outputs` returns from the same call, row for
    row. With ``expected`` (the bundle's manifest), the model's tensors must be the declared ones.
    """

    def __init__(
        self,
        path: Path,
        threads: int = 0,
        spinning: bool = False,
        expected: Manifest | None = None,
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads(threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        spin = "1" if spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BundleError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if expected is not None:
            check_tensors(path, "inputs", inputs, expected.inputs)
            check_tensors(path, "outputs", outputs, expected.outputs)
        if len(inputs) != 1 or not outputs:
            raise BundleError(f"{path}: expected one input and at least one output tensor")
        self.input_name: str = inputs[0].name
        self.output_names: tuple[str, ...] = tuple(output.name for output in outputs)
        self.output_name: str = self.output_names[0]
        self.threads = options.intra_op_num_threads

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The first output (the prediction) of ``batch``."""
        result = self.session.run([self.output_name], {self.input_name: batch.astype(np.float32)})
        return np.asarray(result[0])

    def run_outputs(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        """Every output of ``batch``, in the model's order, from one ONNX Runtime call (for a
        one-output model the very call :meth:`run` makes)."""
        feed = {self.input_name: batch.astype(np.float32)}
        return tuple(np.asarray(r) for r in self.session.run(list(self.output_names), feed))

    async def run_async(self, batch: np.ndarray) -> np.ndarray:
        """``run`` on a worker thread, so the event loop keeps serving meanwhile."""
        return await asyncio.to_thread(self.run, batch)

    async def run_outputs_async(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        """``run_outputs`` on a worker thread."""
        return await asyncio.to_thread(self.run_outputs, batch)

    def close(self) -> None:
        """Free the session's memory now (a model replaced by ``serve --follow``): FastAPI keeps
        recent route endpoints, and so this object, in a cache long after the model is gone."""
        del self.session


def open_served_model(bundle: Bundle, settings: ServerSettings, threads: int = 0) -> OnnxModel:
    """The model a server runs: the bundle passes the operator's signature policy
    (``bundle_key_file``, ``require_signature``), then the model file to serve is opened and
    checked against the manifest's tensors."""
    bundle.check_signature(optional_key(settings.bundle_key_file), settings.require_signature)
    path = serving_model_path(bundle, settings.quantized)
    return OnnxModel(path, threads=threads, expected=bundle.manifest)
