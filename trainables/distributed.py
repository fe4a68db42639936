"""Collectives the SSL losses need, written so they are identities on one process."""

import timm.layers
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as distributed_functional
from torch import nn


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every process along dim 0, keeping the autograd graph.

    Contrastive negatives must come from the global batch; the backward pass of this all-gather
    sends each process the gradient of its own slice.
    """
    if world_size() == 1:
        return tensor
    return torch.cat(distributed_functional.all_gather(tensor), dim=0)


def all_reduce_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes, keeping the autograd graph (the backward pass sums the gradients)."""
    if world_size() == 1:
        return tensor
    return distributed_functional.all_reduce(tensor)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes (no gradient): for global statistics such as counts."""
    if world_size() > 1:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
    return tensor


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose batch statistics span every process, with gradients through them.

    torch's SyncBatchNorm runs only on GPUs; this is its CPU (gloo) counterpart, so N CPU
    workers compute what one worker computes on the concatenated batch. Two-pass statistics
    (mean, then squared deviations) for fp32 accuracy.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(input)
        reduce_dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = all_reduce_sum(torch.tensor(float(input.numel() // input.shape[1]), device=input.device))
        mean = distributed_functional.all_reduce(input.sum(dim=reduce_dims)) / count
        centered = input - mean.view(shape)
        variance = distributed_functional.all_reduce((centered * centered).sum(dim=reduce_dims)) / count
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                momentum = self.momentum if self.momentum is not None else 0.1
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(variance.detach() * count / (count - 1), momentum)
                self.num_batches_tracked += 1
        output = centered / torch.sqrt(variance.view(shape) + self.eps)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        return output


class GlobalBatchNormAct(GlobalBatchNorm):
    """GlobalBatchNorm followed by the dropout and activation of the timm `BatchNormAct2d` it
    replaces (timm's SyncBatchNormAct, for CPUs): the fused activation must survive conversion."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(input)))


class LocalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Plain, process-local BatchNorm of any input rank: what a SyncBatchNorm or GlobalBatchNorm
    becomes in a copy that one process trains alone (rank 0's fine-tuning)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")


def convert_batchnorm_for_distributed(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm with one whose statistics span all processes; parameters, buffers
    and timm's fused activations (`BatchNormAct2d`'s act and drop) are kept.

    GPUs: timm's convert_sync_batchnorm (SyncBatchNorm, SyncBatchNormAct for norm-act layers;
    torch's own converter would drop the activation). CPUs: GlobalBatchNorm / GlobalBatchNormAct.
    """
    if device.type == "cuda":
        return timm.layers.convert_sync_batchnorm(module)

    def global_counterpart(norm: nn.modules.batchnorm._BatchNorm) -> nn.Module:
        if isinstance(norm, GlobalBatchNorm):
            return norm
        return _rebuilt(norm, GlobalBatchNormAct if _has_fused_activation(norm) else GlobalBatchNorm)

    return _replace_batchnorms(module, global_counterpart)


def convert_batchnorm_to_local(module: nn.Module) -> nn.Module:
    """The inverse of convert_batchnorm_for_distributed: every SyncBatchNorm / GlobalBatchNorm
    becomes a process-local BatchNorm with the same parameters, running statistics and fused
    activation (timm's BatchNormAct2d where there is one). A copy that only one process trains
    must use these: the distributed ones wait in train mode for processes that never join."""

    def local_counterpart(norm: nn.modules.batchnorm._BatchNorm) -> nn.Module:
        if not isinstance(norm, nn.SyncBatchNorm | GlobalBatchNorm):
            return norm
        if _has_fused_activation(norm):
            return _rebuilt(norm, timm.layers.BatchNormAct2d)
        return _rebuilt(norm, LocalBatchNorm)

    return _replace_batchnorms(module, local_counterpart)


def _has_fused_activation(norm: nn.Module) -> bool:
    return isinstance(norm, timm.layers.BatchNormAct2d | timm.layers.SyncBatchNormAct | GlobalBatchNormAct)


def _rebuilt(norm: nn.modules.batchnorm._BatchNorm, kind: type) -> nn.Module:
    """A `kind` BatchNorm holding `norm`'s parameters, buffers, mode and requires_grad flags, and
    its `drop` and `act` children where it has them."""
    rebuilt = kind(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
    rebuilt = rebuilt.to(device=norm.weight.device if norm.affine else None)
    for name in ("drop", "act"):
        if hasattr(norm, name):
            setattr(rebuilt, name, getattr(norm, name))
    for name, parameter in norm.named_parameters(recurse=False):
        setattr(rebuilt, name, parameter)
    for name, buffer in norm.named_buffers(recurse=False):
        setattr(rebuilt, name, buffer)
    rebuilt.train(norm.training)
    return rebuilt


def _replace_batchnorms(module: nn.Module, counterpart) -> nn.Module:
    converted = counterpart(module) if isinstance(module, nn.modules.batchnorm._BatchNorm) else module
    for name, child in list(converted.named_children()):
        if name in ("drop", "act") and converted is not module:
            continue  # a norm-act layer's own children, carried over as they are
        converted.add_module(name, _replace_batchnorms(child, counterpart))
    return converted
