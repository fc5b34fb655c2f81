"""Image encoders that map normalised float images (N, 3, H, W) to feature vectors (N, D).

``ResNet18`` is written from scratch (no torchvision) with either the CIFAR stem (3x3 conv,
stride 1, no max-pool: keeps spatial detail at the small resolutions a renderer produces
quickly) or the ImageNet stem (7x7 conv, stride 2, max-pool: 16x fewer activations, for
larger images). ``SmallConvNet`` (a space-to-depth stem and 4 conv layers) is for quick CPU
runs and tests.
``build_encoder`` picks one by name and returns it with its feature dimension, so callers
never hard-code 512. Both accept channels_last inputs; placing the module on a device is the
caller's job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

#: Bumped whenever a layer of an encoder changes shape or meaning, so a checkpoint made
#: before is refused by name instead of failing inside ``load_state_dict``.
#: 2: the small encoder's space-to-depth stem.
ENCODER_VERSION = 2


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016): two 3x3 convs with a residual shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 trunk without the classifier: (N, 3, H, W) -> (N, 512) after global pooling.

    Args:
        stem: ``"cifar"`` (3x3 conv stride 1, no max-pool) or ``"imagenet"`` (7x7 conv
            stride 2 + 3x3 max-pool stride 2). With the ImageNet stem the parameter count
            equals torchvision's ``resnet18`` minus its fc layer (11,176,512).
        zero_init_residual: start each block's last BN gamma at 0 so every residual block
            begins as the identity (Goyal et al. 2017). Off by default, as in torchvision.
    """

    feature_dim = 512

    def __init__(
        self, stem: Literal["cifar", "imagenet"] = "cifar", zero_init_residual: bool = False
    ) -> None:
        super().__init__()
        if stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 3, 1, padding=1, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
            )
        elif stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, padding=3, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, padding=1),
            )
        else:
            raise ValueError(f"stem={stem!r}: expected 'cifar' or 'imagenet'")
        stages = []
        in_channels = 64
        for index, width in enumerate((64, 128, 256, 512)):
            stride = 1 if index == 0 else 2
            stages.append(
                nn.Sequential(BasicBlock(in_channels, width, stride), BasicBlock(width, width, 1))
            )
            in_channels = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        _init_weights(self)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.pool(self.stages(self.stem(x))), 1)  # (N, 512)


class SmallConvNet(nn.Module):
    """Space-to-depth by 2, four conv-BN-ReLU layers (widths w, 2w, 4w, out_dim; the last two
    stride 2), then global average pooling: (N, 3, H, W) -> (N, out_dim) for even H and W.
    For quick CPU runs and tests.

    The space-to-depth stem (``pixel_unshuffle``: each 2x2 block of pixels becomes 12
    channels, losslessly) stands where a stride-1 first conv at full resolution stood: the
    same FLOPs and output shapes, but a 4x smaller first activation, whose memory-bound
    BatchNorm and ReLU passes took ~15% of a CPU training step (README "Performance").
    """

    def __init__(self, width: int = 32, out_dim: int = 256) -> None:
        super().__init__()
        if width < 1 or out_dim < 1:
            raise ValueError(f"width={width}, out_dim={out_dim}: both must be >= 1")
        channels = (3 * 4, width, 2 * width, 4 * width, out_dim)
        layers: list[nn.Module] = [nn.PixelUnshuffle(2)]  # (N, 3, H, W) -> (N, 12, H/2, W/2)
        for index in range(4):
            stride = 1 if index < 2 else 2
            layers += [
                nn.Conv2d(channels[index], channels[index + 1], 3, stride, padding=1, bias=False),
                nn.BatchNorm2d(channels[index + 1]),
                nn.ReLU(inplace=True),
            ]
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = out_dim
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ValueError(f"images of shape {tuple(x.shape)}: the small encoder needs even height and width")
        return torch.flatten(self.pool(self.layers(x)), 1)  # (N, out_dim)


def _init_weights(module: nn.Module) -> None:
    """He initialisation for convs and unit-gamma BN, as torchvision's ResNet does."""
    for child in module.modules():
        if isinstance(child, nn.Conv2d):
            nn.init.kaiming_normal_(child.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(child, nn.BatchNorm2d):
            nn.init.ones_(child.weight)
            nn.init.zeros_(child.bias)


ENCODERS: dict[str, Callable[..., nn.Module]] = {"resnet18": ResNet18, "small": SmallConvNet}


def build_encoder(name: str, **kwargs) -> tuple[nn.Module, int]:
    """Build the encoder called ``name`` with ``kwargs``; return it and its feature dimension.

    Names: ``resnet18`` (kwargs ``stem``, ``zero_init_residual``) and ``small`` (kwargs
    ``width``, ``out_dim``).
    """
    if name not in ENCODERS:
        raise ValueError(f"encoder={name!r}: expected one of {sorted(ENCODERS)}")
    encoder = ENCODERS[name](**kwargs)
    return encoder, int(encoder.feature_dim)
