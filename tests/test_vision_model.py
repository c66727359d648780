"""Vision backbones and their Lightning wrapper, on real (small, seeded, CPU) torch."""

import importlib.util
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from modelyard.core.errors import ConfigError
from modelyard.core.seeding import seed_everything
from modelyard.projects.torch_model import TorchModel
from modelyard.projects.vision.lightning_module import ImageClassifier, WarmupCosine
from modelyard.projects.vision.model import BasicBlock, ResidualCNN, build_backbone
from modelyard.serving.runtime import OnnxModel
from quiet_trainer import quiet_trainer

TINY = {"stages": (4, 8), "blocks_per_stage": 1}


# --------------------------------------------------------------------------- network shapes


@pytest.fixture(scope="module")
def default_network() -> ResidualCNN:
    return ResidualCNN(10).eval()


@pytest.mark.parametrize(("size", "batch"), [(64, 1), (64, 2), (128, 1)])
def test_default_network_shapes(default_network: ResidualCNN, size: int, batch: int) -> None:
    images = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        logits = default_network(images)
        features = default_network.embed(images)
    assert logits.shape == (batch, 10)
    assert features.shape == (batch, 256)
    assert torch.isfinite(logits).all()


def test_default_network_is_small(default_network: ResidualCNN) -> None:
    # ResNet-18 layout at half width: 2,797,610 parameters with 10 classes.
    count = sum(p.numel() for p in default_network.parameters())
    assert count < 3_000_000
    assert count == 2_797_610


@pytest.mark.parametrize(
    ("stages", "blocks", "stem_stride", "size"),
    [
        ((8,), 1, 1, 16),
        ((8, 16, 24), 2, 1, 64),
        ((6, 12), 3, 2, 16),
        ((4, 8, 16, 32, 64), 1, 2, 128),
    ],
)
def test_stage_configurations(
    stages: tuple[int, ...], blocks: int, stem_stride: int, size: int
) -> None:
    model = ResidualCNN(3, stages=stages, blocks_per_stage=blocks, stem_stride=stem_stride).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 3)
        assert model.embed(torch.randn(2, 3, size, size)).shape == (2, stages[-1])
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == len(stages) * blocks


def test_feature_map_shrinks_by_stem_stride_times_two_per_later_stage() -> None:
    # stem stride 2 and 3 stages: 64 / (2 * 2 * 2) = 8
    model = ResidualCNN(2, stages=(4, 8, 16), blocks_per_stage=2, stem_stride=2).eval()
    with torch.no_grad():
        features = model.blocks(model.stem(torch.randn(1, 3, 64, 64)))
    assert features.shape == (1, 16, 8, 8)


def test_stride_two_block_halves_the_map_and_projects_the_shortcut() -> None:
    block = BasicBlock(4, 8, stride=2).eval()
    assert isinstance(block.shortcut, torch.nn.Sequential)
    conv = block.shortcut[0]
    assert isinstance(conv, torch.nn.Conv2d)
    assert conv.kernel_size == (1, 1)
    assert conv.stride == (2, 2)
    with torch.no_grad():
        assert block(torch.randn(2, 4, 16, 16)).shape == (2, 8, 8, 8)
        # odd sizes round up, like a padded 3x3 conv: 15 -> 8
        assert block(torch.randn(1, 4, 15, 15)).shape == (1, 8, 8, 8)


def test_identity_shortcut_adds_the_input() -> None:
    block = BasicBlock(4, 4, stride=1).eval()
    assert isinstance(block.shortcut, torch.nn.Identity)
    # With the residual branch's last BN scaled to 0 the block is relu(0 + x) = relu(x).
    torch.nn.init.zeros_(block.bn2.weight)
    torch.nn.init.zeros_(block.bn2.bias)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.relu(x))


def test_freshly_initialised_blocks_are_identities() -> None:
    # zero-initialised last BN: each residual branch starts at 0
    model = ResidualCNN(2, stages=(4,), blocks_per_stage=2).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        stem = model.stem(x)
        torch.testing.assert_close(model.blocks(stem), stem)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stages": ()}, r"model\.stages must be non-empty"),
        ({"stages": (8, 0)}, r"model\.stages must be non-empty positive widths, got \[8, 0\]"),
        ({"blocks_per_stage": 0}, r"blocks_per_stage must be >= 1, got 0"),
        ({"stem_stride": 4}, r"stem_stride must be 1 or 2, got 4"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1\.0"),
    ],
)
def test_invalid_architecture_is_a_config_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ResidualCNN(3, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- build_backbone


def test_build_backbone_passes_options_to_the_small_resnet() -> None:
    model = build_backbone("resnet_small", 4, stages=(4, 8), blocks_per_stage=1, dropout=0.0)
    assert isinstance(model, ResidualCNN)
    assert model.classifier.out_features == 4
    assert model.width == 8


def test_unknown_backbone_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown backbone 'resnet50'.*resnet_small.*timm:"):
        build_backbone("resnet50", 10)


def test_unknown_option_for_the_small_resnet_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"backbone resnet_small: .*'depth'"):
        build_backbone("resnet_small", 10, depth=18)


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed")
def test_timm_backbone_without_timm_says_how_to_install_it() -> None:
    with pytest.raises(ConfigError, match=r"timm is not installed; pip install timm") as info:
        build_backbone("timm:resnet18", 10)
    assert "timm:resnet18" in str(info.value)


# --------------------------------------------------------------------------- lightning module


def test_module_rejects_inconsistent_class_metadata() -> None:
    with pytest.raises(ConfigError, match=r"2 class names given for 3 classes"):
        ImageClassifier(3, class_names=["a", "b"], backbone_options=TINY)
    with pytest.raises(ConfigError, match=r"2 class weights given for 3 classes"):
        ImageClassifier(3, class_weights=[1.0, 2.0], backbone_options=TINY)
    with pytest.raises(ConfigError, match=r"class weights must be positive"):
        ImageClassifier(2, class_weights=[1.0, 0.0], backbone_options=TINY)


def test_class_weights_change_the_loss() -> None:
    seed_everything(0)
    unweighted = ImageClassifier(3, backbone_options=TINY).eval()
    seed_everything(0)  # the same initial weights
    weighted = ImageClassifier(3, class_weights=[1.0, 4.0, 0.5], backbone_options=TINY).eval()
    images = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 1, 2, 1, 0, 2])
    with torch.no_grad():
        plain, logits = unweighted.compute_loss(images, targets)
        loss, same_logits = weighted.compute_loss(images, targets)
    torch.testing.assert_close(logits, same_logits)

    reference = torch.nn.functional.cross_entropy(
        logits, targets, weight=torch.tensor([1.0, 4.0, 0.5])
    )
    torch.testing.assert_close(loss, reference)
    # the same by hand: sum(w[y] * nll) / sum(w[y])
    nll = -torch.log_softmax(logits.double(), dim=1)[torch.arange(6), targets]
    w = torch.tensor([1.0, 4.0, 0.5, 4.0, 1.0, 0.5], dtype=torch.float64)
    assert loss.item() == pytest.approx(((w * nll).sum() / w.sum()).item(), rel=1e-6)
    assert plain.item() == pytest.approx(nll.mean().item(), rel=1e-6)
    assert abs(loss.item() - plain.item()) > 1e-4


def test_label_smoothing_matches_torch() -> None:
    seed_everything(0)
    module = ImageClassifier(2, label_smoothing=0.1, backbone_options=TINY).eval()
    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        loss, logits = module.compute_loss(images, targets)
    expected = torch.nn.functional.cross_entropy(logits, targets, label_smoothing=0.1)
    torch.testing.assert_close(loss, expected)


def test_warmup_cosine_schedule() -> None:
    schedule = WarmupCosine(total_steps=10, warmup_steps=4, floor=0.1)
    # warm-up: (step + 1) / 5
    assert [schedule(s) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert schedule(4) == pytest.approx(1.0)
    # halfway through the 6 decay steps: 0.1 + 0.9 * 0.5 * (1 + cos(pi / 2)) = 0.55
    assert schedule(7) == pytest.approx(0.55)
    assert schedule(10) == pytest.approx(0.1)
    assert schedule(25) == pytest.approx(0.1)  # held at the floor past the end
    assert 0.1 < schedule(9) < schedule(8) < schedule(5) < 1.0
    assert math.isclose(WarmupCosine(5, 0, 0.0)(0), 1.0)


def _bright_and_dark(n: int, seed: int) -> TensorDataset:
    """Class 1: bright images (mean 0.75), class 0: dark ones (mean 0.25), plus noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = 0.25 + 0.5 * labels.float()[:, None, None, None]
    images = images + 0.1 * torch.randn(n, 3, 16, 16, generator=generator)
    return TensorDataset(images.float(), labels)


def test_training_separates_bright_from_dark_images(tmp_path: Path) -> None:
    seed_everything(0)
    module = ImageClassifier(
        2,
        class_names=["dark", "bright"],
        lr=1e-2,
        weight_decay=0.0,
        backbone_options={"stages": (8, 16), "blocks_per_stage": 1, "dropout": 0.0},
    )
    train = _bright_and_dark(64, seed=1)
    trainer = quiet_trainer(max_epochs=8, default_root_dir=tmp_path, num_sanity_val_steps=0)
    images, labels = train.tensors
    with torch.no_grad():
        assert not torch.equal(module.eval()(images).argmax(dim=1), labels)
    module.train()  # Lightning keeps the mode it is given
    loader = DataLoader(train, batch_size=16, shuffle=True)
    validation = DataLoader(_bright_and_dark(32, seed=2), batch_size=16)
    trainer.fit(module, loader, validation)

    module.eval()
    with torch.no_grad():
        predictions = module(images).argmax(dim=1)
    assert torch.equal(predictions, labels)  # 100 % training accuracy
    metrics = trainer.callback_metrics
    assert metrics["val_acc"].item() == pytest.approx(1.0)
    assert metrics["val_macro_f1"].item() == pytest.approx(1.0)
    assert metrics["val_error"].item() == pytest.approx(0.0)
    assert {"train_loss", "val_loss"} <= set(metrics)
    # 4 steps per epoch x 8 epochs, schedule finished: LR at its floor (1 % of 1e-2)
    assert trainer.global_step == 32
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-4)


def test_schedule_length_in_epochs_and_checkpoint_round_trip(tmp_path: Path) -> None:
    seed_everything(1)
    module = ImageClassifier(
        2,
        class_names=["dark", "bright"],
        class_weights=[1.0, 3.0],
        lr=1e-2,
        max_epochs=2,
        backbone_options=TINY,
    )
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    validation = DataLoader(_bright_and_dark(8, seed=2), batch_size=8)
    trainer.fit(module, DataLoader(_bright_and_dark(32, seed=1), batch_size=8), validation)
    # a 2-epoch schedule of 4 steps each, no warm-up (round(0.05 * 8) = 0), after 4 steps:
    # 0.01 + 0.99 * 0.5 * (1 + cos(pi * 4 / 8)) = 0.505 of the peak LR
    assert trainer.global_step == 4
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.505e-2)

    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = ImageClassifier.load_from_checkpoint(path).eval()
    assert loaded.class_names == ["dark", "bright"]
    assert loaded.class_weights is not None
    torch.testing.assert_close(loaded.class_weights, torch.tensor([1.0, 3.0]))
    images = _bright_and_dark(4, seed=3).tensors[0]
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), module.eval()(images))


def test_validation_metrics_are_computed_over_the_whole_epoch(tmp_path: Path) -> None:
    seed_everything(2)
    module = ImageClassifier(3, backbone_options=TINY)
    generator = torch.Generator().manual_seed(6)
    # a random colour per image, so that the untrained network's predictions vary
    images = 0.1 * torch.randn(12, 3, 16, 16, generator=generator)
    images = images + 3.0 * torch.randn(12, 3, 1, 1, generator=generator)
    labels = torch.tensor([0, 1, 2, 2, 0, 1, 1, 2, 0, 0, 2, 1])
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    # batches of 2 hold at most 2 of the 3 classes: batch-averaged F1 would be far off
    trainer.validate(module, DataLoader(TensorDataset(images, labels), batch_size=2))
    with torch.no_grad():
        predictions = module.eval()(images).argmax(dim=1).numpy()
    truth = labels.numpy()
    assert set(predictions.tolist()) == {0, 1, 2}  # otherwise the test would prove little
    f1 = []
    for c in range(3):
        tp = int(((predictions == c) & (truth == c)).sum())
        precision = tp / max(1, int((predictions == c).sum()))
        recall = tp / int((truth == c).sum())
        f1.append(2 * precision * recall / (precision + recall) if tp else 0.0)
    metrics = trainer.callback_metrics
    assert metrics["val_acc"].item() == pytest.approx(float((predictions == truth).mean()))
    assert metrics["val_macro_f1"].item() == pytest.approx(sum(f1) / 3, abs=1e-6)
    assert metrics["val_error"].item() == pytest.approx(1 - sum(f1) / 3, abs=1e-6)


# --------------------------------------------------------------------------- ONNX export


def test_exports_to_onnx_with_parity(tmp_path: Path) -> None:
    seed_everything(3)
    module = ImageClassifier(4, backbone_options={"stages": (8, 16, 32), "blocks_per_stage": 1})
    # Train-mode passes move the BatchNorm running statistics away from (0, 1), so a graph that
    # wrongly used batch statistics, or ignored the running ones, would not match.
    module.train()
    with torch.no_grad():
        for _ in range(3):
            module(2.0 + 3.0 * torch.randn(8, 3, 32, 32))
    for layer in module.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            torch.nn.init.normal_(layer.weight, 1.0, 0.2)  # undo the zero init of block outputs
    module.eval()
    example = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4)).numpy()
    path = tmp_path / "model.onnx"
    TorchModel(module).export_onnx(path, example, "image", ["logits", "embedding"])
    runtime = OnnxModel(path)
    for size in (1, 4):
        batch = example[:size]
        with torch.no_grad():
            expected = module(torch.from_numpy(batch)).numpy()
        got = runtime.run(batch)
        assert got.shape == (size, 4)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    # a single image gives the same logits alone as in a batch: eval-mode BatchNorm
    np.testing.assert_allclose(runtime.run(example[1:2]), runtime.run(example)[1:2], atol=1e-5)
