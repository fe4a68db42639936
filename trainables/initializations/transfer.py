"""Transfusion's transfer tricks (Raghu et al., 2019, "Transfusion: Understanding Transfer
Learning for Medical Imaging", Sections 5-6): Mean-Var init, weight transfusion, Slim.

Each takes the pretrained backbone (standard stem, full width) and returns a new one. Blocks are
those of `BackboneSpec.blocks`: for timm resnets block 1 = stem (conv1, bn1) + layer1, block K
= layerK; for resnetv2 (BiT) block 1 = stem + stages.0, block 4 = stages.3 + the final norm; for
the CBR networks block K = the K-th CBR block.
"""

import torch
from torch import nn

from trainables.backbones import BackboneSpec


@torch.no_grad()
def mean_var_init(pretrained: nn.Module) -> tuple[nn.Module, str]:
    """Every parameter tensor resampled i.i.d. from N(mean, variance) of that pretrained tensor.

    Convolution and linear weights and biases and the normalization layers' scales and shifts are
    all parameters. BatchNorm running statistics describe the pretrained activations, which no
    longer exist, so they are reset to PyTorch's defaults (mean 0, variance 1). Uses torch's
    global generator: seed it before.
    """
    count = 0
    for parameter in pretrained.parameters():
        mean, std = parameter.mean(), parameter.std(unbiased=False)
        parameter.copy_(torch.randn_like(parameter) * std + mean)
        count += 1
    for module in pretrained.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
    return pretrained, (f"meanvar: each of the {count} parameter tensors sampled i.i.d. from "
                        "N(mean, variance) of the pretrained tensor; BatchNorm running statistics reset")


@torch.no_grad()
def transfuse(
    pretrained: nn.Module, random: nn.Module, spec: BackboneSpec, blocks: int
) -> tuple[nn.Module, str]:
    """`random` with every tensor of blocks 1..`blocks` copied from `pretrained` (weight transfusion)."""
    kept = [prefix for block in spec.blocks[:blocks] for prefix in block]
    fresh = [prefix for block in spec.blocks[blocks:] for prefix in block]
    copied = _copy_tensors(pretrained, random, kept)
    report = f"blocks 1-{blocks} ({', '.join(kept)}: {copied} tensors) pretrained"
    if fresh:
        report += f", blocks {blocks + 1}-{len(spec.blocks)} ({', '.join(fresh)}) at random init"
    return random, report


def slim(pretrained: nn.Module, random_slim: nn.Module, spec: BackboneSpec) -> tuple[nn.Module, str]:
    """Transfusion's Slim hybrid: blocks 1-2 pretrained, blocks 3-4 at random init and half width."""
    model, report = transfuse(pretrained, random_slim, spec, blocks=2)
    return model, (f"slim: {report} with half the channels; feature dimension "
                   f"{pretrained.num_features} -> {random_slim.num_features}")


def _copy_tensors(source: nn.Module, target: nn.Module, prefixes: list[str]) -> int:
    source_state, target_state = source.state_dict(), target.state_dict()
    copied = 0
    for key, tensor in target_state.items():
        if any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes):
            if source_state[key].shape != tensor.shape:
                raise ValueError(f"cannot transfer {key}: pretrained {tuple(source_state[key].shape)}, "
                                 f"target {tuple(tensor.shape)}")
            tensor.copy_(source_state[key])
            copied += 1
    return copied
