"""Backbones: one place maps a name to a feature extractor and its feature dimension.

Every backbone maps images (N, 3, H, W) to features (N, num_features), like
`timm.create_model(name, num_classes=0)`. Add a backbone by adding a row to `BACKBONES`.
"""

from collections.abc import Callable
from dataclasses import dataclass

import timm
import torch
from torch import nn


class ConvBatchNormReLU(nn.Sequential):
    """The Transfusion study's CBR block: conv, BatchNorm, ReLU, then a 3x3 stride-2 max-pool."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )


class CBRNetwork(nn.Module):
    """A stack of CBR blocks with global average pooling (Raghu et al., 2019, "Transfusion")."""

    def __init__(self, widths: tuple[int, ...], kernel_size: int) -> None:
        super().__init__()
        channels = (3, *widths)
        self.blocks = nn.Sequential(
            *(ConvBatchNormReLU(channels[i], channels[i + 1], kernel_size) for i in range(len(widths)))
        )
        self.num_features = widths[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.blocks(images).mean(dim=(2, 3))


@dataclass(frozen=True)
class BackboneSpec:
    description: str
    build: Callable[[], nn.Module]


def _timm(name: str) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, pretrained=False, num_classes=0)


BACKBONES: dict[str, BackboneSpec] = {
    "cbr_nano": BackboneSpec(
        "4 CBR blocks, widths 32-64-128-256, 3x3 kernels: a CPU-sized CBR for smoke runs",
        lambda: CBRNetwork(widths=(32, 64, 128, 256), kernel_size=3),
    ),
    "cbr_tiny": BackboneSpec(
        "Transfusion's CBR-Tiny: 4 CBR blocks, widths 64-128-256-512, 5x5 kernels",
        lambda: CBRNetwork(widths=(64, 128, 256, 512), kernel_size=5),
    ),
    "resnet18": BackboneSpec("timm resnet18", _timm("resnet18")),
    "resnet50": BackboneSpec("timm resnet50", _timm("resnet50")),
}


def build_backbone(name: str) -> tuple[nn.Module, int]:
    """Return (feature extractor, feature dimension) for a registered backbone name."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONES)}")
    model = BACKBONES[name].build()
    return model, int(model.num_features)
