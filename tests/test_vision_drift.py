"""Image drift features: the statistics, the ONNX embedding output, its way through the
micro-batcher and a real server into the prediction log, and the reference profile."""

import asyncio
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
import torch
from omegaconf import OmegaConf
from PIL import Image, ImageFilter

from modelyard.core.config import load_config
from modelyard.core.families import drift_rows_function, load_task
from modelyard.core.reference_profile import MAX_ROWS, ReferenceProfile
from modelyard.core.run_dir import RunDir
from modelyard.projects.torch_model import TorchModel
from modelyard.projects.vision.contract import VisionContract
from modelyard.projects.vision.drift_features import (
    COLUMNS,
    EMBEDDING_COLUMNS,
    EMBEDDING_SIZE,
    image_statistics,
    log_rows,
    upload_features,
)
from modelyard.projects.vision.image_decoding import image_pixels, normalise
from modelyard.projects.vision.image_folders import index_image_folder, read_member
from modelyard.projects.vision.lightning_module import ImageClassifier
from modelyard.projects.vision.reference_sample import (
    REFERENCE_ROWS,
    decoded_upload,
    profile_rows,
    stratified_sample,
)
from modelyard.serving.batching import BatchingModel
from modelyard.serving.log_schema import predictions
from modelyard.serving.runtime import OnnxModel
from modelyard.serving.server_process import running_server
from modelyard.serving.tensor_contract import check_tensors
from modelyard.stages.export import parity
from trained_pipelines import IMAGE_ARCHIVES, Pipeline
from vision_fixtures import IMAGE_SIZE, encode, make_vision_bundle

SIZE = 32
CLASSES = ("Forest", "River", "Sea", "Town")


def textured(seed: int = 0, size: int = 96) -> Image.Image:
    """A photo-like RGB image: a colour gradient with fine noise (edges for the Laplacian)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(40, 200, size)[None, :, None] * np.array([1.0, 0.8, 0.6])
    pixels = np.clip(ramp + rng.normal(0, 25, (size, size, 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def statistics_of(image: Image.Image) -> dict[str, float]:
    """What the server computes, from the PNG bytes of ``image`` at model size ``SIZE``."""
    return image_statistics(image_pixels(encode(image, "PNG"), SIZE))


def test_darkening_lowers_brightness_and_blurring_lowers_sharpness() -> None:
    image = textured()
    base = statistics_of(image)
    assert statistics_of(image) == base  # same image, same numbers
    darker = statistics_of(Image.eval(image, lambda v: v // 2))
    assert darker["brightness"] < 0.6 * base["brightness"]
    assert darker["contrast"] < base["contrast"]
    blurred = statistics_of(image.filter(ImageFilter.GaussianBlur(3)))
    assert blurred["sharpness"] < 0.2 * base["sharpness"]
    assert blurred["brightness"] == pytest.approx(base["brightness"], rel=0.05)
    reddish = statistics_of(
        Image.merge("RGB", (image.getchannel("R"),) + (Image.new("L", image.size, 0),) * 2)
    )
    assert reddish["red_mean"] == pytest.approx(base["red_mean"], rel=0.01)
    assert reddish["green_mean"] == reddish["blue_mean"] == 0.0


def test_a_flat_image_has_no_contrast_and_no_sharpness() -> None:
    flat = statistics_of(Image.new("RGB", (50, 20), (10, 200, 30)))
    assert flat["contrast"] == 0.0 and flat["sharpness"] == 0.0
    assert (flat["red_mean"], flat["green_mean"], flat["blue_mean"]) == (10.0, 200.0, 30.0)


def test_a_logged_upload_becomes_one_row_with_the_profiles_columns() -> None:
    data = encode(textured(size=120).resize((120, 80)), "JPEG", quality=90)
    pixels = image_pixels(data, SIZE)
    inputs = {**upload_features(len(data), (120, 80), pixels), "embedding": [0.5] * EMBEDDING_SIZE}
    outputs = [{"label": "Sea", "probability": 0.9}, {"label": "River", "probability": 0.1}]
    (row,) = drift_rows_function("vision")(inputs, outputs)  # the monitor's way in
    assert list(row) == list(COLUMNS)
    assert (row["width"], row["height"]) == (120.0, 80.0)
    assert row["bytes_per_pixel"] == pytest.approx(len(data) / (120 * 80), abs=1e-4)
    assert (row["top1_label"], row["top1_probability"]) == ("Sea", 0.9)
    assert [row[name] for name in EMBEDDING_COLUMNS] == [0.5] * EMBEDDING_SIZE
    assert all(value is not None for value in row.values())


OLD_ROW = {"bytes": 900, "width": 30, "height": 30, "channel_means": [0.1, 0.0, -0.2]}


@pytest.mark.parametrize(
    ("inputs", "outputs"),
    [
        (OLD_ROW, [{"label": "Sea", "probability": 0.8}]),  # a server before drift features
        (None, None),
        ("text", "text"),
        ({"brightness": "bright", "width": True, "embedding": [1.0, 2.0]}, [{"label": 3}]),
        ({"brightness": float("nan"), "embedding": "x"}, []),
    ],
)
def test_old_or_malformed_log_rows_give_none_never_an_error(inputs: Any, outputs: Any) -> None:
    (row,) = log_rows(inputs, outputs)
    assert list(row) == list(COLUMNS)
    assert row["brightness"] is None and row["emb_0"] is None
    if inputs is OLD_ROW:
        assert (row["width"], row["bytes_per_pixel"], row["top1_label"]) == (30.0, 1.0, "Sea")
    else:
        assert row["width"] is None and row["top1_label"] is None


def test_the_sample_is_bounded_seeded_and_keeps_each_classes_share() -> None:
    labels = np.repeat(np.arange(3), [6000, 3000, 1000])
    chosen = stratified_sample(labels, 2000, seed=4)
    assert chosen.size == 2000 and np.unique(chosen).size == 2000
    assert np.bincount(labels[chosen]).tolist() == [1200, 600, 200]
    assert np.array_equal(chosen, stratified_sample(labels, 2000, seed=4))
    assert not np.array_equal(chosen, stratified_sample(labels, 2000, seed=5))
    assert stratified_sample(labels[:50], 2000, seed=4).tolist() == list(range(50))
    assert REFERENCE_ROWS <= MAX_ROWS


def _classifier(views: str = "none") -> ImageClassifier:
    """A small untrained network whose BatchNorm statistics are not the defaults."""
    torch.manual_seed(3)
    module = ImageClassifier(
        len(CLASSES),
        backbone_options={"stages": (8, 16), "blocks_per_stage": 1},
        test_time_augmentation=views,
    )
    module.train()
    with torch.no_grad():
        for _ in range(3):
            module(1.0 + 2.0 * torch.randn(8, 3, SIZE, SIZE))
    for layer in module.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            torch.nn.init.normal_(layer.weight, 1.0, 0.2)
    return module.eval()


def _vision_task() -> Any:
    return load_task(load_config(["project=eurosat", "tracking=none"]))


def _export(path: Path, module: ImageClassifier) -> tuple[Path, np.ndarray, Any]:
    """Export as the export stage does: the task's declared tensors, then the parity check."""
    preprocessing = VisionContract(
        classes=CLASSES, image_size=SIZE, mean=(0.5,) * 3, std=(0.25,) * 3
    ).to_preprocessing()
    inputs, outputs = _vision_task().tensor_specs(preprocessing)
    example = torch.randn(64, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4)).numpy()
    TorchModel(module).export_onnx(path, example, inputs[0].name, [o.name for o in outputs])
    return path, example, outputs


@pytest.mark.parametrize("views", ["none", "flips"])
def test_the_exported_model_has_the_declared_embedding_output_and_parity(
    tmp_path: Path, views: str
) -> None:
    module = _classifier(views)
    path, example, outputs = _export(tmp_path / "model.onnx", module)
    assert [(o.name, o.shape) for o in outputs][1] == ("embedding", ["batch", EMBEDDING_SIZE])
    runtime = OnnxModel(path)
    check_tensors(path, "outputs", runtime.session.get_outputs(), outputs)
    assert parity(TorchModel(module), path, example).max_abs_diff <= 1e-4  # both outputs
    logits, embedding = runtime.run_outputs(example[:5])
    assert embedding.shape == (5, EMBEDDING_SIZE)
    with torch.no_grad():  # the first output is still the model's prediction
        np.testing.assert_allclose(logits, module(torch.from_numpy(example[:5])), atol=1e-4)
    np.testing.assert_array_equal(runtime.run(example[:5]), logits)
    assert np.unique(embedding.round(4), axis=0).shape[0] == 5  # images embed differently


@pytest.fixture(scope="module")
def two_outputs(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    path, _, _ = _export(tmp_path_factory.mktemp("onnx") / "model.onnx", _classifier())
    return OnnxModel(path, threads=1)


def _images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, 3, SIZE, SIZE)).astype(np.float32)


def test_batched_requests_get_their_own_embedding_rows(two_outputs: OnnxModel) -> None:
    shared: list[int] = []
    batcher = BatchingModel(
        two_outputs, max_batch=64, max_wait_ms=50, on_batch=lambda n, _r, _s: shared.append(n)
    )
    requests = [_images(1 + k % 2, seed=k) for k in range(16)]
    alone = [two_outputs.run_outputs(r) for r in requests]
    barrier = threading.Barrier(len(requests))

    def call(index: int) -> tuple[np.ndarray, ...]:
        barrier.wait()
        return batcher.run_outputs(requests[index])

    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(call, range(len(requests))))
    batcher.close()
    assert max(shared) > 1  # requests did share calls
    for answer, reference in zip(answers, alone, strict=True):
        assert len(answer) == 2
        for got, expected in zip(answer, reference, strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(answers[0][1][0], answers[1][1][0])  # different images, embeddings


def test_the_event_loop_way_in_returns_every_output(two_outputs: OnnxModel) -> None:
    batcher = BatchingModel(two_outputs, max_batch=8, max_wait_ms=0)
    images = _images(11, seed=9)  # over max_batch: two calls, joined output by output

    async def both() -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        return await batcher.run_outputs_async(images), await batcher.run_async(images)

    # a thread of its own: its event loop is the only one there, whatever the test session runs
    # in the main thread (Playwright's sync API keeps a loop running there once a browser test ran)
    try:
        with ThreadPoolExecutor(max_workers=1) as thread:
            (logits, embedding), first = thread.submit(asyncio.run, both()).result()
    finally:
        batcher.close()
    expected = two_outputs.run_outputs(images)
    np.testing.assert_allclose(logits, expected[0], atol=1e-5)
    np.testing.assert_allclose(embedding, expected[1], atol=1e-5)
    np.testing.assert_allclose(first, expected[0], atol=1e-5)


def logged_rows(url: str) -> list[tuple[Any, Any]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            query = sa.select(predictions.c.inputs, predictions.c.outputs)
            return [(r.inputs, r.outputs) for r in connection.execute(query)]
    finally:
        engine.dispose()


def test_a_bundle_exported_with_one_output_still_serves_and_logs(tmp_path: Path) -> None:
    home = {"MODELYARD_HOME": str(tmp_path / "home")}
    bundle = make_vision_bundle(tmp_path / "bundle")
    assert len(bundle.manifest.outputs) == 1
    url = f"sqlite:///{tmp_path}/predictions.db"
    data = encode(textured(size=40), "PNG")
    with running_server(bundle.path, extra_args=["--prediction-log", url], env=home) as base:
        response = httpx.post(f"{base}/predict", files={"file": ("a.png", data)}, timeout=30)
    assert response.status_code == 200, response.text
    ((inputs, outputs),) = logged_rows(url)
    (row,) = log_rows(inputs, outputs)
    assert list(row) == list(COLUMNS)
    assert row["brightness"] == image_statistics(image_pixels(data, IMAGE_SIZE))["brightness"]
    assert row["top1_label"] == response.json()["top"][0]["label"]
    assert all(row[name] is None for name in EMBEDDING_COLUMNS)  # no embedding output


@pytest.mark.slow
@pytest.mark.integration
def test_a_real_server_logs_what_the_reference_profile_holds(
    image_pipeline: Callable[[str], Pipeline], tmp_path: Path
) -> None:
    pipeline = image_pipeline("plants")
    bundle = pipeline.bundle
    assert [(o.name, o.shape) for o in bundle.manifest.outputs][1] == (
        "embedding",
        ["batch", EMBEDDING_SIZE],
    )
    assert bundle.manifest.parity is not None and bundle.manifest.parity.max_abs_diff <= 1e-4
    contract = VisionContract.parse(bundle.manifest.preprocessing)
    task = load_task(pipeline.cfg)
    run = RunDir(pipeline.trained.run_dir)
    profile = task.reference_profile(run, bundle.manifest.preprocessing, bundle.model_path)
    profile = ReferenceProfile.from_json(json.loads(json.dumps(profile.to_json())))
    train = sum(pipeline.prepared["per_split_and_class"]["train"].values())
    assert profile.rows == min(train, REFERENCE_ROWS) and "stratified by class" in profile.drawn
    assert set(profile.data["width"]) == {256.0}  # PlantVillage's images, as sent
    assert set(profile.data["top1_label"]) <= set(contract.classes)
    assert profile.metrics["accuracy"] == pipeline.metrics["accuracy"]
    # without the raw images: the same sample from the prepared cache, no upload size facts
    absent = OmegaConf.merge(pipeline.cfg, {"paths": {"raw": str(tmp_path / "absent")}})
    cached = load_task(absent).reference_profile(
        run, bundle.manifest.preprocessing, bundle.model_path
    )
    assert "prepared pixel cache" in cached.drawn and set(cached.data["width"]) == {None}
    for name in ("brightness", "sharpness", "top1_label", "emb_3"):
        assert cached.data[name] == profile.data[name]

    index = index_image_folder(Path(pipeline.cfg.paths.raw) / IMAGE_ARCHIVES["plants"][0])
    data = read_member(index, index.members[0])
    url = f"sqlite:///{tmp_path}/predictions.db"
    with running_server(bundle.path, extra_args=["--prediction-log", url]) as base:
        response = httpx.post(f"{base}/predict", files={"file": ("leaf.jpg", data)}, timeout=30)
    assert response.status_code == 200, response.text
    ((inputs, outputs),) = logged_rows(url)
    (row,) = log_rows(inputs, outputs)
    assert set(row) == set(profile.columns)
    assert all(value is not None for value in row.values())
    # the reference's own path for the same image gives the same row
    (expected,) = profile_rows(
        [partial(decoded_upload, data, contract)], contract, bundle.model_path
    )
    for name, value in expected.items():
        assert row[name] == (value if isinstance(value, str) else pytest.approx(value, abs=1e-3))
    _, embedding = OnnxModel(bundle.model_path).run_outputs(_normalised(data, contract))
    assert [row[name] for name in EMBEDDING_COLUMNS] == pytest.approx(embedding[0], abs=1e-3)


def _normalised(data: bytes, contract: VisionContract) -> np.ndarray:
    return normalise(image_pixels(data, contract.image_size), contract.mean, contract.std)[None]
