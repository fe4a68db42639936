"""Surgery on an initialized backbone, before SSL pretraining starts.

- Normalization swaps (Lu, Jha, Huo 2021, BiT + SimSiam): GroupNorm -> BatchNorm with every conv
  weight kept bit-identical; or BatchNorm -> GroupNorm.
- Dropping weight standardization: timm's StdConv2d -> plain nn.Conv2d.
- Ciga, Xu, Martel (double pretraining): dead-filter replacement and Frobenius weight scaling.
Each function changes the model in place and returns a one-sentence report.
"""

import math
from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.fx
import torch.nn.functional as F
from timm.layers import StdConv2d
from torch import nn

DEAD_FILTER_NORM = 0.1  # Ciga et al.: a filter whose Frobenius norm is below this is dead
_BatchNorm = nn.modules.batchnorm._BatchNorm


def _replace(
    model: nn.Module, matches: Callable[[nn.Module], bool], make: Callable[[nn.Module], nn.Module]
) -> int:
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if matches(child):
                new = make(child)
                reference = next(child.parameters(), None)
                if reference is not None:
                    new = new.to(reference.device, reference.dtype)
                setattr(parent, name, new)
                replaced += 1
    return replaced


def _with_activation(norm: nn.Module, old: nn.Module) -> nn.Module:
    """Keep a timm norm+act layer's activation as a plain Sequential, which SyncBatchNorm conversion keeps."""
    if not hasattr(old, "act"):
        return norm
    return nn.Sequential(OrderedDict(norm=norm, drop=old.drop, act=old.act))


def group_norm_to_batch_norm(model: nn.Module) -> str:
    """Every GroupNorm becomes a BatchNorm2d with PyTorch's default init; nothing else changes."""
    count = _replace(model, lambda module: isinstance(module, nn.GroupNorm),
                     lambda old: _with_activation(nn.BatchNorm2d(old.num_channels), old))
    return f"norm=batchnorm: {count} GroupNorm layers replaced by BatchNorm (default init), conv weights kept"


def batch_norm_to_group_norm(model: nn.Module) -> str:
    """Every BatchNorm2d becomes a GroupNorm (32 groups, or the largest divisor of the channels below)."""
    def group_norm(old: nn.Module) -> nn.Module:
        return _with_activation(nn.GroupNorm(group_count(old.num_features), old.num_features), old)

    count = _replace(model, lambda module: isinstance(module, nn.BatchNorm2d), group_norm)
    return f"norm=groupnorm: {count} BatchNorm layers replaced by GroupNorm (default init), conv weights kept"


def group_count(channels: int, most: int = 32) -> int:
    return max(groups for groups in range(1, most + 1) if channels % groups == 0)


def drop_weight_standardization(model: nn.Module, bake: bool) -> str:
    """Every StdConv2d becomes an nn.Conv2d with the same raw weights (bake=False), or with the
    standardized weights it actually convolves with (bake=True, which keeps the output unchanged)."""
    def plain(old: nn.Module) -> nn.Conv2d:
        conv = nn.Conv2d(old.in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                         old.dilation, old.groups, bias=old.bias is not None, padding_mode=old.padding_mode)
        with torch.no_grad():
            conv.weight.copy_(standardized_weight(old) if bake else old.weight)
            if old.bias is not None:
                conv.bias.copy_(old.bias)
        return conv

    count = _replace(model, lambda module: type(module) is StdConv2d, plain)
    kept = "standardized weights baked in" if bake else "raw weights kept"
    return f"weight_standardization={'bake' if bake else 'drop'}: {count} StdConv2d -> Conv2d, {kept}"


def standardized_weight(conv: StdConv2d) -> torch.Tensor:
    """What timm's StdConv2d convolves with: each filter at zero mean and unit variance."""
    flat = conv.weight.reshape(1, conv.out_channels, -1)
    return F.batch_norm(flat, None, None, training=True, momentum=0.0, eps=conv.eps).reshape_as(conv.weight)


@torch.no_grad()
def replace_dead_filters(model: nn.Module, mode: str, threshold: float = DEAD_FILTER_NORM) -> str:
    """Filters (output channels) of every conv whose Frobenius norm is below `threshold` are replaced.

    mode "random": by PyTorch's default conv init (Kaiming uniform, a=sqrt(5)); "copy": by copies of
    live filters of the same layer chosen at random (a layer with no live filter falls back to
    random). The BatchNorm after the conv is left as it is. Uses torch's global generator.
    """
    replaced, layers, fallback = 0, 0, 0
    for conv in (module for module in model.modules() if isinstance(module, nn.Conv2d)):
        norms = conv.weight.flatten(1).norm(dim=1)
        dead = (norms < threshold).nonzero().flatten()
        if len(dead) == 0:
            continue
        live = (norms >= threshold).nonzero().flatten()
        if mode == "copy" and len(live) > 0:
            sources = live[torch.randint(len(live), (len(dead),))]
            conv.weight[dead] = conv.weight[sources]
        else:
            fallback += mode == "copy"
            fresh = torch.empty_like(conv.weight)
            nn.init.kaiming_uniform_(fresh, a=math.sqrt(5))
            conv.weight[dead] = fresh[dead]
        replaced += len(dead)
        layers += 1
    how = "copies of live filters of the same layer" if mode == "copy" else "random filters"
    note = f" ({fallback} layers without a live filter got random ones)" if fallback else ""
    return (f"dead_filters={mode}: {replaced} filters below norm {threshold} in {layers} conv layers "
            f"-> {how}{note}")


class _ConvAndNormAreLeaves(torch.fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, (nn.Conv2d, _BatchNorm)) or super().is_leaf_module(module, qualified_name)


def conv_batch_norm_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv name, BatchNorm name) where the BatchNorm is the only consumer of the conv's output."""
    graph = _ConvAndNormAreLeaves().trace(model)
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        is_conv = node.op == "call_module" and isinstance(modules[node.target], nn.Conv2d)
        if not is_conv or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        if user.op == "call_module" and isinstance(modules[user.target], _BatchNorm):
            pairs.append((node.target, user.target))
    return pairs


@torch.no_grad()
def scale_by_frobenius_norm(model: nn.Module) -> str:
    """Divide each conv's weight by its Frobenius norm s when s > 1, and compensate in the BatchNorm
    right after it so that the network's output in eval mode is unchanged.

    BatchNorm in eval computes gamma (y - mu) / sqrt(var + eps) + beta. With y' = y / s, setting
    mu' = mu / s, var' = var / s^2 and gamma' = gamma sqrt((var + s^2 eps) / (var + eps)) gives
    gamma' (y - mu) / sqrt(var + s^2 eps) = gamma (y - mu) / sqrt(var + eps): exact, eps included,
    and var' stays a valid variance. Weight-standardized convs are skipped (their output does not
    depend on the weight's scale), as are convs not followed by a BatchNorm alone (no exact place
    to compensate, e.g. the last conv of a pre-activation block).
    """
    modules = dict(model.named_modules())
    paired = dict(conv_batch_norm_pairs(model))
    scaled, skipped_standardized, skipped_unpaired = 0, 0, 0
    for name, conv in modules.items():
        if not isinstance(conv, nn.Conv2d):
            continue
        scale = conv.weight.double().norm().item()
        if scale <= 1.0:
            continue
        norm = modules[paired[name]] if name in paired else None
        if isinstance(conv, StdConv2d):
            skipped_standardized += 1
            continue
        if norm is None or not norm.affine or norm.running_var is None:
            skipped_unpaired += 1
            continue
        for tensor in (conv.weight, conv.bias):
            if tensor is not None:
                tensor.copy_(tensor.double() / scale)
        variance = norm.running_var.double()
        compensation = ((variance + scale**2 * norm.eps) / (variance + norm.eps)).sqrt()
        norm.weight.mul_(compensation.to(norm.weight.dtype))
        norm.running_mean.div_(scale)
        norm.running_var.div_(scale**2)
        scaled += 1
    return (f"weight_scaling=frobenius: {scaled} conv layers with norm > 1 scaled to norm 1, compensated in "
            f"their BatchNorm; skipped {skipped_standardized} weight-standardized and {skipped_unpaired} "
            "without a BatchNorm right after")
