"""BYOL: an online network predicts a slowly moving (EMA) target network's projection.

Grill et al. "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
NeurIPS 2020. https://arxiv.org/abs/2006.07733

Where each default comes from (official code: google-deepmind/deepmind-research, byol/); paper
and code agree on all of them:
- LARS at 0.2 x batch/256, wd 1.5e-6, biases and BatchNorm parameters excluded from both the
  decay and LARS's adaptation (sec. 3.3 and appendix C, and the code's optimizer settings).
- Target decay from 0.996 to 1 on a cosine (sec. 3.3); projector 4096-256, predictor 4096-256.
- The loss: per image, the squared distance of the normalized vectors (2 - 2 cos, eq. 2), summed
  over the two directions and averaged over the batch, as the code computes it.
- The asymmetric augmentation pair of appendix B (table 6).
"""

import copy
import itertools
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from trainables.augmentations import BYOL_VIEW_1, BYOL_VIEW_2
from trainables.methods.base import SSLMethod, StepOutput, ViewSpec, full_precision, projection_mlp
from trainables.number_ranges import Fraction, PositiveInt


@full_precision
def byol_loss(p1: torch.Tensor, p2: torch.Tensor, z1_target: torch.Tensor,
              z2_target: torch.Tensor) -> torch.Tensor:
    """The symmetrized loss L + L~ (BYOL eq. 2 and sec. 3.1), averaged over the batch.

    Per pair, ||normalize(p) - normalize(z')||^2 = 2 - 2 cos(p, z'); the loss is the SUM of the
    two directions (view-1 prediction vs view-2 target and vice versa), so it lies in [0, 8].
    p1, p2: (N, D) online predictions; z1_target, z2_target: (N, D) target projections (the
    gradient is stopped on them).
    """
    first = 2 - 2 * F.cosine_similarity(p1, z2_target.detach(), dim=1)
    second = 2 - 2 * F.cosine_similarity(p2, z1_target.detach(), dim=1)
    return (first + second).mean()


def cosine_momentum(progress: float, base_momentum: float = 0.996) -> float:
    """BYOL's target decay: tau = 1 - (1 - tau_base) (cos(pi progress) + 1) / 2, tau_base -> 1."""
    return 1 - (1 - base_momentum) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def ema_update(target: Iterable[torch.Tensor], online: Iterable[torch.Tensor], momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, for every tensor at once: two
    multi-tensor (`torch._foreach`) kernels per dtype and device, not two launches per parameter."""
    pairs = list(zip(target, online, strict=True))
    if not pairs:
        return
    targets = [target_tensor for target_tensor, _ in pairs]
    torch._foreach_mul_(targets, momentum)
    torch._foreach_add_(targets, [online_tensor.detach() for _, online_tensor in pairs], alpha=1 - momentum)


class BYOL(SSLMethod):
    name = "byol"
    # The paper's LARS values (0.2 x batch/256, wd 1.5e-6). LARS rescales each layer's step, so
    # with optimizer=sgd the best rate can differ: sweep it.
    optimizer = "lars"  # BYOL: LARS, biases and norm parameters excluded
    base_learning_rate = 0.2
    weight_decay = 1.5e-6
    relative_step_cost = 1.33  # the target network's forward pass

    def __init__(self, backbone: nn.Module, feature_dim: int, projection_hidden_dim: PositiveInt = 4096,
                 projection_dim: PositiveInt = 256, predictor_hidden_dim: PositiveInt = 4096,
                 base_momentum: Fraction = 0.996) -> None:
        super().__init__(backbone, feature_dim)
        self.base_momentum = base_momentum
        # Projector and predictor: Linear-BN-ReLU-Linear (BYOL sec. 3.3).
        self.projector = projection_mlp(feature_dim, projection_hidden_dim, projection_dim, num_layers=2)
        self.predictor = projection_mlp(projection_dim, predictor_hidden_dim, projection_dim, num_layers=2)
        # The target network: a copy of backbone + projector, moved only by the EMA.
        self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)

    def views(self, image_size: int) -> list[ViewSpec]:
        """BYOL's asymmetric pair (appendix B, table 6): view 1 always blurred, view 2 rarely blurred
        and sometimes solarized."""
        return [ViewSpec(image_size, BYOL_VIEW_1), ViewSpec(image_size, BYOL_VIEW_2)]

    def online_parameters(self) -> Iterable[torch.Tensor]:
        return itertools.chain(self.backbone.parameters(), self.projector.parameters())

    def target_parameters(self) -> Iterable[torch.Tensor]:
        return itertools.chain(self.target_backbone.parameters(), self.target_projector.parameters())

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z1, z2 = (self.projector(self.backbone(view)) for view in views[:2])
        p1, p2 = self.predictor(z1), self.predictor(z2)
        with torch.no_grad():
            z1_target, z2_target = (self.target_projector(self.target_backbone(view)) for view in views[:2])
        return StepOutput(byol_loss(p1, p2, z1_target, z2_target), z1)

    def after_optimizer_step(self, progress: float) -> None:
        # Parameters only: the target's BatchNorm keeps its own running statistics.
        ema_update(self.target_parameters(), self.online_parameters(),
                   cosine_momentum(progress, self.base_momentum))
