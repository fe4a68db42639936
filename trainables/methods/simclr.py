"""SimCLR: contrast two views of each image against every other image in the global batch.

Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020. https://arxiv.org/abs/2002.05709

Where each default comes from (official code: google-research/simclr, run.py and README):
- Temperature 0.1: the official code's default and the paper's ImageNet setting; on images of at
  most 64 px (CIFAR-scale), 0.5, the paper's CIFAR-10 setting (appendix B.9) and the official
  README's CIFAR-10 command. `run_defaults` picks by the trial's image size; method_params'
  `temperature` overrides it.
- The 2-layer projection head to 128 dimensions, LARS at 0.3 x batch/256, wd 1e-6: the paper
  (the official README's CIFAR-10 command uses wd 1e-4).
"""

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainables.augmentations import SIMCLR_RECIPE
from trainables.distributed import gather_with_grad, rank
from trainables.methods.base import RunShape, SSLMethod, StepOutput, ViewSpec, full_precision, projection_mlp
from trainables.number_ranges import PositiveFloat, PositiveInt

CIFAR_SCALE_PIXELS = 64  # images at most this wide get the paper's CIFAR-10 temperature


@full_precision
def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5,
                 rank_offset: int = 0, global_z1: torch.Tensor | None = None,
                 global_z2: torch.Tensor | None = None) -> torch.Tensor:
    """Normalized-temperature cross entropy (SimCLR eq. 1), averaged over the 2N anchors.

    z1, z2: (N, D) projections of the two views of this process's images.
    global_z1, global_z2: (N_global, D) the same for the whole global batch (default: z1, z2);
    rank_offset: index of this process's first image in the global batch. Each anchor's
    positive is its other view; the other 2N_global - 2 embeddings are negatives.
    """
    global_z1 = z1 if global_z1 is None else global_z1
    global_z2 = z2 if global_z2 is None else global_z2
    anchors = F.normalize(torch.cat([z1, z2]), dim=1)
    candidates = F.normalize(torch.cat([global_z1, global_z2]), dim=1)
    local, global_count = z1.shape[0], global_z1.shape[0]
    logits = anchors @ candidates.T / temperature
    own = torch.arange(local, device=z1.device) + rank_offset
    self_index = torch.cat([own, own + global_count])
    positive_index = torch.cat([own + global_count, own])
    # index_put_ of a device scalar, not `= float("-inf")`, which makes a tensor from a Python number
    logits.index_put_((torch.arange(2 * local, device=z1.device), self_index), logits.new_full((), -math.inf))
    return F.cross_entropy(logits, positive_index)


class SimCLR(SSLMethod):
    name = "simclr"
    optimizer = "lars"  # SimCLR: LARS, biases and norm parameters excluded
    base_learning_rate = 0.3  # SimCLR: 0.3 x batch/256
    weight_decay = 1e-6
    relative_step_cost = 1.0

    def __init__(self, backbone: nn.Module, feature_dim: int, projection_dim: PositiveInt = 128,
                 projection_hidden_dim: PositiveInt = 2048, temperature: PositiveFloat = 0.1) -> None:
        super().__init__(backbone, feature_dim)
        self.temperature = temperature
        self.projector = projection_mlp(feature_dim, projection_hidden_dim, projection_dim, num_layers=2)

    @classmethod
    def run_defaults(cls, run: RunShape, params: dict[str, Any]) -> dict[str, Any]:
        """Temperature 0.5 on CIFAR-scale images (at most 64 px), else the ImageNet 0.1."""
        return {"temperature": 0.5} if run.image_size <= CIFAR_SCALE_PIXELS else {}

    def views(self, image_size: int) -> list[ViewSpec]:
        """Two views with SimCLR's recipe (appendix A): colour distortion strength 1, blur p 0.5."""
        return [ViewSpec(image_size, SIMCLR_RECIPE)] * 2

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z1, z2 = (self.projector(self.backbone(view)) for view in views[:2])
        global_z1, global_z2 = gather_with_grad(z1), gather_with_grad(z2)
        loss = nt_xent_loss(z1, z2, self.temperature, rank() * z1.shape[0], global_z1, global_z2)
        return StepOutput(loss, z1)
