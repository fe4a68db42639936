"""BatchNorm conversion for several workers and back (trainables/distributed.py): timm's fused
norm-act layers keep their activation, and the network computes what it computed before."""

import timm.layers
import torch
from torch import nn

from trainables.backbones import build_backbone
from trainables.distributed import (
    GlobalBatchNorm,
    GlobalBatchNormAct,
    LocalBatchNorm,
    convert_batchnorm_for_distributed,
    convert_batchnorm_to_local,
)


def efficientnet_b0() -> nn.Module:
    """timm's EfficientNet-B0 (BatchNormAct2d with SiLU throughout), random init, with running
    statistics that are not the identity, so that a dropped statistic would show too."""
    torch.manual_seed(0)
    model, _ = build_backbone("timm:efficientnet_b0")
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, 64, 64))
    return model.eval()


def test_converting_efficientnet_keeps_its_eval_outputs_and_every_fused_activation() -> None:
    model = efficientnet_b0()
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(images)
    norm_acts = sum(isinstance(m, timm.layers.BatchNormAct2d) for m in model.modules())
    activations = [type(m.act) for m in model.modules() if isinstance(m, timm.layers.BatchNormAct2d)]
    assert norm_acts > 40 and nn.SiLU in activations
    for device, fused in (("cuda", timm.layers.SyncBatchNormAct), ("cpu", GlobalBatchNormAct)):
        # The GPU conversion is only a module swap: it runs here on the CPU, in eval mode.
        converted = convert_batchnorm_for_distributed(efficientnet_b0(), torch.device(device)).eval()
        assert sum(isinstance(m, fused) for m in converted.modules()) == norm_acts
        assert [type(m.act) for m in converted.modules() if isinstance(m, fused)] == activations
        assert not any(type(m) in (nn.BatchNorm2d, timm.layers.BatchNormAct2d) for m in converted.modules())
        with torch.no_grad():
            torch.testing.assert_close(converted(images), expected, atol=1e-5, rtol=0)
        local = convert_batchnorm_to_local(converted).eval()
        assert not any(isinstance(m, nn.SyncBatchNorm | GlobalBatchNorm) for m in local.modules())
        local_norm_acts = [m for m in local.modules() if isinstance(m, timm.layers.BatchNormAct2d)]
        assert [type(m.act) for m in local_norm_acts] == activations
        with torch.no_grad():
            torch.testing.assert_close(local(images), expected, atol=1e-5, rtol=0)


def small_network() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))


def test_the_local_copy_trains_like_plain_batchnorm_and_keeps_parameters_and_statistics() -> None:
    torch.manual_seed(0)
    reference = small_network()
    with torch.no_grad():
        reference[1].running_mean.uniform_(-1, 1)
        reference[1].weight.uniform_(0.5, 2)
    reference[1].bias.requires_grad_(False)
    state = {name: value.clone() for name, value in reference.state_dict().items()}
    converted = convert_batchnorm_for_distributed(reference, torch.device("cpu"))
    assert isinstance(converted[1], GlobalBatchNorm)
    local = convert_batchnorm_to_local(converted)
    assert type(local[1]) is LocalBatchNorm and not local[1].bias.requires_grad
    assert local.state_dict().keys() == state.keys()
    for name, value in state.items():
        torch.testing.assert_close(local.state_dict()[name], value)
    plain = small_network()
    plain.load_state_dict(state)
    images = torch.randn(5, 3, 8, 8)
    local.train(), plain.train()
    torch.testing.assert_close(local(images), plain(images))
    torch.testing.assert_close(local[1].running_var, plain[1].running_var)
