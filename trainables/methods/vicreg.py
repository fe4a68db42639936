"""VICReg: invariance between views, plus variance and covariance regularization of each view.

Bardes, Ponce, LeCun. "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022. https://arxiv.org/abs/2105.04906

Where each default comes from: the loss weights (25, 25, 1), the 3-layer expander, LARS at
0.2 x batch/256 with weight decay 1e-6 are both the paper's (sec. 4.2) and the official code's
(facebookresearch/vicreg, main_vicreg.py). The variance term follows the official code, which
averages the two branches' hinge terms (`/ 2` each); the paper's Algorithm 1 sums them, which
doubles the effective variance weight: `halve_variance=False` is that reading.
"""

import torch
import torch.nn.functional as F
from torch import nn

from trainables.augmentations import BYOL_VIEW_1, BYOL_VIEW_2
from trainables.distributed import gather_with_grad
from trainables.methods.base import SSLMethod, StepOutput, ViewSpec, full_precision, projection_mlp
from trainables.number_ranges import NonNegativeFloat, PositiveInt


def off_diagonal_square_sum(matrix: torch.Tensor) -> torch.Tensor:
    return matrix.pow(2).sum() - torch.diagonal(matrix).pow(2).sum()


@full_precision
def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, invariance_weight: float = 25.0,
                variance_weight: float = 25.0, covariance_weight: float = 1.0,
                halve_variance: bool = True) -> torch.Tensor:
    """lambda s + mu v + nu c, as the official code computes it (Algorithm 1 with halve_variance=False).

    z1, z2: (N, D) expander outputs of the two views (the whole global batch).
    s: mean squared error over all N x D entries.
    v: (mean_d relu(1 - sqrt(Var(z1_d) + 1e-4)) + the same for z2) / 2 (unbiased variance; the
       official code halves the sum of the two branches, Algorithm 1 does not).
    c: sum of squared off-diagonal entries of the (D, D) covariance (divided by N - 1), / D,
       summed over the two branches.
    """
    count, dim = z1.shape
    invariance = F.mse_loss(z1, z2)
    std1, std2 = torch.sqrt(z1.var(dim=0) + 1e-4), torch.sqrt(z2.var(dim=0) + 1e-4)
    variance = F.relu(1 - std1).mean() + F.relu(1 - std2).mean()
    if halve_variance:
        variance = variance / 2
    z1, z2 = z1 - z1.mean(dim=0), z2 - z2.mean(dim=0)
    covariance1, covariance2 = z1.T @ z1 / (count - 1), z2.T @ z2 / (count - 1)
    covariance = off_diagonal_square_sum(covariance1) / dim + off_diagonal_square_sum(covariance2) / dim
    return invariance_weight * invariance + variance_weight * variance + covariance_weight * covariance


class VICReg(SSLMethod):
    name = "vicreg"
    # The paper's LARS values (0.2 x batch/256, wd 1e-6). LARS rescales each layer's step, so
    # with optimizer=sgd the best rate can differ: sweep it.
    optimizer = "lars"  # VICReg: LARS, biases and norm parameters excluded
    base_learning_rate = 0.2
    weight_decay = 1e-6
    relative_step_cost = 1.0

    def __init__(self, backbone: nn.Module, feature_dim: int, projection_hidden_dim: PositiveInt = 8192,
                 projection_dim: PositiveInt = 8192, invariance_weight: NonNegativeFloat = 25.0,
                 variance_weight: NonNegativeFloat = 25.0, covariance_weight: NonNegativeFloat = 1.0,
                 halve_variance: bool = True) -> None:
        super().__init__(backbone, feature_dim)
        self.weights = (invariance_weight, variance_weight, covariance_weight)
        self.halve_variance = halve_variance
        # The expander: 3 linear layers, BN + ReLU after the first two (paper sec. 4.2). The last
        # layer's bias (the official code has none) cancels in every term of the loss.
        self.projector = projection_mlp(feature_dim, projection_hidden_dim, projection_dim, num_layers=3)

    def views(self, image_size: int) -> list[ViewSpec]:
        """BYOL's asymmetric pair, which VICReg follows (appendix on augmentations, augmentations.py)."""
        return [ViewSpec(image_size, BYOL_VIEW_1), ViewSpec(image_size, BYOL_VIEW_2)]

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z1, z2 = (self.projector(self.backbone(view)) for view in views[:2])
        # All three terms over the global batch (as the official code): every worker computes the
        # one-worker loss, and the summed all-gather gradient averaged by DDP is its gradient.
        loss = vicreg_loss(gather_with_grad(z1), gather_with_grad(z2), *self.weights,
                           halve_variance=self.halve_variance)
        return StepOutput(loss, z1)
