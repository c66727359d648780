"""Pretrained backbones: ResNet-18/34 in torchvision's layout, weights files checked and loaded
exactly (from a path, a ``file://`` URL or a real HTTP server on 127.0.0.1, never a hub), the
freezing policies and the scaled learning rate of pretrained layers, and ImageNet normalisation
from the training run through the bundle to the served answer.

The weights files are written by the tests in torchvision's layout: a ``state_dict`` saved with
``torch.save``, without BatchNorm's ``num_batches_tracked`` counters, as the published
``resnet18-f37072fd.pth`` is.
"""

import copy
import hashlib
import http.server
import importlib.util
import io
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import DictConfig
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from modelyard.core.bundle import Bundle
from modelyard.core.errors import ConfigError, DataError
from modelyard.projects.vision.contract import VisionContract
from modelyard.projects.vision.image_decoding import image_pixels, normalise
from modelyard.projects.vision.lightning_module import ImageClassifier
from modelyard.projects.vision.model import build_backbone, frozen_modules
from modelyard.projects.vision.pretrained import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PretrainedSettings,
    load_weights,
    read_state_dict,
    resolve_weights,
)
from modelyard.projects.vision.torchvision_resnet import TorchvisionResNet
from modelyard.serving.runtime import OnnxModel
from modelyard.serving.server_process import running_server
from quiet_trainer import quiet_trainer
from vision_fixtures import folder_run_config, run_to_bundle

# --------------------------------------------------------------------------- torchvision layout


def torchvision_resnet18_keys() -> dict[str, tuple[int, ...]]:
    """torchvision's resnet18 ``state_dict`` written out from its documented architecture:
    ``conv1``/``bn1`` stem, ``layer1``..``layer4`` of two BasicBlocks (``conv1``, ``bn1``,
    ``conv2``, ``bn2``; ``downsample.0`` conv 1x1 and ``downsample.1`` BN in the first block of
    layers 2-4), ``fc`` 512 -> 1000. A BN holds weight, bias, running_mean, running_var and
    num_batches_tracked."""
    keys: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix: str, width: int) -> None:
        keys.update({f"{prefix}.{n}": (width,) for n in ("weight", "bias")})
        keys.update({f"{prefix}.{n}": (width,) for n in ("running_mean", "running_var")})
        keys[f"{prefix}.num_batches_tracked"] = ()

    bn("bn1", 64)
    widths = {1: 64, 2: 128, 3: 256, 4: 512}
    for layer, width in widths.items():
        for block in (0, 1):
            inputs = widths.get(layer - 1, 64) if block == 0 else width
            keys[f"layer{layer}.{block}.conv1.weight"] = (width, inputs, 3, 3)
            bn(f"layer{layer}.{block}.bn1", width)
            keys[f"layer{layer}.{block}.conv2.weight"] = (width, width, 3, 3)
            bn(f"layer{layer}.{block}.bn2", width)
            if block == 0 and layer > 1:
                keys[f"layer{layer}.0.downsample.0.weight"] = (width, inputs, 1, 1)
                bn(f"layer{layer}.0.downsample.1", width)
    keys["fc.weight"] = (1000, 512)
    keys["fc.bias"] = (1000,)
    return keys


def test_resnet18_has_torchvisions_state_dict_keys_and_shapes() -> None:
    expected = torchvision_resnet18_keys()
    # Spot checks against torchvision's published layout.
    assert expected["conv1.weight"] == (64, 3, 7, 7)
    assert expected["layer1.0.conv1.weight"] == (64, 64, 3, 3)
    assert expected["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert expected["layer4.1.bn2.running_var"] == (512,)
    assert expected["fc.weight"] == (1000, 512)
    # The count: a conv weight in the stem + 16 in the blocks + 3 downsample convs = 20 convs;
    # 1 + 16 + 3 = 20 BatchNorms of 5 tensors; fc weight and bias. 20 + 100 + 2 = 122 tensors,
    # 102 of them without the 20 num_batches_tracked counters: the published file's count.
    assert len(expected) == 122
    assert sum(key.endswith("num_batches_tracked") for key in expected) == 20
    network = TorchvisionResNet("resnet18", 1000)
    own = {key: tuple(value.shape) for key, value in network.state_dict().items()}
    assert own == expected
    assert list(own) == list(expected)  # the same order, too
    # torchvision's documented parameter counts (62 parameter tensors, 60 buffers).
    assert len(list(network.parameters())) == 62
    assert sum(p.numel() for p in network.parameters()) == 11_689_512
    resnet34 = TorchvisionResNet("resnet34", 1000)
    assert sum(p.numel() for p in resnet34.parameters()) == 21_797_672
    assert len(resnet34.state_dict()) == 122 + (3 + 4 + 6 + 3 - 8) * 12


def test_the_network_runs_on_small_and_large_images() -> None:
    network = build_backbone("resnet18", 3).eval()
    with torch.no_grad():
        for side in (32, 96):
            assert network(torch.randn(2, 3, side, side)).shape == (2, 3)
            assert network.embed(torch.randn(1, 3, side, side)).shape == (1, 512)  # type: ignore[operator]


def published_like(
    path: Path, variant: str = "resnet18", classes: int = 1000, seed: int = 7
) -> str:
    """A weights file as torchvision publishes them (no BN counters); its sha256."""
    torch.manual_seed(seed)
    network = TorchvisionResNet(variant, classes, channels_last=False)
    for module in network.modules():  # BN statistics other than the initial 0 / 1
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            torch.nn.init.normal_(module.weight)
    state = {k: v for k, v in network.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("weights") / "resnet18-0123abcd.pth"
    return path, published_like(path)


def test_a_published_layout_file_loads_exactly_with_a_new_head(
    weights_file: tuple[Path, str], tmp_path: Path
) -> None:
    path, sha = weights_file
    weights = resolve_weights(str(path), sha, tmp_path / "cache")
    state = read_state_dict(weights)
    assert len(state) == 102
    network = TorchvisionResNet("resnet18", 2)
    head_before = network.fc.weight.detach().clone()
    report = load_weights(network, state, str(path))
    assert report.tensors == 100 and not report.head_loaded  # 1000 classes in the file: ignored
    own = network.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], value), key
    assert torch.equal(network.fc.weight, head_before)
    # With as many classes as the file, the head loads too: the same function as the file's.
    same = TorchvisionResNet("resnet18", 1000)
    assert load_weights(same, state, str(path)).head_loaded
    reference = TorchvisionResNet("resnet18", 1000)
    reference.load_state_dict(state, strict=False)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(same.eval()(images), reference.eval()(images), atol=1e-5)


def test_a_wrong_file_is_refused_in_one_line(
    weights_file: tuple[Path, str], tmp_path: Path
) -> None:
    path, sha = weights_file
    state = read_state_dict(resolve_weights(str(path), None, tmp_path))
    refusals = {}
    resnet34 = TorchvisionResNet("resnet34", 2)
    with pytest.raises(ConfigError) as info:
        load_weights(resnet34, state, "r18.pth")
    refusals["missing"] = str(info.value)
    # resnet34's 8 more blocks: 2 convs and 2 BNs of 4 tensors (counters are optional) each
    assert "does not fit backbone resnet34: 80 missing keys (layer1.2.conv1.weight," in str(
        info.value
    )
    bad = dict(state)
    bad["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    bad["extra.weight"] = torch.zeros(1)
    with pytest.raises(ConfigError) as info:
        load_weights(TorchvisionResNet("resnet18", 2), bad, "bad.pth")
    refusals["shape"] = str(info.value)
    assert "1 unexpected key (extra.weight)" in str(info.value)
    assert "1 shape mismatch (conv1.weight: file [64, 3, 3, 3], model [64, 3, 7, 7])" in str(
        info.value
    )
    wrong_sum = "0" * 64
    with pytest.raises(
        ConfigError, match=f"checksum mismatch .*expected sha256 {wrong_sum}, got {sha}"
    ):
        resolve_weights(str(path), wrong_sum, tmp_path)
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    with pytest.raises(ConfigError, match=r"is not a PyTorch weights file \(neither") as info:
        read_state_dict(resolve_weights(str(text), None, tmp_path))
    refusals["not torch"] = str(info.value)
    pickled = tmp_path / "object.pth"
    torch.save({"conv1.weight": torch.zeros(1), "note": Path("x")}, pickled)
    with pytest.raises(ConfigError, match="holds Python objects besides tensors") as info:
        read_state_dict(resolve_weights(str(pickled), None, tmp_path))
    refusals["objects"] = str(info.value)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(ConfigError, match="holds a list, not a state_dict"):
        read_state_dict(resolve_weights(str(listed), None, tmp_path))
    with pytest.raises(ConfigError, match="no such file or run directory"):
        resolve_weights(str(tmp_path / "absent.pth"), None, tmp_path)
    assert all("\n" not in message for message in refusals.values()), refusals


@pytest.fixture
def http_folder(weights_file: tuple[Path, str]) -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on 127.0.0.1 serving the weights file's folder; the requested paths."""
    requested: list[str] = []
    folder = weights_file[0].parent

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            requested.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()


def test_a_url_is_fetched_once_into_the_cache_and_checked(
    weights_file: tuple[Path, str], http_folder: tuple[str, list[str]], tmp_path: Path
) -> None:
    path, sha = weights_file
    base, requested = http_folder
    url = f"{base}/{path.name}"
    first = resolve_weights(url, sha, tmp_path / "weights", progress=False)
    assert first.path == tmp_path / "weights" / base.split("//")[1].replace(":", "_") / path.name
    assert first.path.read_bytes() == path.read_bytes() and first.sha256 == sha
    again = resolve_weights(url, sha, tmp_path / "weights", progress=False)
    assert again.path == first.path and len(requested) == 1  # from the cache
    with pytest.raises(DataError, match="checksum mismatch") as info:
        resolve_weights(url, "f" * 64, tmp_path / "other", progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "other" / base.split("//")[1].replace(":", "_") / path.name).exists()
    with pytest.raises(DataError, match="HTTP 404"):
        resolve_weights(f"{base}/absent.pth", None, tmp_path / "other", progress=False)
    local = resolve_weights(path.as_uri(), sha, tmp_path / "weights", progress=False)
    assert local.path == tmp_path / "weights" / "local" / path.name


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"backbone": "resnet18", "freeze": "linear_probe"}, "needs model.pretrained"),
        ({"backbone": "resnet18", "pretrained": True}, "needs a timm:<model> backbone"),
        ({"backbone": "timm:resnet18", "pretrained": "w.pth"}, "must be true"),
        ({"backbone": "resnet18", "pretrained": "w.pth", "pretrained_sha256": "ab"}, "64 hex"),
        ({"backbone": "resnet18", "pretrained": "w.pth", "pretrained_lr_scale": 0}, "(0, 1]"),
        ({"backbone": "resnet18", "normalisation": "imagenet21k"}, "model.normalisation must"),
        ({"backbone": "resnet18", "normalisation": {"mean": [0.5], "std": [1]}}, "normalisation"),
    ],
)
def test_bad_pretrained_settings_are_one_line_config_errors(
    model: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("]", r"\]")):
        PretrainedSettings.from_config(model)


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed")
def test_timm_pretrained_says_timm_is_not_installed() -> None:
    with pytest.raises(ConfigError, match=r"timm is not installed.*with model\.pretrained=true"):
        build_backbone("timm:resnet18", 2, timm_pretrained=True)
    settings = PretrainedSettings.from_config({"backbone": "timm:resnet18", "pretrained": True})
    assert settings.from_timm and settings.lr_scale == 1.0


# --------------------------------------------------------------------------- freezing


def one_training_step(module: ImageClassifier) -> L.Trainer:
    images = torch.randn(4, 3, 32, 32)
    targets = torch.tensor([0, 1, 0, 1])
    loader = DataLoader(TensorDataset(images, targets), batch_size=4)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(module, loader)
    return trainer


@pytest.mark.parametrize("policy", ["all_but_last_stage", "linear_probe"])
def test_frozen_layers_do_not_change_and_pretrained_layers_learn_slower(policy: str) -> None:
    torch.manual_seed(0)
    module = ImageClassifier(
        2, backbone="resnet18", freeze=policy, pretrained_lr_scale=0.1, lr=0.01
    )
    frozen = {id(p) for m in frozen_modules(module.net, policy) for p in m.parameters()}
    before = {name: value.clone() for name, value in module.net.state_dict().items()}
    trainer = one_training_step(module)
    after = module.net.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    trains = ("layer4.", "fc.") if policy == "all_but_last_stage" else ("fc.",)
    # Parameters and BN statistics of frozen layers are untouched; the rest (incl. fc) moved.
    assert {name.split(".")[0] + "." for name in changed} == set(trains)
    assert "fc.weight" in changed and "fc.bias" in changed
    groups = trainer.optimizers[0].param_groups
    grouped = {id(p) for group in groups for p in group["params"]}
    assert not grouped & frozen  # frozen parameters are not optimised at all
    head = {id(p) for p in module.net.fc.parameters()}  # type: ignore[union-attr]
    rates = {id(p): round(group["initial_lr"], 12) for group in groups for p in group["params"]}
    assert {rates[i] for i in head} == {0.01}
    body = set(rates) - head
    assert bool(body) == (policy == "all_but_last_stage")
    assert {rates[i] for i in body} <= {0.001}
    # In training mode the frozen layers' BatchNorms stay in eval mode.
    module.train()
    assert not module.net.bn1.training and module.net.fc.training  # type: ignore[union-attr]


def test_without_freezing_every_layer_trains_at_the_scaled_rate() -> None:
    module = ImageClassifier(2, backbone="resnet18", pretrained_lr_scale=0.1, lr=0.01)
    trainer = one_training_step(module)
    groups = trainer.optimizers[0].param_groups
    assert sorted(group["initial_lr"] for group in groups) == pytest.approx(
        [0.001, 0.001, 0.01, 0.01]
    )
    assert sum(len(group["params"]) for group in groups) == 62


# --------------------------------------------------------------------------- end to end

SIZE = 32
LEVEL = {"dark": 50, "light": 200}


def picture(kind: str, seed: int) -> bytes:
    noise = np.random.default_rng(seed).integers(-25, 26, size=(SIZE, SIZE, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(LEVEL[kind] + noise, 0, 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory, weights_file: tuple[Path, str]
) -> tuple[DictConfig, Path, Bundle]:
    source = tmp_path_factory.mktemp("images")
    with zipfile.ZipFile(source / "eurosat_rgb.zip", "w") as archive:
        for kind in LEVEL:
            for i in range(12):
                archive.writestr(f"{kind}/{i}.png", picture(kind, i + 100 * len(kind)))
    path, sha = weights_file
    cfg = folder_run_config(
        source,
        tmp_path_factory.mktemp("w"),
        SIZE,
        8,
        "model=resnet18",
        f"model.pretrained={path.as_uri()}",
        f"model.pretrained_sha256={sha}",
        "model.freeze=all_but_last_stage",
        "project.data.split.val_fraction=0.25",
        "project.data.split.test_fraction=0.25",
        "trainer.max_epochs=1",
    )
    run_dir, _, bundle = run_to_bundle(cfg)
    return cfg, run_dir, bundle


def test_the_bundle_records_imagenet_normalisation_and_the_weights(
    pipeline: tuple[DictConfig, Path, Bundle], weights_file: tuple[Path, str]
) -> None:
    cfg, _, bundle = pipeline
    contract = VisionContract.from_manifest(bundle.manifest)
    assert contract.normalisation == "imagenet"
    assert contract.mean == pytest.approx(IMAGENET_MEAN) and contract.std == pytest.approx(
        IMAGENET_STD
    )
    assert contract.pretrained is not None
    assert contract.pretrained.sha256 == weights_file[1]
    assert contract.pretrained.source == weights_file[0].as_uri()
    # fetched through the cache under the modelyard home
    assert (Path(cfg.paths.weights) / "local" / weights_file[0].name).is_file()


def test_the_served_answer_equals_offline_imagenet_preprocessing(
    pipeline: tuple[DictConfig, Path, Bundle],
) -> None:
    _, _, bundle = pipeline
    data = picture("light", 4242)
    with running_server(bundle.path) as url:
        response = httpx.post(
            f"{url}/predict", files={"file": ("x.png", data, "image/png")}, timeout=30
        )
    assert response.status_code == 200, response.text
    batch = normalise(image_pixels(data, SIZE), IMAGENET_MEAN, IMAGENET_STD)[None]
    logits = OnnxModel(bundle.model_path).run(batch)[0]
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    served = {entry["label"]: entry["probability"] for entry in response.json()["top"]}
    assert served == {
        name: pytest.approx(float(p), abs=1e-5)
        for name, p in zip(("dark", "light"), probabilities, strict=True)
    }


def test_a_modelyard_run_is_a_pretrained_source_with_its_statistics(
    pipeline: tuple[DictConfig, Path, Bundle], weights_file: tuple[Path, str]
) -> None:
    _, run, _ = pipeline
    weights = resolve_weights(str(run), None, run / "unused")
    assert weights.run and weights.statistics is not None
    assert weights.statistics[0] == pytest.approx(IMAGENET_MEAN)
    network = TorchvisionResNet("resnet18", 5)  # another class count: the head is new
    report = load_weights(network, read_state_dict(weights), str(weights.path))
    assert report.tensors == 120 and not report.head_loaded  # with the BN counters this time
    with pytest.raises(ConfigError, match="is a bundle, whose ONNX graph cannot give"):
        resolve_weights(str(pipeline[2].path), None, run / "unused")
    original = torch.load(weights_file[0], weights_only=True)
    # the frozen stem kept the published weights through training
    assert torch.equal(network.conv1.weight, original["conv1.weight"])
    last_stage = network.get_submodule("layer4.0.conv1")
    assert isinstance(last_stage, torch.nn.Conv2d)
    assert not torch.equal(last_stage.weight, original["layer4.0.conv1.weight"])


def test_the_small_cnn_freezes_by_stage_and_other_networks_refuse() -> None:
    from modelyard.projects.vision.model import ResidualCNN

    network = ResidualCNN(2, stages=(4, 8, 16), blocks_per_stage=2)
    stages = network.stages()
    assert [len(stage) for stage in stages] == [1, 2, 2, 2]
    kept = frozen_modules(network, "all_but_last_stage")
    assert kept == [network.stem, *list(network.blocks)[:4]]
    assert len(frozen_modules(network, "linear_probe")) == 7
    with pytest.raises(ConfigError, match=r"model\.freeze=linear_probe needs backbone resnet18"):
        frozen_modules(torch.nn.Linear(2, 2), "linear_probe")
    with pytest.raises(ConfigError, match=r"model\.freeze must be one of none"):
        frozen_modules(network, "half")


def test_a_run_starts_a_new_model_with_its_normalisation(
    pipeline: tuple[DictConfig, Path, Bundle],
) -> None:
    """The task's own route: a run as ``model.pretrained`` for a new training run's model."""
    from modelyard.projects.vision.task import VisionTask

    cfg, run, _ = pipeline
    cfg = copy.deepcopy(cfg)
    cfg.model.pretrained = str(run)
    cfg.model.pretrained_sha256 = None
    cfg.model.freeze = "linear_probe"
    task = VisionTask(cfg)
    datamodule = task.datamodule()
    datamodule.setup("fit")
    model = task.build_model(datamodule)
    contract = task.contract(datamodule)
    assert contract.normalisation == "pretrained run"
    assert contract.mean == pytest.approx(IMAGENET_MEAN)  # what that run was trained with
    assert contract.pretrained is not None and contract.pretrained.source == str(run)
    trained = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    network = model.module.get_submodule("net")
    assert isinstance(network, TorchvisionResNet)
    assert torch.equal(network.fc.weight, trained["net.fc.weight"])  # two classes: head kept
    assert [p.requires_grad for p in network.parameters()].count(True) == 2  # fc only
