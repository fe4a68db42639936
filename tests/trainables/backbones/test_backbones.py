"""Backbones: every registered name builds, trains at 32 and 96 px, and has the documented shape."""

import pytest
import torch
from timm.layers import StdConv2d
from torch import nn

from trainables.backbones import BACKBONES, build_backbone

FEATURE_DIMS = {"cbr_nano": 256, "cbr_small": 256, "cbr_tiny": 512, "resnet18": 512, "resnet50": 2048,
                "resnetv2_50x1_bit": 2048}
RESNETS = sorted(name for name, spec in BACKBONES.items() if spec.has_stem)


def _convs(model: nn.Module, prefixes: tuple[str, ...] = ("",)) -> list[nn.Conv2d]:
    return [module for name, module in model.named_modules()
            if isinstance(module, nn.Conv2d) and name.startswith(prefixes)]


def test_every_backbone_has_a_documented_feature_dimension() -> None:
    assert set(FEATURE_DIMS) == set(BACKBONES)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_trains_at_32_and_96_px_and_reports_its_feature_dimension(name: str) -> None:
    torch.manual_seed(0)
    model, feature_dim = build_backbone(name)
    assert feature_dim == FEATURE_DIMS[name]
    for image_size in (32, 96):
        features = model(torch.randn(2, 3, image_size, image_size))
        assert features.shape == (2, feature_dim)
        features.square().mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(("name", "expected"), [
    # Raghu et al. 2019, Transfusion: conv widths and kernel sizes of the four CBR blocks.
    ("cbr_small", [(32, 7), (64, 7), (128, 7), (256, 7)]),
    ("cbr_tiny", [(64, 5), (128, 5), (256, 5), (512, 5)]),
    ("cbr_nano", [(32, 3), (64, 3), (128, 3), (256, 3)]),
])
def test_cbr_networks_have_the_documented_widths_and_kernels(
    name: str, expected: list[tuple[int, int]]
) -> None:
    model, _ = build_backbone(name)
    assert [(conv.out_channels, conv.kernel_size[0]) for conv in _convs(model)] == expected
    assert sum(isinstance(module, nn.MaxPool2d) for module in model.modules()) == 4


@pytest.mark.parametrize("name", RESNETS)
def test_cifar_stem_is_a_3x3_stride_1_conv_without_max_pool(name: str) -> None:
    model, feature_dim = build_backbone(name, cifar_stem=True)
    first_conv = _convs(model)[0]
    assert first_conv.kernel_size == (3, 3) and first_conv.stride == (1, 1)
    assert isinstance(first_conv, StdConv2d) == (name == "resnetv2_50x1_bit")  # BiT's stays standardized
    assert not any(isinstance(module, nn.MaxPool2d) for module in model.modules())
    assert feature_dim == FEATURE_DIMS[name]
    with torch.no_grad():
        # Total stride 8 instead of 32: a 2x2 final feature map at 16 px, where the standard stem gives 1x1.
        assert model.eval().forward_features(torch.randn(1, 3, 16, 16)).shape[-2:] == (2, 2)


def test_cifar_stem_is_refused_for_the_cbr_networks() -> None:
    with pytest.raises(ValueError, match="cifar_stem"):
        build_backbone("cbr_tiny", cifar_stem=True)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_four_blocks_cover_the_model_and_slim_halves_the_channels_after_block_two(name: str) -> None:
    full, full_dim = build_backbone(name)
    slim, slim_dim = build_backbone(name, slim=True)
    spec = BACKBONES[name]
    modules = dict(full.named_modules())
    prefixes = [prefix for block in spec.blocks for prefix in block]
    assert len(spec.blocks) == 4 and all(prefix in modules for prefix in prefixes)
    assert all(key.startswith(tuple(prefix + "." for prefix in prefixes)) for key in full.state_dict())
    assert slim_dim == full_dim // 2
    for block, block_prefixes in enumerate(spec.blocks, start=1):
        full_widths = [conv.out_channels for conv in _convs(full, block_prefixes)]
        slim_widths = [conv.out_channels for conv in _convs(slim, block_prefixes)]
        assert slim_widths == (full_widths if block <= 2 else [width // 2 for width in full_widths])
    with torch.no_grad():
        assert slim(torch.randn(2, 3, 32, 32)).shape == (2, slim_dim)


def test_unknown_backbone_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as raised:
        build_backbone("vit_typo")
    assert all(name in str(raised.value) for name in BACKBONES)


def counted_multiply_accumulates(model: nn.Module, image_size: int = 224) -> float:
    """Billions of multiply-accumulates of one image through the conv and linear layers, counted
    with forward hooks on the meta device (no weights, no arithmetic)."""
    total = 0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        per_output = module.in_features if isinstance(module, nn.Linear) else \
            module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        total += output[0].numel() * per_output

    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            module.register_forward_hook(count)
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, image_size, image_size, device="meta"))
    return total / 1e9


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_declares_the_multiply_accumulates_it_has(name: str) -> None:
    """The dry run's GPU-hour estimate (orchestrator/estimates.py) scales by these."""
    with torch.device("meta"):
        model, _ = build_backbone(name)
    declared = BACKBONES[name].multiply_accumulates_at_224
    assert declared == pytest.approx(counted_multiply_accumulates(model), rel=0.01)
