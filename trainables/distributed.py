"""Collectives the SSL losses need, written so they are identities on one process."""

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


def convert_batchnorm_for_distributed(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm with one whose statistics span all processes.

    SyncBatchNorm on GPUs; GlobalBatchNorm on CPUs. Parameters and buffers are kept.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    converted = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        converted = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                    module.track_running_stats)
        converted.load_state_dict(module.state_dict())
        converted.train(module.training)
        if module.affine:
            converted.weight.requires_grad_(module.weight.requires_grad)
            converted.bias.requires_grad_(module.bias.requires_grad)
    for name, child in module.named_children():
        converted.add_module(name, convert_batchnorm_for_distributed(child, device))
    return converted
