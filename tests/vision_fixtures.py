"""Vision test material without training: a tiny real ONNX classifier as a bundle, and image files
built byte by byte (sizes and bit depths that Pillow cannot write, bombs that compress to KB)."""

import io
import struct
import zlib
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from modelyard.core.bundle import Bundle, TensorSpec, write_bundle
from modelyard.projects.vision.contract import VisionLimits

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types (IHDR): how many samples each pixel has.
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
IMAGE_SIZE = 16


def make_vision_bundle(
    target: Path,
    classes: tuple[str, ...] = ("Forest", "River", "Sea"),
    image_size: int = IMAGE_SIZE,
    serving: dict[str, Any] | None = None,
    old_layout: bool = False,
    metrics: dict[str, Any] | None = None,
) -> Bundle:
    """A tiny real ONNX classifier (mean colour -> logits) as an ``eurosat`` vision bundle.

    ``serving`` is the project's ``serving:`` configuration: written into the contract's limits
    and kept in the saved configuration, as training and export write them. With ``old_layout``
    the contract has no limits, as bundles written before they were part of it. ``metrics``
    are the evaluation metrics the manifest carries (none by default).
    """
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
    limits = VisionLimits.from_serving_config(serving)
    target.parent.mkdir(parents=True, exist_ok=True)
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
                    name="image", dtype="float32", shape=["batch", 3, image_size, image_size]
                )
            ],
            "outputs": [TensorSpec(name="logits", dtype="float32", shape=["batch", len(classes)])],
            "preprocessing": {
                "classes": list(classes),
                "image_size": image_size,
                "mean": [0.4, 0.4, 0.4],
                "std": [0.2, 0.2, 0.2],
                **({} if old_layout else {"limits": limits.model_dump(mode="json")}),
            },
            "config": {"project": {"name": "eurosat", "serving": dict(serving or {})}},
            "metrics": dict(metrics or {}),
        },
    )


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


@cache
def flat_png(
    width: int, height: int, bit_depth: int = 8, colour_type: int = 2, with_pixels: bool = True
) -> bytes:
    """A PNG of one flat colour (all samples zero) at any size and bit depth.

    Pillow cannot write 16-bit RGBA, so the bytes are put together here. A flat image compresses
    about 1000:1: a 6300 x 6300 16-bit RGBA file (317 MB of samples) is about 300 KB, a 1-bit
    gigapixel one a few hundred KB. Without pixels it is only a header: decoding it would fail as
    truncated, so an error that names the size instead proves the size was checked first.
    """
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    row = bytes(1 + (width * PNG_CHANNELS[colour_type] * bit_depth + 7) // 8)  # filter 0, samples
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    palette = png_chunk(b"PLTE", bytes(3)) if colour_type == 3 else b""
    pixels = png_chunk(b"IDAT", idat) if with_pixels else b""
    return PNG_SIGNATURE + png_chunk(b"IHDR", header) + palette + pixels + png_chunk(b"IEND", b"")


def bilevel_png(width: int, height: int, with_pixels: bool = True) -> bytes:
    """An all-black 1-bit PNG: the classic decompression bomb (gigapixels in kilobytes)."""
    return flat_png(width, height, 1, 0, with_pixels)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@cache
def photo(width: int, height: int, progressive: bool = False) -> bytes:
    """A smooth JPEG photo stand-in (gradients compress like real photos, noise would not)."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1)
    return encode(
        Image.fromarray(pixels.astype(np.uint8)), "JPEG", quality=85, progressive=progressive
    )


def folder_run_config(
    source: Path, workdir: Path, image_size: int, batch_size: int, *overrides: str
) -> Any:
    """An image project on a zip the test wrote at ``source`` (``eurosat_rgb.zip``): the
    shipped eurosat project with ``experiment=quick``, untracked, every batch of every epoch,
    no progress bar; ``overrides`` (model, epochs, splits, ...) come last."""
    from modelyard.core.config import load_config

    return load_config(
        [
            "project=eurosat",
            "experiment=quick",
            "tracking=none",
            f"paths.workdir={workdir}",
            f"project.data.source={source}",
            "project.data.files=[]",
            f"project.data.image_size={image_size}",
            f"project.data.batch_size={batch_size}",
            "trainer.limit_train_batches=null",
            "trainer.limit_val_batches=null",
            "trainer.enable_progress_bar=false",
            *overrides,
        ]
    )


def run_to_bundle(cfg: Any) -> tuple[Path, dict[str, Any], Bundle]:
    """A configured image project through fetch, prepare, train, evaluate and export: the run
    directory, the evaluation's metrics and the bundle (stages imported here: they bring torch)."""
    from modelyard.stages import evaluate, export, fetch, prepare, train

    fetch.run(cfg, progress=False)
    prepare.run(cfg)
    trained = train.run(cfg)
    metrics, _ = evaluate.run(cfg, model=trained.run_dir)
    return trained.run_dir, metrics, export.run(cfg, run_dir=trained.run_dir)
