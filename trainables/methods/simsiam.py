"""SimSiam: predict one view's projection from the other's, with a stop-gradient.

Chen, He. "Exploring Simple Siamese Representation Learning", CVPR 2021.
https://arxiv.org/abs/2011.10566

Where each default comes from (official code: facebookresearch/simsiam, main_simsiam.py and its
README's command); paper and code agree on all of them:
- SGD at 0.05 x batch/256, momentum 0.9, wd 1e-4, cosine decay; the predictor's rate kept fixed
  (the README's `--fix-pred-lr`, paper sec. 4.1).
- The 3-layer 2048-d projector whose Linear layers before a BatchNorm have no bias and whose last
  BatchNorm has no affine parameters (the code freezes that Linear's bias, which the BatchNorm
  cancels), and the 2048-512-2048 bottleneck predictor (sec. 4.4).
- Two views of MoCo v2's augmentation recipe (implementation details).
"""

import torch
import torch.nn.functional as F
from torch import nn

from trainables.augmentations import MOCO_V2_RECIPE
from trainables.methods.base import HeadNorm, SSLMethod, StepOutput, ViewSpec, full_precision, projection_mlp
from trainables.number_ranges import PositiveInt


def negative_cosine_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) = -cos(p, stopgrad(z)), averaged over the batch. p, z: (N, D)."""
    return -F.cosine_similarity(p, z.detach(), dim=1).mean()


@full_precision
def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """The symmetrized loss L = D(p1, z2)/2 + D(p2, z1)/2 (SimSiam eq. 2). All (N, D)."""
    return 0.5 * negative_cosine_loss(p1, z2) + 0.5 * negative_cosine_loss(p2, z1)


class SimSiam(SSLMethod):
    name = "simsiam"
    base_learning_rate = 0.05  # SimSiam: 0.05 x batch/256, SGD momentum 0.9
    weight_decay = 1e-4
    relative_step_cost = 1.0
    # "Fix lr for predictor": its learning rate does not decay (sec. 4.1, the released recipe).
    constant_learning_rate_modules = ("predictor",)

    def __init__(self, backbone: nn.Module, feature_dim: int, projection_dim: PositiveInt = 2048,
                 predictor_hidden_dim: PositiveInt = 512, head_norm: HeadNorm = "batchnorm") -> None:
        super().__init__(backbone, feature_dim)
        # 3-layer projector, BN on the output (SimSiam sec. 4.4); bottleneck predictor.
        # head_norm="groupnorm" puts GroupNorm in the heads too: the BiT + SimSiam study (Lu et
        # al.) does not say whether its GroupNorm variant stopped at the backbone.
        self.projector = projection_mlp(feature_dim, projection_dim, projection_dim,
                                        num_layers=3, last_batch_norm=True, norm=head_norm)
        self.predictor = projection_mlp(projection_dim, predictor_hidden_dim, projection_dim, num_layers=2,
                                        norm=head_norm)

    def views(self, image_size: int) -> list[ViewSpec]:
        """Two views with MoCo v2's recipe, as SimSiam's implementation details say."""
        return [ViewSpec(image_size, MOCO_V2_RECIPE)] * 2

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z1, z2 = (self.projector(self.backbone(view)) for view in views[:2])
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return StepOutput(simsiam_loss(p1, p2, z1, z2), z1)
