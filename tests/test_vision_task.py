"""The vision project end to end on a small synthetic image folder (no real data needed):
prepare -> train -> evaluate -> export -> the HTTP API, including every bad upload."""

import copy
import csv
import io
import json
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig
from PIL import Image

from modelyard.core.bundle import Bundle, load_bundle
from modelyard.core.errors import ConfigError
from modelyard.core.run_dir import RunDir
from modelyard.projects.lightning_training import warmed_up_ema
from modelyard.projects.vision.image_decoding import image_pixels, normalise, to_model_input
from modelyard.projects.vision.lightning_module import (
    TEST_TIME_VIEWS,
    ImageClassifier,
    augmented_views,
)
from modelyard.projects.vision.task import few_images_warnings
from modelyard.serving.app import create_app
from modelyard.serving.runtime import OnnxModel
from modelyard.stages import train
from vision_fixtures import folder_run_config, run_to_bundle

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

CLASSES = {"Bright": 220, "Dark": 30, "Red": None}


def picture(kind: str, rng: np.random.Generator, size: int = 32) -> Image.Image:
    noise = rng.integers(-15, 16, size=(size, size, 3))
    if kind == "Red":
        base = np.broadcast_to(np.array([200, 20, 20]), (size, size, 3))
    else:
        base = np.full((size, size, 3), CLASSES[kind])
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def encoded(image: Image.Image, kind: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kind)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, Bundle]:
    source = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(source / "eurosat_rgb.zip", "w") as archive:
        for kind in CLASSES:
            count = 20 if kind == "Red" else 40  # an imbalanced class
            for i in range(count):
                archive.writestr(f"Top/{kind}/{kind}_{i}.png", encoded(picture(kind, rng)))
    cfg = folder_run_config(
        source,
        tmp_path_factory.mktemp("w"),
        32,
        16,
        "trainer.max_epochs=6",
        # The options of the real image runs: bfloat16 autocast and averaged weights.
        "trainer.precision=bf16-mixed",
        "trainer.ema_decay=0.9",
        "model.test_time_augmentation=dihedral",
    )
    run_dir, _, bundle = run_to_bundle(cfg)
    return cfg, run_dir, bundle


@pytest.fixture(scope="module")
def client(built: tuple[object, Path, Bundle]) -> TestClient:
    return TestClient(create_app(load_bundle(built[2].path), {"max_upload_bytes": 50_000}))


def test_prepare_reports_a_stratified_split_and_class_weights(
    built: tuple[object, Path, Bundle],
) -> None:
    cfg = built[0]
    summary = json.loads((Path(cfg.paths.prepared) / "prepare.json").read_text())  # type: ignore[attr-defined]
    assert summary["classes"] == ["Bright", "Dark", "Red"]
    assert summary["images"] == 100
    for part in ("train", "val", "test"):
        assert summary["per_split_and_class"][part]["Red"] >= 1  # the rare class is everywhere
    weights = summary["class_weights"]
    assert weights["Red"] > weights["Bright"] == pytest.approx(weights["Dark"])
    # 20 Red images: 3 in validation and in test, where its numbers are mostly noise
    assert summary["warnings"] == few_images_warnings(summary["per_split_and_class"])
    assert [w.split(" split")[0] for w in summary["warnings"]] == ["the val", "the test"]
    assert all("(Red: 3)" in w for w in summary["warnings"])


def test_few_images_of_a_class_in_a_split_are_named() -> None:
    counts = {"train": {"a": 40, "b": 5}, "val": {"a": 9, "b": 4}, "test": {"a": 0, "b": 9}}
    assert few_images_warnings(counts) == [
        "the val split has fewer than 5 images of some classes (b: 4): its metrics will be very "
        "uncertain; add images or change project.data.split",
        "the test split has fewer than 5 images of some classes (a: 0): its metrics will be very "
        "uncertain; add images or change project.data.split",
    ]


def test_evaluation_writes_scores_and_plots(built: tuple[object, Path, Bundle]) -> None:
    metrics = json.loads((built[1] / "evaluation" / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.9  # three trivially separable classes
    assert len(metrics["confusion_matrix"]) == 3
    assert metrics["embedding_of"] == "penultimate features"
    for plot in metrics["plots"]:
        assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("side", [32, 384])
def test_upload_is_classified_like_offline_preprocessing(
    client: TestClient, built: tuple[object, Path, Bundle], side: int
) -> None:
    """Also for a JPEG far larger than the input (384: decoded at 1/4 by both paths)."""
    bundle = built[2]
    image = picture("Dark", np.random.default_rng(5), side)
    data = encoded(image, "JPEG")
    response = client.post("/predict", files={"file": ("dark.jpg", data, "image/jpeg")})
    assert response.status_code == 200, response.text
    top = response.json()["top"]
    assert top[0]["label"] == "Dark"
    assert sum(t["probability"] for t in top) == pytest.approx(1.0, abs=1e-5)
    pre = bundle.manifest.preprocessing
    batch = normalise(image_pixels(data, 32), pre["mean"], pre["std"])[None]
    logits = OnnxModel(bundle.model_path).run(batch)[0]
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert top[0]["probability"] == pytest.approx(float(expected.max()), abs=1e-5)


def test_serving_preprocessing_matches_the_training_cache(
    built: tuple[object, Path, Bundle],
) -> None:
    """The pixels training read (prepare's cache) equal what the server computes per upload."""
    from modelyard.projects.vision.image_cache import load_part
    from modelyard.projects.vision.image_folders import index_image_folder, read_member

    cfg, _, bundle = built
    pixels, _ = load_part(Path(cfg.paths.prepared), "test")  # type: ignore[attr-defined]
    index = index_image_folder(Path(cfg.paths.raw) / "eurosat_rgb.zip")  # type: ignore[attr-defined]
    direct = np.stack([image_pixels(read_member(index, m), 32) for m in index.members])
    # every cached test image is one of the source images, pixel for pixel
    assert all((direct == p).all(axis=(1, 2, 3)).any() for p in pixels)
    pre = bundle.manifest.preprocessing
    np.testing.assert_allclose(
        normalise(pixels[:1], pre["mean"], pre["std"])[0],
        to_model_input(Image.fromarray(pixels[0]), 32, pre["mean"], pre["std"]),
        atol=1e-6,
    )


def bomb_png() -> bytes:
    image = Image.new("1", (12_000, 12_000))
    return encoded(image)


@pytest.mark.parametrize(
    ("files", "content_type", "status"),
    [
        ({"file": ("x.txt", b"hello, not an image", "text/plain")}, None, 422),
        ({"file": ("empty.png", b"", "image/png")}, None, 422),
        ({"file": ("cut.jpg", b"", "image/jpeg")}, "truncate", 422),
        ({"file": ("a.gif", b"", "image/gif")}, "gif", 422),
        ({"file": ("bomb.png", b"", "image/png")}, "bomb", 422),
        ({"file": ("big.png", b"", "image/png")}, "big", 413),
        ({"other": ("x.png", b"", "image/png")}, "png", 422),
    ],
)
def test_bad_uploads_get_a_clear_4xx(
    client: TestClient,
    files: dict[str, tuple[str, bytes, str]],
    content_type: str | None,
    status: int,
) -> None:
    rng = np.random.default_rng(1)
    name, data, mime = next(iter(files.values()))
    if content_type == "truncate":
        data = encoded(picture("Dark", rng, 64), "JPEG")[:300]
    elif content_type == "gif":
        data = encoded(picture("Dark", rng), "GIF")
    elif content_type == "bomb":
        data = bomb_png()
    elif content_type in ("big", "png"):
        size = 400 if content_type == "big" else 32
        data = encoded(Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)))
    field = next(iter(files))
    response = client.post("/predict", files={field: (name, data, mime)})
    assert response.status_code == status, response.text
    assert "detail" in response.json()


def test_non_multipart_body_is_415(client: TestClient) -> None:
    response = client.post("/predict", json={"file": "abc"})
    assert response.status_code == 415


def test_offline_predict_over_a_folder(built: tuple[object, Path, Bundle], tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(9)
    picture("Bright", rng).save(folder / "a.png")
    picture("Red", rng).save(folder / "b.jpg")
    (folder / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out.csv"
    result = subprocess.run(
        [sys.executable, "-m", "modelyard", "predict", str(built[2].path), str(folder), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = out.read_text().splitlines()
    assert rows[0].startswith("file,label_1,probability_1")
    by_file = {row.split(",")[0]: row.split(",") for row in rows[1:]}
    assert by_file["a.png"][1] == "Bright" and by_file["b.jpg"][1] == "Red"
    assert "invalid image" in by_file["broken.jpg"][-1]


def test_offline_predict_neutralises_file_and_class_names(
    built: tuple[object, Path, Bundle], tmp_path: Path
) -> None:
    from modelyard.projects.vision.serving import VisionServing
    from modelyard.serving.runtime import OnnxModel

    bundle = load_bundle(built[2].path)
    adapter = VisionServing(bundle, OnnxModel(bundle.model_path), {})
    # class names are folder names at prepare: a folder may be called "=HYPERLINK(...)"
    adapter.classes = ['=HYPERLINK("http://evil","x")', "-Dark", "@Red"]
    folder = tmp_path / "in"
    folder.mkdir()
    picture("Bright", np.random.default_rng(3)).save(folder / "=cmd.png")
    out = tmp_path / "out.csv"

    assert adapter.predict_file(folder, out) == 1

    with out.open(newline="") as handle:
        _, line = list(csv.reader(handle))
    assert line[0] == "'=cmd.png"
    labels = {line[1], line[3], line[5]}
    assert labels == {'\'=HYPERLINK("http://evil","x")', "'-Dark", "'@Red"}
    assert all(float(cell) >= 0 for cell in (line[2], line[4], line[6]))


def test_the_checkpoint_holds_the_moving_average_of_the_weights(
    built: tuple[object, Path, Bundle],
) -> None:
    checkpoint = torch.load(RunDir(built[1]).checkpoint, map_location="cpu", weights_only=False)
    averaged, last = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert averaged.keys() == last.keys()
    weights = [k for k, v in averaged.items() if v.is_floating_point() and k.endswith("weight")]
    assert weights and all(averaged[k].dtype == torch.float32 for k in weights)
    assert any(not torch.equal(averaged[k], last[k]) for k in weights)


@pytest.mark.parametrize("decay", [1.0, -0.5, 2])
def test_a_moving_average_decay_outside_zero_one_is_a_config_error(
    built: tuple[object, Path, Bundle], decay: float
) -> None:
    cfg = copy.deepcopy(built[0])
    assert isinstance(cfg, DictConfig)
    cfg.trainer.ema_decay = decay
    with pytest.raises(ConfigError, match="ema_decay"):
        train.run(cfg)


def test_the_moving_average_warms_up_then_keeps_its_decay() -> None:
    average = warmed_up_ema(0.99)
    old, new = torch.tensor([1.0]), torch.tensor([0.0])
    # After n updates the old average keeps min(decay, (1 + n) / (10 + n)) of its weight.
    assert average(old, new, 0).item() == pytest.approx(0.1)
    assert average(old, new, torch.tensor(8)).item() == pytest.approx(0.5)
    assert average(old, new, 10_000).item() == pytest.approx(0.99)


def test_dihedral_views_are_the_eight_symmetries_of_the_square() -> None:
    image = torch.arange(9, dtype=torch.float32).reshape(1, 1, 3, 3)
    views = augmented_views(image, "dihedral")
    assert len({tuple(view.flatten().tolist()) for view in views}) == 8
    assert all(sorted(view.flatten().tolist()) == list(range(9)) for view in views)
    assert [len(augmented_views(image, name)) for name in TEST_TIME_VIEWS] == [1, 2, 4, 8]


def test_test_time_augmentation_averages_views_in_eval_mode_only() -> None:
    torch.manual_seed(0)
    model = ImageClassifier(
        n_classes=3,
        backbone_options={"stages": [8, 16], "blocks_per_stage": 1},
        test_time_augmentation="dihedral",
    ).eval()
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        output = model(images)
        views = augmented_views(images, "dihedral")
        expected = torch.stack([torch.softmax(model.net(v), dim=1) for v in views]).mean(dim=0)
        assert torch.allclose(output.exp(), expected, atol=1e-6)
        # The averaged prediction does not depend on how the tile is turned.
        turned = model(torch.rot90(images, 1, dims=(2, 3)).flip(3))
        assert torch.allclose(turned, output, atol=1e-5)
        assert not torch.allclose(model.net(images), output, atol=1e-3)
        model.train()  # one view (same dropout mask with the same seed)
        torch.manual_seed(1)
        trained_view = model(images)
        torch.manual_seed(1)
        assert torch.equal(trained_view, model.net(images))
    with pytest.raises(ConfigError, match="test_time_augmentation"):
        ImageClassifier(n_classes=3, test_time_augmentation="mirror")


def test_info_reports_the_test_time_augmentation_of_the_graph(client: TestClient) -> None:
    details = client.get("/info").json()
    assert details["details"]["test_time_augmentation"] == "dihedral"
