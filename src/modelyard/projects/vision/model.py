"""Image classifiers: a small residual CNN for small images, or any timm model by name.

:class:`ResidualCNN` is a ResNet (He et al., CVPR 2016) cut down for 64x64 inputs such as
EuroSAT: a 3x3 stem without the 7x7/stride-2 conv and max-pool of the ImageNet design (they would
shrink a 64x64 tile to 16x16 before the first block and throw away most of its detail), then a few
stages of BasicBlocks that halve the resolution and widen the features, global average pooling and
one linear layer. Global pooling makes the network independent of the input size, so the same
weights run on 64x64 and 128x128 images and the ONNX graph only fixes the channel count.

Every backbone also exposes ``embed(x)``, the penultimate (pooled) features, which the evaluation
plots project to 2-D to show how well the classes separate and the exported graph projects to a
compact embedding for drift monitoring. :class:`ResidualCNN` also has ``classify(features)``, so
the logits and the features of one image come from one pass through the network.

:class:`ResidualCNN` keeps its weights and activations in the channels-last memory layout (NHWC
strides) by default. The PyTorch profiler shows CPU training time going almost entirely to the
oneDNN convolutions (forward and backward) and batch norms, and those kernels are faster on
channels-last tensors: per EuroSAT training step, convolution forward -26 %, backward -15 %, batch
norm -46 %; whole training 1.1-1.5x faster on the 2-vCPU machine (docs/profiling.md). Same
weights and state_dict, same function: outputs agree to float32 rounding.
"""

import importlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from modelyard.core.errors import ConfigError
from modelyard.projects.vision.torchvision_resnet import (
    RESNET_LAYERS,
    TorchvisionResNet,
    initialise_residual_network,
)

#: Backbone names accepted by :func:`build_backbone` besides ``timm:<model>``.
BACKBONES = ("resnet_small", "resnet18", "resnet34")
TIMM_PREFIX = "timm:"
#: ``model.freeze``: train everything, only the last stage and the head, or only the head.
FREEZE_POLICIES = ("none", "all_but_last_stage", "linear_probe")


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a shortcut, then ReLU.

    The shortcut is the identity when shape is preserved, otherwise a strided 1x1 conv + BN
    ("projection", option B of the ResNet paper): it costs few parameters and lets the residual
    sum line up when a stage halves the resolution or changes the width.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        # No conv bias: the BatchNorm that follows has its own shift, a bias would be redundant.
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out: torch.Tensor = self.relu(residual + self.shortcut(x))
        return out


class ResidualCNN(nn.Module):
    """Stem -> stages of BasicBlocks -> global average pool -> dropout -> linear logits.

    ``stages`` are the widths of the stages; every stage after the first starts with a stride-2
    block, so the feature map shrinks by ``stem_stride * 2 ** (len(stages) - 1)``: 8 with the
    defaults, i.e. 8x8 features for a 64x64 tile. The defaults (ResNet-18's layout at half its
    width) have about 2.8 M parameters.
    """

    def __init__(
        self,
        n_classes: int,
        stages: Sequence[int] = (32, 64, 128, 256),
        blocks_per_stage: int = 2,
        stem_stride: int = 1,
        dropout: float = 0.2,
        in_channels: int = 3,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if n_classes < 2:
            raise ConfigError(f"an image classifier needs at least 2 classes, got {n_classes}")
        if not stages or any(int(width) < 1 for width in stages):
            raise ConfigError(f"model.stages must be non-empty positive widths, got {list(stages)}")
        if blocks_per_stage < 1:
            raise ConfigError(f"model.blocks_per_stage must be >= 1, got {blocks_per_stage}")
        if stem_stride not in (1, 2):
            raise ConfigError(f"model.stem_stride must be 1 or 2, got {stem_stride}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {dropout}")
        widths = [int(width) for width in stages]
        self.width = widths[-1]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        previous = widths[0]
        for index, width in enumerate(widths):
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock(previous, width, stride))
                previous = width
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.width, n_classes)
        self._blocks_per_stage = blocks_per_stage
        self._initialise()
        self.channels_last = bool(channels_last)
        if self.channels_last:
            # Only the 4-D conv weights change strides; values and state_dict keys are the same.
            # (Documented Module.to keyword that torch's type stubs leave out of the overloads.)
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def _initialise(self) -> None:
        """He init for convs; the last BN of each block starts at zero (the block is the
        identity at first: this network trains from scratch or from a modelyard run)."""
        initialise_residual_network(self, BasicBlock)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 3, H, W) float32 -> (batch, width) pooled penultimate features."""
        if self.channels_last:
            # A no-op for input already in NHWC strides; one small copy of the batch otherwise.
            x = x.contiguous(memory_format=torch.channels_last)
        features: torch.Tensor = self.blocks(self.stem(x))
        # mean over H, W instead of AdaptiveAvgPool2d: same result, exports as one ReduceMean.
        return features.mean(dim=(2, 3))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """(batch, width) pooled features (:meth:`embed`'s) -> (batch, n_classes) logits."""
        logits: torch.Tensor = self.classifier(self.dropout(features))
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 3, H, W) float32 -> (batch, n_classes) logits."""
        return self.classify(self.embed(x))

    #: The state_dict prefix of the classification head (see :func:`frozen_modules`).
    head_name = "classifier"

    def stages(self) -> list[list[nn.Module]]:
        """The body in input order: the stem, then each stage's blocks."""
        blocks = list(self.blocks)
        per = self._blocks_per_stage
        return [[self.stem], *[blocks[i : i + per] for i in range(0, len(blocks), per)]]


class TimmClassifier(nn.Module):
    """A timm model with the same ``forward``/``embed`` interface as :class:`ResidualCNN`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logit features: timm's own head pooling when it has one, else a mean."""
        features: torch.Tensor = self.model.forward_features(x)  # type: ignore[operator]
        forward_head = getattr(self.model, "forward_head", None)
        if callable(forward_head):
            pooled: torch.Tensor = forward_head(features, pre_logits=True)
            return pooled
        return features.mean(dim=(2, 3)) if features.ndim == 4 else features.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(x)
        return logits


def _timm_backbone(
    model_name: str, n_classes: int, pretrained: bool = False, **kwargs: Any
) -> nn.Module:
    if not model_name:
        raise ConfigError("timm backbone needs a model name, e.g. 'timm:resnet18'")
    try:
        # Imported by name so that timm stays an optional dependency (and untyped for mypy).
        timm = importlib.import_module("timm")
    except ImportError as exc:
        raise ConfigError(
            f"timm is not installed; pip install timm to use timm:{model_name}"
            + (" with model.pretrained=true" if pretrained else "")
        ) from exc
    try:
        # pretrained=True: timm downloads its weights (from the Hugging Face hub) and replaces
        # the head for n_classes.
        model = timm.create_model(
            model_name, pretrained=pretrained, num_classes=n_classes, **kwargs
        )
    except (RuntimeError, TypeError, ValueError) as exc:  # unknown model or bad keyword
        raise ConfigError(f"timm cannot build {model_name!r}: {exc}") from exc
    return TimmClassifier(model)


def build_backbone(
    name: str, n_classes: int, *, timm_pretrained: bool = False, **kwargs: Any
) -> nn.Module:
    """The network for ``model.backbone``: ``resnet_small``, ``resnet18``, ``resnet34`` or
    ``timm:<model>``.

    ``kwargs`` go to the constructor (:class:`ResidualCNN` or ``timm.create_model``). The result
    has ``forward(x) -> logits`` and ``embed(x) -> features``. ``timm_pretrained``: timm's own
    pretrained weights (``timm:<model>`` only; other weights load by :mod:`.pretrained`).
    """
    if name.startswith(TIMM_PREFIX):
        return _timm_backbone(name[len(TIMM_PREFIX) :], n_classes, timm_pretrained, **kwargs)
    if timm_pretrained:
        raise ConfigError(f"timm's pretrained weights need a timm:<model> backbone, not {name}")
    if name in ("resnet_small", *RESNET_LAYERS):
        try:
            if name == "resnet_small":
                return ResidualCNN(n_classes, **kwargs)
            return TorchvisionResNet(name, n_classes, **kwargs)
        except TypeError as exc:  # an option the network does not have
            raise ConfigError(f"backbone {name}: {exc}") from exc
    choices = ", ".join([*BACKBONES, f"{TIMM_PREFIX}<model>"])
    raise ConfigError(f"unknown backbone {name!r}; choose one of: {choices}")


def frozen_modules(network: nn.Module, policy: str) -> list[nn.Module]:
    """The modules ``model.freeze`` keeps fixed: none; every stage but the last (the head and
    the last stage train); or the whole body (a linear probe: only the head trains).

    The network must describe its body (``stages()``) for any policy but ``none``: the residual
    CNNs do, a timm model does not (a one-line ConfigError).
    """
    if policy not in FREEZE_POLICIES:
        raise ConfigError(
            f"model.freeze must be one of {', '.join(FREEZE_POLICIES)}, got {policy!r}"
        )
    if policy == "none":
        return []
    stages = getattr(network, "stages", None)
    if not callable(stages):
        raise ConfigError(
            f"model.freeze={policy} needs backbone resnet18, resnet34 or resnet_small; "
            f"this backbone ({type(network).__name__}) can only train whole (model.freeze=none)"
        )
    body: list[list[nn.Module]] = stages()
    kept = body if policy == "linear_probe" else body[:-1]
    return [module for stage in kept for module in stage]
