"""ResNet-18 and ResNet-34 (He et al., CVPR 2016) in plain PyTorch, laid out like torchvision's.

The attribute names, and so every ``state_dict`` key and shape, are those of
``torchvision.models.resnet18`` / ``resnet34``: ``conv1``, ``bn1``, ``layer1.0.conv1`` ...
``layer4.1.bn2``, ``layerN.0.downsample.0`` / ``.1`` (the 1x1 projection of a stage that halves
the resolution) and ``fc``. The published ImageNet weights (``resnet18-f37072fd.pth``,
``resnet34-b627a593.pth``, docs/tutorial-own-data.md) therefore load key for key
(:mod:`.pretrained`), with the head ``fc`` replaced for the project's classes. torchvision itself
is not a dependency.

Unlike :class:`.model.ResidualCNN`, this is the ImageNet design: a 7x7 stride-2 stem and a max-pool
shrink the image 4x before the first stage, and the features 32x in all (7x7 at 224 pixels, 2x2
for a 64-pixel tile), so it suits larger images; with pretrained weights it is the usual choice
for a small dataset of ordinary photographs.
"""

import torch
from torch import nn

from modelyard.core.errors import ConfigError

#: BasicBlocks per stage (layer1..layer4).
RESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
}
#: Output channels of layer1..layer4; the pooled features are the last (512).
STAGE_WIDTHS = (64, 128, 256, 512)


class TorchvisionBlock(nn.Module):
    """torchvision's ``BasicBlock``: conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU.

    The shortcut is ``downsample`` (1x1 conv + BN, named ``downsample.0`` and ``downsample.1``)
    when the block changes the resolution or width, otherwise the identity (no parameters).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        result: torch.Tensor = self.relu(out + shortcut)
        return result


class TorchvisionResNet(nn.Module):
    """``resnet18`` or ``resnet34`` with ``n_classes`` outputs: the same ``forward``, ``embed``
    (512 pooled features) and ``classify`` as :class:`.model.ResidualCNN`.

    ``dropout`` (before ``fc``) has no parameters, so it does not change the ``state_dict``.
    ``channels_last`` keeps the weights in NHWC strides, as the small CNN does (faster on CPU).
    """

    #: The state_dict prefix of the classification head.
    head_name = "fc"

    def __init__(
        self,
        variant: str,
        n_classes: int,
        dropout: float = 0.0,
        channels_last: bool = True,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if variant not in RESNET_LAYERS:
            raise ConfigError(
                f"unknown ResNet {variant!r}; choose one of {', '.join(RESNET_LAYERS)}"
            )
        if n_classes < 2:
            raise ConfigError(f"an image classifier needs at least 2 classes, got {n_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {dropout}")
        self.variant = variant
        self.width = STAGE_WIDTHS[-1]
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        previous = 64
        for index, (blocks, width) in enumerate(
            zip(RESNET_LAYERS[variant], STAGE_WIDTHS, strict=True)
        ):
            stride = 1 if index == 0 else 2
            layer = [TorchvisionBlock(previous, width, stride)]
            layer += [TorchvisionBlock(width, width) for _ in range(blocks - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*layer))
            previous = width
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.width, n_classes)
        self._initialise()
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def _initialise(self) -> None:
        """torchvision's initialisation, with the last BN of each block at zero (its
        ``zero_init_residual``) for training from scratch; pretrained weights replace it all."""
        initialise_residual_network(self, TorchvisionBlock)

    def layers(self) -> list[nn.Module]:
        """layer1..layer4."""
        return [self.get_submodule(f"layer{index}") for index in range(1, 5)]

    def stages(self) -> list[list[nn.Module]]:
        """The body in input order: the stem (``conv1``, ``bn1``), then layer1..layer4."""
        return [[self.conv1, self.bn1], *[[layer] for layer in self.layers()]]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 3, H, W) float32 -> (batch, 512) pooled features."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features: torch.Tensor = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for layer in self.layers():
            features = layer(features)
        return features.mean(dim=(2, 3))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """(batch, 512) pooled features -> (batch, n_classes) logits."""
        logits: torch.Tensor = self.fc(self.dropout(features))
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))


def initialise_residual_network(network: nn.Module, block: type[nn.Module]) -> None:
    """He init for convolutions, BatchNorm at identity, and the last BN (``bn2``) of every
    ``block`` at zero: each residual block starts as the identity, which trains faster and more
    stably from scratch (Goyal et al., 2017)."""
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    for module in network.modules():
        last = module.get_submodule("bn2") if isinstance(module, block) else None
        if isinstance(last, nn.BatchNorm2d):
            nn.init.zeros_(last.weight)
