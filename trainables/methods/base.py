"""The interface every SSL method implements.

A method is an `nn.Module` that owns the backbone and its heads. `forward(views)` is one
training step's loss (so DDP wraps the whole method and syncs every trainable parameter);
`after_optimizer_step` is where momentum encoders move.
"""

from typing import ClassVar, NamedTuple

import torch
from torch import nn


class StepOutput(NamedTuple):
    loss: torch.Tensor  # scalar
    embedding: torch.Tensor  # (N, D) projector output of the first view, for the collapse metric


class SSLMethod(nn.Module):
    name: ClassVar[str]
    # Paper defaults for SGD; the trial config can override both.
    base_learning_rate: ClassVar[float]
    weight_decay: ClassVar[float]

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        raise NotImplementedError

    def after_optimizer_step(self, progress: float) -> None:
        """Called after every optimizer step with progress = step / total_steps in [0, 1]."""


def projection_mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2,
                   last_batch_norm: bool = False) -> nn.Sequential:
    """Linear-BN-ReLU layers then a final Linear (optionally followed by BN without affine)."""
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=not last_batch_norm))
    if last_batch_norm:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)
