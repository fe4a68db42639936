"""Activation checkpointing: keep fewer activations for the backward pass, recompute the rest.

Every registered backbone has timm's `set_grad_checkpointing` (`CBRNetwork` mirrors it): each
block keeps only its input during the forward pass and runs again inside the backward pass. That
trades about one extra forward pass of compute for most of the activation memory, and it is what
lets a trial whose batch does not fit a GPU run at all (orchestrator/memory.py decides when).

A recomputed block would update its BatchNorm running statistics a second time in the same step
(the momentum would act twice). `enable_activation_checkpointing` stops that: a BatchNorm whose
forward runs inside the backward pass runs with momentum 0, which leaves its running statistics
as they were (its batch statistics, and so the saved tensors, are unchanged, as checkpointing
requires). Gradients and running statistics are then those of the same step without checkpointing.
"""

import torch
from torch import nn

from trainables.backbones import CBRNetwork

# Where a recomputation keeps a BatchNorm's momentum and batch count, to put them back after it.
_KEPT = "_kept_during_recomputation"


def enable_activation_checkpointing(backbone: nn.Module) -> None:
    """Checkpoint `backbone` block by block (timm's `set_grad_checkpointing` interface)."""
    if not hasattr(backbone, "set_grad_checkpointing"):
        raise ValueError(f"{type(backbone).__name__} has no set_grad_checkpointing; "
                         "activation checkpointing needs the timm interface")
    backbone.set_grad_checkpointing(True)
    for module in backbone.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.register_forward_pre_hook(_statistics_off_when_recomputing)
            module.register_forward_hook(_statistics_back_on)


def checkpoint_segments(backbone: nn.Module) -> list[nn.Module]:
    """The blocks checkpointing recomputes one at a time in the backward pass (each keeps only its
    input in the forward pass): CBR blocks, timm ResNet blocks, timm ResNetV2 (BiT) blocks."""
    if isinstance(backbone, CBRNetwork):
        return list(backbone.blocks)
    if hasattr(backbone, "layer4"):  # timm ResNet: checkpoint_seq over layer1..4, flattened
        return [block for layer in (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4)
                for block in layer]
    if hasattr(backbone, "stages"):  # timm ResNetV2: each stage checkpoints its blocks
        return [block for stage in backbone.stages for block in stage.blocks]
    raise ValueError(f"do not know the checkpointed blocks of {type(backbone).__name__}")


def inside_backward_pass() -> bool:
    """True while the autograd engine runs a backward pass (where checkpointing recomputes)."""
    return torch._C._current_graph_task_id() != -1


def _statistics_off_when_recomputing(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
    if module.training and module.track_running_stats and inside_backward_pass():
        batches = module.num_batches_tracked
        setattr(module, _KEPT, (module.momentum, None if batches is None else batches.clone()))
        module.momentum = 0.0  # running <- (1 - 0) * running + 0 * batch: unchanged


def _statistics_back_on(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
    kept = getattr(module, _KEPT, None)
    if kept is not None:
        module.momentum, batches = kept
        if batches is not None:
            module.num_batches_tracked.copy_(batches)
        setattr(module, _KEPT, None)
