"""Barlow Twins: make the cross-correlation of the two views' embeddings the identity matrix.

Zbontar, Jing, Misra, LeCun, Deny. "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction", ICML 2021. https://arxiv.org/abs/2103.03230
"""

import torch
from torch import nn

from trainables.augmentations import BYOL_VIEW_1, BYOL_VIEW_2
from trainables.distributed import gather_with_grad
from trainables.methods.base import SSLMethod, StepOutput, ViewSpec, full_precision, projection_mlp


@full_precision
def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor,
                      off_diagonal_weight: float = 0.0051) -> torch.Tensor:
    """sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2 (Barlow Twins eq. 1 and Algorithm 1).

    z1, z2: (N, D) embeddings of the two views of the same N images (the whole global batch).
    Each dimension is standardized over the batch, (z - mean) / std with the unbiased std as in
    the paper's pseudo-code, and C = z1n.T @ z2n / N is (D, D).
    """
    count = z1.shape[0]
    z1n = (z1 - z1.mean(dim=0)) / z1.std(dim=0)
    z2n = (z2 - z2.mean(dim=0)) / z2.std(dim=0)
    correlation = z1n.T @ z2n / count
    diagonal = torch.diagonal(correlation)
    on_diagonal = (1 - diagonal).pow(2).sum()
    off_diagonal = correlation.pow(2).sum() - diagonal.pow(2).sum()
    return on_diagonal + off_diagonal_weight * off_diagonal


class BarlowTwins(SSLMethod):
    name = "barlowtwins"
    # The paper's LARS values (0.2 x batch/256 for weights, wd 1.5e-6). LARS rescales each layer's
    # step, so with optimizer=sgd the best rate can differ: sweep it.
    optimizer = "lars"  # Barlow Twins: LARS, biases and norm parameters excluded
    base_learning_rate = 0.2
    weight_decay = 1.5e-6

    def __init__(self, backbone: nn.Module, feature_dim: int, projection_hidden_dim: int = 8192,
                 projection_dim: int = 8192, off_diagonal_weight: float = 0.0051) -> None:
        super().__init__(backbone, feature_dim)
        self.off_diagonal_weight = off_diagonal_weight
        # 3 linear layers, BN + ReLU after the first two (paper sec. 4). The last layer's bias
        # (the paper has none) cancels in the standardization.
        self.projector = projection_mlp(feature_dim, projection_hidden_dim, projection_dim, num_layers=3)

    def views(self, image_size: int) -> list[ViewSpec]:
        """BYOL's asymmetric pair ("the same augmentation parameters as BYOL", implementation details)."""
        return [ViewSpec(image_size, BYOL_VIEW_1), ViewSpec(image_size, BYOL_VIEW_2)]

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z1, z2 = (self.projector(self.backbone(view)) for view in views[:2])
        # Statistics and C over the global batch: every worker computes the one-worker loss, and
        # the summed gradient of the all-gather, averaged by DDP, is the one-worker gradient.
        loss = barlow_twins_loss(gather_with_grad(z1), gather_with_grad(z2), self.off_diagonal_weight)
        return StepOutput(loss, z1)
