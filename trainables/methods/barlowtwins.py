"""Barlow Twins: make the cross-correlation of the two views' embeddings the identity matrix.

Zbontar, Jing, Misra, LeCun, Deny. "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction", ICML 2021. https://arxiv.org/abs/2103.03230

Where each default comes from (official code: facebookresearch/barlowtwins, main.py):
- lambda 0.0051, the 8192-8192-8192 projector, LARS at 0.2 x batch/256 for weights: paper and code.
- Standardization: the official code's BatchNorm1d(affine=False) in training mode, i.e. the
  biased batch variance plus eps 1e-5; the paper's pseudo-code divides by the unbiased std
  (`standardization="unbiased"` is that reading; 2% apart at batch 128, more at smaller batches).
- Biases and BatchNorm parameters learn at 0.0048 / 0.2 = 0.024 of the weights' rate (code and
  paper): `bias_learning_rate_ratio`, applied by the loop to the LARS group of biases and norms.
- Weight decay 1e-6: the official code's default (`--weight-decay`); the paper says 1.5e-6
  (`--set weight_decay=1.5e-6`).
"""

import typing
from typing import Literal

import torch
from torch import nn

from trainables.augmentations import BYOL_VIEW_1, BYOL_VIEW_2
from trainables.distributed import all_reduce_with_grad, world_size
from trainables.methods.base import SSLMethod, StepOutput, ViewSpec, full_precision, projection_mlp
from trainables.number_ranges import NonNegativeFloat, PositiveInt

Standardization = Literal["batchnorm", "unbiased"]
STANDARDIZATIONS: tuple[str, ...] = typing.get_args(Standardization)
BATCHNORM_EPSILON = 1e-5  # nn.BatchNorm1d's default, which the official code uses


def unknown_standardization(name: str) -> ValueError:
    return ValueError(f"unknown standardization {name!r}; valid: {', '.join(STANDARDIZATIONS)}")


def standardize(z: torch.Tensor, standardization: str, count: int | None = None) -> torch.Tensor:
    """Each column of this process's z (N, D) centred and scaled over the global batch of `count`
    rows (all processes; default: this process's N, on one process the same).

    "batchnorm": (z - mean) / sqrt(biased variance + 1e-5), what BatchNorm1d(affine=False)
    (SyncBatchNorm in the official code) computes in training mode; "unbiased": (z - mean) /
    unbiased std (the paper's pseudo-code).
    """
    count = z.shape[0] if count is None else count
    centred = z - all_reduce_with_grad(z.sum(dim=0)) / count
    squares = all_reduce_with_grad(centred.pow(2).sum(dim=0))
    if standardization == "batchnorm":
        return centred / torch.sqrt(squares / count + BATCHNORM_EPSILON)
    if standardization == "unbiased":
        return centred / torch.sqrt(squares / (count - 1))
    raise unknown_standardization(standardization)


@full_precision
def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, off_diagonal_weight: float = 0.0051,
                      standardization: str = "batchnorm") -> torch.Tensor:
    """sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2 (Barlow Twins eq. 1 and Algorithm 1).

    z1, z2: (N, D) embeddings of the two views of this process's N images (each process the same N).
    Each dimension is standardized over the batch (see `standardize`: BatchNorm's biased
    variance + eps by default, as the official code) and C = z1n.T @ z2n / N is (D, D).
    """
    count = z1.shape[0] * world_size()  # every process the same rows (the loop's equal shards)
    z1n, z2n = standardize(z1, standardization, count), standardize(z2, standardization, count)
    # As the official code: each process multiplies its own rows, then the (D, D) sums are
    # all-reduced, instead of every process multiplying the gathered global batch.
    correlation = all_reduce_with_grad(z1n.T @ z2n) / count
    diagonal = torch.diagonal(correlation)
    on_diagonal = (1 - diagonal).pow(2).sum()
    off_diagonal = correlation.pow(2).sum() - diagonal.pow(2).sum()
    return on_diagonal + off_diagonal_weight * off_diagonal


class BarlowTwins(SSLMethod):
    name = "barlowtwins"
    # The official LARS values (0.2 x batch/256 for weights, wd 1e-6). LARS rescales each layer's
    # step, so with optimizer=sgd the best rate can differ: sweep it.
    optimizer = "lars"  # Barlow Twins: LARS, biases and norm parameters excluded
    base_learning_rate = 0.2
    weight_decay = 1e-6
    relative_step_cost = 1.0

    def __init__(self, backbone: nn.Module, feature_dim: int, projection_hidden_dim: PositiveInt = 8192,
                 projection_dim: PositiveInt = 8192, off_diagonal_weight: NonNegativeFloat = 0.0051,
                 standardization: Standardization = "batchnorm",
                 bias_learning_rate_ratio: NonNegativeFloat = 0.0048 / 0.2) -> None:
        super().__init__(backbone, feature_dim)
        if standardization not in STANDARDIZATIONS:
            raise unknown_standardization(standardization)
        self.off_diagonal_weight = off_diagonal_weight
        self.standardization = standardization
        self.bias_and_norm_learning_rate_ratio = bias_learning_rate_ratio
        # 3 linear layers, BN + ReLU after the first two (paper sec. 4). The last layer's bias
        # (the paper has none) cancels in the standardization.
        self.projector = projection_mlp(feature_dim, projection_hidden_dim, projection_dim, num_layers=3)

    def views(self, image_size: int) -> list[ViewSpec]:
        """BYOL's asymmetric pair ("the same augmentation parameters as BYOL", implementation details)."""
        return [ViewSpec(image_size, BYOL_VIEW_1), ViewSpec(image_size, BYOL_VIEW_2)]

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z1, z2 = (self.projector(self.backbone(view)) for view in views[:2])
        # Statistics and C over the global batch, from all-reduced local sums: every worker
        # computes the one-worker loss, and the summed gradients of the all-reduces, averaged by
        # DDP, are the one-worker gradient.
        loss = barlow_twins_loss(z1, z2, self.off_diagonal_weight, self.standardization)
        return StepOutput(loss, z1)
