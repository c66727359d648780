"""INT8 quantization at export: an INT8 copy of the exported model, measured before it is served.

``modelyard export --quantize`` calls :func:`quantize_and_measure` with the freshly exported fp32
ONNX model. It

1. refuses a model INT8 cannot help: quantization here targets Conv, Gemm and MatMul, so a graph
   without any (a LightGBM tree ensemble) is an error, never a silently unquantized "INT8" file;
2. scores the fp32 model on the run's evaluation data (the same data and code path as
   ``modelyard evaluate`` on a bundle), failing before any work when that data is missing;
3. quantizes with ONNX Runtime: static QDQ (per-channel INT8 weights, INT8 activations whose
   ranges are calibrated on real inputs from ``task.example_input``) of Conv/Gemm/MatMul only, so
   that cheap element-wise tails (gates, clipping, softplus) keep float precision. ``method=auto``
   falls back to dynamic quantization (weights INT8, activations quantized at run time) only when
   static quantization fails, and says so in the record;
4. scores the INT8 model on the same data, compares every gate metric of the task with the fp32
   value (worse by at most ``tolerance`` x |fp32|, the rule of the promotion gate), and times both
   models single-threaded on the calibration batch.

The result is the manifest's :class:`~modelyard.core.bundle.Quantization` record; serving picks
the INT8 file only when ``within_tolerance`` (see :func:`modelyard.core.bundle.serving_model_path`).
ONNX Runtime's quantization tools (and onnx) are imported lazily: nothing here runs at serve time.
"""

import logging
import math
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from modelyard.core.bundle import (
    INT8_MODEL_FILE,
    MetricChange,
    Quantization,
    SizeBytes,
    SpeedCheck,
)
from modelyard.core.errors import ConfigError, DataError, ModelyardError
from modelyard.core.hashing import sha256_file
from modelyard.projects.base import GateMetric, Task
from modelyard.projects.trained_model import PredictorModel
from modelyard.serving.runtime import OnnxModel

DEFAULT_TOLERANCE = 0.01
DEFAULT_CALIBRATION_ROWS = 512
METHODS = ("auto", "static", "dynamic")
#: Operators worth INT8: they hold the weights and nearly all the arithmetic.
STATIC_OPS = ("Conv", "Gemm", "MatMul")
#: ONNX Runtime's dynamic quantizer has integer kernels for these (Gemm is not among them).
DYNAMIC_OPS = ("Conv", "MatMul")
#: Operators that only exist in a graph that really was quantized.
INT8_MARKERS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "QLinearConv",
    "QLinearMatMul",
}
CALIBRATION_BATCH = 64
SPEED_THREADS = 1
SPEED_MIN_RUNS = 3
SPEED_MAX_RUNS = 20
SPEED_BUDGET_S = 0.5


class QuantizationError(ModelyardError):
    """An INT8 model was asked for but cannot be made or measured; no bundle is written."""


@dataclass(frozen=True)
class QuantizeSettings:
    """What ``--quantize`` asks for (config section ``export``, CLI flags override)."""

    tolerance: float = DEFAULT_TOLERANCE
    method: str = "auto"
    calibration_rows: int = DEFAULT_CALIBRATION_ROWS

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ConfigError(
                "the INT8 tolerance (--quantize-tolerance, export.quantize_tolerance) must be a "
                f"relative tolerance >= 0 (0.01 = 1 %), not {self.tolerance}"
            )
        if self.method not in METHODS:
            raise ConfigError(
                f"export.quantize_method must be one of {', '.join(METHODS)}, not {self.method!r}"
            )
        if self.calibration_rows < 1:
            raise ConfigError(
                f"export.calibration_rows must be at least 1, not {self.calibration_rows}"
            )


@dataclass(frozen=True)
class Int8Model:
    """A quantized ONNX file and how it was made."""

    path: Path
    method: str  # "static_qdq" | "dynamic"
    calibration_rows: int
    note: str | None


def requested(
    cfg: DictConfig, quantize: bool | None = None, tolerance: float | None = None
) -> QuantizeSettings | None:
    """The quantization asked for by ``cfg.export`` and the CLI flags; None when not asked for."""
    if quantize is None:
        quantize = bool(OmegaConf.select(cfg, "export.quantize", default=False))
    if not quantize:
        return None
    if tolerance is None:
        tolerance = float(
            OmegaConf.select(cfg, "export.quantize_tolerance", default=DEFAULT_TOLERANCE)
        )
    return QuantizeSettings(
        tolerance=tolerance,
        method=str(OmegaConf.select(cfg, "export.quantize_method", default="auto")),
        calibration_rows=int(
            OmegaConf.select(cfg, "export.calibration_rows", default=DEFAULT_CALIBRATION_ROWS)
        ),
    )


def quantize_and_measure(
    task: Task,
    preprocessing: dict[str, Any],
    fp32_path: Path,
    output: Path,
    settings: QuantizeSettings,
) -> Quantization:
    """Write the INT8 model of ``fp32_path`` to ``output`` and return its manifest record."""
    present = op_types(fp32_path)
    check_applicable(present)
    with tempfile.TemporaryDirectory(prefix="modelyard-quantize-") as scratch_dir:
        scratch = Path(scratch_dir)
        fp32_scores = gate_scores(task, preprocessing, fp32_path, scratch / "fp32")
        calibration = task.example_input(preprocessing, settings.calibration_rows)
        int8 = quantize_model(fp32_path, output, calibration, settings.method, scratch)
        int8_scores = gate_scores(task, preprocessing, int8.path, scratch / "int8")
    metrics = compare(fp32_scores, int8_scores, settings.tolerance)
    allowed = STATIC_OPS if int8.method == "static_qdq" else DYNAMIC_OPS
    return Quantization(
        model_file=INT8_MODEL_FILE,
        sha256=sha256_file(output),
        method=int8.method,
        calibration_rows=int8.calibration_rows,
        quantized_ops=[op for op in allowed if op in present],
        tolerance=settings.tolerance,
        metrics=metrics,
        within_tolerance=all(change.within_tolerance for change in metrics.values()),
        size_bytes=SizeBytes(fp32=fp32_path.stat().st_size, int8=output.stat().st_size),
        speed=measure_speed(fp32_path, output, calibration),
        note=int8.note,
    )


# -- what can be quantized ---------------------------------------------------------------------
def op_types(path: Path) -> dict[str, int]:
    """How many nodes of each operator type the main graph of an ONNX file holds."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def check_applicable(present: dict[str, int]) -> None:
    """Refuse a graph with nothing INT8 can speed up (e.g. a LightGBM tree ensemble)."""
    if any(op in present for op in STATIC_OPS):
        return
    common = ", ".join(sorted(present, key=lambda op: -present[op])[:3]) or "no nodes"
    raise QuantizationError(
        f"INT8 quantization does not apply to this model: its ONNX graph has no "
        f"{'/'.join(STATIC_OPS)} node to quantize (it is made of {common}; tree ensembles such "
        "as LightGBM are already compact and have no INT8 kernels); export without --quantize "
        "(export.quantize=false)"
    )


# -- quantizing --------------------------------------------------------------------------------
def quantize_model(
    fp32_path: Path, output: Path, calibration: np.ndarray, method: str, scratch: Path
) -> Int8Model:
    """Quantize with ONNX Runtime: static QDQ, or dynamic (asked for, or when static fails)."""
    prepared, note = pre_process(fp32_path, scratch / "pre_processed.onnx")
    if method in ("auto", "static"):
        try:
            with _quiet():
                quantize_static_qdq(prepared, output, calibration)
            _check_quantized(output)
            return Int8Model(output, "static_qdq", int(calibration.shape[0]), note)
        except Exception as exc:  # ONNX Runtime raises assorted, untyped errors
            if method == "static":
                raise QuantizationError(
                    f"static INT8 quantization failed: {type(exc).__name__}: {exc}"
                ) from exc
            fallback = f"static QDQ quantization failed ({type(exc).__name__}: {exc}); dynamic used"
            note = fallback if note is None else f"{note}; {fallback}"
    try:
        with _quiet():
            quantize_dynamic_int8(prepared, output)
        _check_quantized(output)
    except QuantizationError:
        raise
    except Exception as exc:  # ONNX Runtime raises assorted, untyped errors
        raise QuantizationError(
            f"dynamic INT8 quantization failed: {type(exc).__name__}: {exc}"
        ) from exc
    return Int8Model(output, "dynamic", 0, note)


def pre_process(fp32_path: Path, output: Path) -> tuple[Path, str | None]:
    """ONNX Runtime's recommended pre-processing (shape inference, graph optimisation).

    It is an aid, not a requirement: when it fails, quantization works on the model as exported
    and the record's note says so.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with _quiet():
            quant_pre_process(str(fp32_path), str(output))
    except Exception as exc:  # symbolic shape inference fails on some custom graphs
        return fp32_path, f"pre-processing skipped ({type(exc).__name__}: {exc})"
    return output, None


def quantize_static_qdq(model: Path, output: Path, calibration: np.ndarray) -> None:
    """Static QDQ: INT8 per-channel weights, INT8 activations with min/max calibrated ranges."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(
        str(model),
        str(output),
        _CalibrationReader(calibration, _input_name(model)),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(STATIC_OPS),
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )


def quantize_dynamic_int8(model: Path, output: Path) -> None:
    """Dynamic: INT8 weights, activations quantized per batch at run time (no calibration)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(model), str(output), op_types_to_quantize=list(DYNAMIC_OPS), weight_type=QuantType.QInt8
    )


def _check_quantized(path: Path) -> None:
    if not INT8_MARKERS & set(op_types(path)):
        raise QuantizationError(f"quantization left {path.name} without any INT8 operator")


def _input_name(path: Path) -> str:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {tensor.name for tensor in graph.initializer}
    inputs = [value.name for value in graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise QuantizationError(f"{path.name}: expected one input tensor, found {inputs}")
    return str(inputs[0])


class _CalibrationReader:
    """Feeds the calibration rows to ONNX Runtime's calibrator in small batches.

    Implements ``onnxruntime.quantization.CalibrationDataReader``'s protocol (``get_next``)
    without importing it at module level.
    """

    def __init__(self, rows: np.ndarray, input_name: str) -> None:
        batches = [rows[i : i + CALIBRATION_BATCH] for i in range(0, len(rows), CALIBRATION_BATCH)]
        self._batches = iter([{input_name: b.astype(np.float32)} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


@contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantizer logs advice at INFO/WARNING for every run; keep errors only."""
    previous = logging.root.level
    logging.root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logging.root.setLevel(previous)


# -- measuring ---------------------------------------------------------------------------------
def gate_scores(
    task: Task, preprocessing: dict[str, Any], model: Path, output_dir: Path
) -> dict[str, GateMetric]:
    """The task's gate metrics of an ONNX model on the run's evaluation data.

    The same predictor (ONNX Runtime) and the same ``task.evaluate`` as ``modelyard evaluate``
    on a bundle; plots go to ``output_dir``.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        metrics = task.evaluate(
            PredictorModel(OnnxModel(model).run), preprocessing, None, output_dir
        )
    except (DataError, FileNotFoundError) as exc:
        raise QuantizationError(
            f"cannot measure the INT8 model: the run's evaluation data is not available ({exc}); "
            "an unmeasured INT8 model is never written: prepare the data or export without "
            "--quantize"
        ) from exc
    scores = task.gate_metrics(metrics)
    if not scores:
        raise QuantizationError("the evaluation produced no gate metric to compare INT8 with")
    bad = [name for name, score in scores.items() if not math.isfinite(score.value)]
    if bad:
        raise QuantizationError(f"{model.name} scored a non-finite {', '.join(bad)}")
    return scores


def compare(
    fp32: dict[str, GateMetric], int8: dict[str, GateMetric], tolerance: float
) -> dict[str, MetricChange]:
    """Per gate metric: both values, the relative change and whether INT8 stays within."""
    if set(fp32) != set(int8):
        raise QuantizationError(
            f"the fp32 and INT8 evaluations report different metrics: {sorted(fp32)} vs "
            f"{sorted(int8)}"
        )
    return {
        name: MetricChange.between(
            fp32[name].value, int8[name].value, fp32[name].higher_is_better, tolerance
        )
        for name in sorted(fp32)
    }


def measure_speed(fp32_path: Path, int8_path: Path, batch: np.ndarray) -> SpeedCheck:
    """Median single-thread latency of one ``batch`` through each model, in this process."""
    fp32_ms = _median_ms(OnnxModel(fp32_path, threads=SPEED_THREADS), batch)
    int8_ms = _median_ms(OnnxModel(int8_path, threads=SPEED_THREADS), batch)
    return SpeedCheck(
        batch=int(batch.shape[0]),
        threads=SPEED_THREADS,
        fp32_ms=round(fp32_ms, 4),
        int8_ms=round(int8_ms, 4),
        speedup=round(fp32_ms / int8_ms, 3) if int8_ms > 0 else 0.0,
    )


def _median_ms(model: OnnxModel, batch: np.ndarray) -> float:
    model.run(batch)  # warm-up: the first run allocates
    timings: list[float] = []
    started = time.perf_counter()
    while len(timings) < SPEED_MIN_RUNS or (
        len(timings) < SPEED_MAX_RUNS and time.perf_counter() - started < SPEED_BUDGET_S
    ):
        tick = time.perf_counter()
        model.run(batch)
        timings.append((time.perf_counter() - tick) * 1000)
    return statistics.median(timings)


# -- reporting ---------------------------------------------------------------------------------
def verdict(record: Quantization) -> str:
    """One paragraph for the CLI: servable or not, the worst metric, size and speed."""
    name, worst = record.worst()
    change = "n/a" if worst.relative_change is None else f"{worst.relative_change:+.2%}"
    which = "worst gate metric" if worst.worsening() > 0 else "no gate metric worse; least gain"
    size = record.size_bytes
    facts = (
        f"{record.model_file} ({record.method}, {record.calibration_rows} calibration rows): "
        f"{size.int8 / 1e6:.2f} MB vs {size.fp32 / 1e6:.2f} MB fp32, "
        f"{record.speed.speedup:.2f}x the fp32 speed single-threaded; "
        f"{which} {name} {change} ({worst.fp32:.6g} -> {worst.int8:.6g})"
    )
    if record.within_tolerance:
        return (
            f"INT8 within the {record.tolerance:.2%} tolerance on all {len(record.metrics)} "
            f"gate metric(s), servable: {facts}"
        )
    return (
        f"INT8 OUTSIDE the {record.tolerance:.2%} tolerance: the bundle keeps it as evidence but "
        f"serves the fp32 model only: {facts}"
    )
