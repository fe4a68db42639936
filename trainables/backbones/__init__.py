"""Backbones: one place maps a name to a feature extractor and its feature dimension.

Every backbone maps images (N, 3, H, W) to features (N, num_features), like
`timm.create_model(name, num_classes=0)`. Add a backbone by adding a row to `BACKBONES`: how to
build it, which modules make up its four blocks (what weight transfusion and Slim transfer), and
its multiply-accumulates per image (what the dry run's GPU-hour estimate scales by).
Besides the rows, any timm architecture (`timm:NAME`) or timm model on the Hugging Face hub
(`hf-hub:ORG/NAME`) is a backbone; `hub.py` here builds those and loads their own published
weights (init=pretrained).
"""

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

import timm
import torch
import torch.utils.checkpoint
from timm.layers import StdConv2d
from torch import nn

from trainables.backbones.hub import HF_HUB_PREFIX, TIMM_PREFIX, hub_architecture


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
    """A stack of CBR blocks with global average pooling.

    Raghu, Zhang, Kleinberg, Bengio (2019), "Transfusion: Understanding Transfer Learning for
    Medical Imaging", NeurIPS, Section 3 and Appendix: small conv-BatchNorm-ReLU networks, each
    block followed by a 3x3 stride-2 max-pool, then global average pooling (the paper's final
    linear classifier is the SSL method's head here).
    """

    def __init__(self, widths: tuple[int, ...], kernel_size: int) -> None:
        super().__init__()
        channels = (3, *widths)
        self.blocks = nn.Sequential(
            *(ConvBatchNormReLU(channels[i], channels[i + 1], kernel_size) for i in range(len(widths)))
        )
        self.num_features = widths[-1]
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of keeping them (timm's
        interface): only the blocks' inputs stay in memory between forward and backward."""
        self.grad_checkpointing = enable

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = images
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                features = torch.utils.checkpoint.checkpoint(block, features, use_reentrant=False)
            else:
                features = block(features)
        return features.mean(dim=(2, 3))


def _half_after_block_two(widths: tuple[int, ...]) -> tuple[int, ...]:
    """Transfusion's Slim: the blocks after block 2 with half their channels."""
    return (*widths[:2], *(width // 2 for width in widths[2:]))


@dataclass(frozen=True)
class BackboneSpec:
    description: str
    build: Callable[[bool], nn.Module]  # (slim) -> module with a `num_features` attribute
    # Module-name prefixes of blocks 1..4; the stem counts with block 1. Weight transfusion keeps
    # blocks <= K pretrained, Slim keeps blocks 1-2 and halves the width of the others.
    blocks: tuple[tuple[str, ...], ...]
    # Billions of multiply-accumulates per 224 px image, conv and linear layers (the dry run's
    # GPU-hour estimate, orchestrator/estimates.py; tests/trainables/test_backbones.py counts them);
    # None: unknown (a hub architecture).
    multiply_accumulates_at_224: float | None
    timm_name: str | None = None  # the timm architecture, None for the models defined here

    @property
    def has_stem(self) -> bool:
        return self.timm_name is not None


def _cbr(widths: tuple[int, ...], kernel_size: int) -> Callable[[bool], nn.Module]:
    return lambda slim: CBRNetwork(_half_after_block_two(widths) if slim else widths, kernel_size)


def _timm(name: str, channels: tuple[int, ...]) -> Callable[[bool], nn.Module]:
    def build(slim: bool) -> nn.Module:
        if not slim:
            return timm.create_model(name, pretrained=False, num_classes=0)
        half = _half_after_block_two(channels)
        return timm.create_model(name, pretrained=False, num_classes=0, channels=half)
    return build


_CBR_BLOCKS = (("blocks.0",), ("blocks.1",), ("blocks.2",), ("blocks.3",))
_RESNET_BLOCKS = (("conv1", "bn1", "layer1"), ("layer2",), ("layer3",), ("layer4",))
# ResNetV2 is pre-activation: the final norm belongs to the last stage's output.
_RESNETV2_BLOCKS = (("stem", "stages.0"), ("stages.1",), ("stages.2",), ("stages.3", "norm"))

BACKBONES: dict[str, BackboneSpec] = {
    "cbr_nano": BackboneSpec(
        "4 CBR blocks, widths 32-64-128-256, 3x3 kernels: a CPU-sized CBR for smoke runs (not in the paper)",
        _cbr((32, 64, 128, 256), kernel_size=3), _CBR_BLOCKS, multiply_accumulates_at_224=0.74,
    ),
    "cbr_small": BackboneSpec(
        "Transfusion's CBR-Small: 4 CBR blocks, widths 32-64-128-256, 7x7 kernels",
        _cbr((32, 64, 128, 256), kernel_size=7), _CBR_BLOCKS, multiply_accumulates_at_224=4.01,
    ),
    "cbr_tiny": BackboneSpec(
        "Transfusion's CBR-Tiny: 4 CBR blocks, widths 64-128-256-512, 5x5 kernels",
        _cbr((64, 128, 256, 512), kernel_size=5), _CBR_BLOCKS, multiply_accumulates_at_224=7.95,
    ),
    "resnet18": BackboneSpec(
        "timm resnet18 (torchvision layout)", _timm("resnet18", (64, 128, 256, 512)), _RESNET_BLOCKS,
        multiply_accumulates_at_224=1.81, timm_name="resnet18",
    ),
    "resnet50": BackboneSpec(
        "timm resnet50 (torchvision layout)", _timm("resnet50", (64, 128, 256, 512)), _RESNET_BLOCKS,
        multiply_accumulates_at_224=4.09, timm_name="resnet50",
    ),
    "resnetv2_50x1_bit": BackboneSpec(
        "timm resnetv2_50x1_bit: Big Transfer's pre-activation ResNet-50 with GroupNorm and weight "
        "standardization (Kolesnikov et al., 2020)",
        _timm("resnetv2_50x1_bit", (256, 512, 1024, 2048)), _RESNETV2_BLOCKS,
        multiply_accumulates_at_224=4.09, timm_name="resnetv2_50x1_bit",
    ),
}


HUB_PREFIXES = (TIMM_PREFIX, HF_HUB_PREFIX)


def is_hub_backbone(name: str) -> bool:
    """`timm:NAME` or `hf-hub:ORG/NAME`: a model timm builds, not a row of BACKBONES."""
    return name.startswith(HUB_PREFIXES)


class BackboneNames(Collection[str]):
    """The valid values of `backbone`: the registered names and any `timm:` or `hf-hub:` name
    (whose model backbone_spec checks further)."""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in BACKBONES or is_hub_backbone(name))

    def __iter__(self) -> Iterator[str]:
        return iter([*BACKBONES, "timm:NAME", "hf-hub:ORG/NAME"])

    def __len__(self) -> int:
        return len(BACKBONES) + 2


BACKBONE_NAMES = BackboneNames()


def feature_dimension(model: nn.Module) -> int:
    """What the backbone's forward returns per image: timm's pooled `head_hidden_size` where a
    model has a pre-logits layer (MobileNetV3), else `num_features`."""
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


def backbone_spec(name: str) -> BackboneSpec:
    if is_hub_backbone(name):
        description, build = hub_architecture(name)
        # Multiply-accumulates unknown: the dry run's estimate takes ResNet-50's.
        return BackboneSpec(description, build, blocks=(), multiply_accumulates_at_224=None)
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONE_NAMES)}")
    return BACKBONES[name]


def build_backbone(name: str, *, cifar_stem: bool = False, slim: bool = False) -> tuple[nn.Module, int]:
    """Return (feature extractor, feature dimension) for a registered backbone name.

    cifar_stem: for 32 px images, a 3x3 stride-1 first conv and no max-pool (resnets only).
    slim: blocks 3 and 4 with half their channels (Transfusion's Slim), which halves the
    feature dimension.
    """
    spec = backbone_spec(name)
    if cifar_stem and not spec.has_stem:
        raise ValueError(f"cifar_stem applies to the resnets only; backbone {name!r} has no stem to replace")
    model = spec.build(slim)
    if cifar_stem:
        use_cifar_stem(model)
    return model, feature_dimension(model)


def use_cifar_stem(model: nn.Module) -> None:
    """Replace a resnet's stem in place by a 3x3 stride-1 conv without max-pool (32 px images).

    The new conv is freshly initialized (Kaiming normal, fan-out, as timm's resnets): pretrained
    7x7 stem filters do not fit it. A weight-standardized stem stays weight-standardized.
    """
    if hasattr(model, "conv1") and hasattr(model, "maxpool"):  # timm ResNet
        model.conv1 = _stem_conv(model.conv1)
        model.maxpool = nn.Identity()
    elif hasattr(model, "stem") and hasattr(model.stem, "conv"):  # timm ResNetV2 (BiT): conv, pad, pool
        model.stem.conv = _stem_conv(model.stem.conv)
        for name in ("pad", "pool"):
            if hasattr(model.stem, name):
                setattr(model.stem, name, nn.Identity())
    else:
        raise ValueError(f"do not know where the stem of {type(model).__name__} is")


def _stem_conv(old: nn.Conv2d) -> nn.Conv2d:
    if isinstance(old, StdConv2d):
        conv: nn.Conv2d = StdConv2d(old.in_channels, old.out_channels, 3, stride=1, padding=1, eps=old.eps)
    else:
        conv = nn.Conv2d(old.in_channels, old.out_channels, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv.to(old.weight.device, old.weight.dtype)
