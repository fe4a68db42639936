"""Collectives the SSL losses need, written so they are identities on one process."""

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as distributed_functional


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
