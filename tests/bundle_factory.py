"""Build a tiny but real NILM bundle for tests: an untrained seq2point exported to ONNX.

No training is involved: the network keeps its seeded random weights, which is enough to exercise
everything between a request and ONNX Runtime (shapes, normalisation, edges, manifest checks).
"""

import json
import tempfile
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from modelyard.core.bundle import MANIFEST_FILE, Bundle, TensorSpec, write_bundle
from modelyard.core.bundle_examples import ExampleFile
from modelyard.core.bundle_integrity import BundleKey, seal
from modelyard.projects.nilm.contract import Appliance, NilmContract
from modelyard.projects.nilm.model import Seq2Point
from modelyard.projects.nilm.normalisation import Normalisation

INTERVAL_S = 60
WINDOW = 15
APPLIANCES = ("kettle", "microwave")
MAX_LENGTH = 500
AGGREGATE_LIMIT_W = 23000.0
APPLIANCE_LIMIT_W = 3500.0
VERSION = "20261122-120000"


def nilm_normalisation(appliances: Sequence[str]) -> Normalisation:
    """Plausible statistics: mains around 400 W, appliances mostly off with large spikes.

    With the default seed, these put the first appliance's raw predictions around 0 W (so the
    clipping at 0 is exercised) and the second's well above it.
    """
    count = len(appliances)
    return Normalisation(
        aggregate_mean=400.0,
        aggregate_std=650.0,
        target_mean=(150.0,) * count,
        target_std=(400.0,) * count,
    )


def nilm_contract(window: int, appliances: Sequence[str]) -> NilmContract:
    """The test bundles' contract: a 15 W on-threshold and a 3.5 kW limit for every appliance."""
    return NilmContract(
        window=window,
        interval_s=INTERVAL_S,
        appliances={
            name: Appliance(on_threshold_w=15.0, limit_w=APPLIANCE_LIMIT_W) for name in appliances
        },
        normalisation=nilm_normalisation(appliances),
        min_length=window,
        max_length=MAX_LENGTH,
        max_aggregate_w=AGGREGATE_LIMIT_W,
    )


def export_small_onnx(
    net: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str
) -> None:
    """One input, one output, a dynamic batch axis: how the test bundles' models are written."""
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated upstream but is what export.py uses too.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


def make_nilm_bundle(
    target: Path,
    window: int = WINDOW,
    appliances: Sequence[str] = APPLIANCES,
    seed: int = 0,
    examples: Sequence[ExampleFile] = (),
) -> Bundle:
    """Export a seeded, untrained seq2point to ``target`` as a complete, verified bundle (with
    ``examples`` in examples/)."""
    appliances = list(appliances)
    torch.manual_seed(seed)
    net = Seq2Point(window, len(appliances), channels=(4, 4), kernels=(3, 3), hidden=8)
    net.eval()
    example = torch.zeros((2, window), dtype=torch.float32)
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = Path(scratch) / "model.onnx"
        export_small_onnx(net, example, onnx_path, "mains", "power")
        return write_bundle(
            target,
            onnx_path,
            {
                "project": "nilm",
                "task": "nilm",
                "name": "nilm-seq2point",
                "version": VERSION,
                "created_at": datetime(2026, 11, 22, 12, 0, tzinfo=UTC),
                "inputs": [TensorSpec(name="mains", dtype="float32", shape=["batch", window])],
                "outputs": [
                    TensorSpec(name="power", dtype="float32", shape=["batch", len(appliances)])
                ],
                "preprocessing": nilm_contract(window, appliances).to_preprocessing(),
                "metrics": {"overall": {"mae_w": 12.5}},
                "git_commit": "0123456789abcdef0123456789abcdef01234567",
                "git_dirty": False,
                "data_fingerprint": "f" * 64,
                # Provenance only: serving reads the contract in ``preprocessing``.
                "config": {"project": {"name": "nilm", "task": "nilm"}},
            },
            examples=examples,
        )


def edit_sealed_manifest(
    bundle_dir: Path, edit: Callable[[dict[str, Any]], object], key: BundleKey | None = None
) -> None:
    """Edit the manifest as a person with write access would, then record a fresh (valid)
    integrity record, signed with ``key`` when given: what is left to catch the edit is every
    check after the digest."""
    path = bundle_dir / MANIFEST_FILE
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(seal(raw, key)))
