"""SwAV: predict one view's cluster assignment (codes) from another view's features.

Caron et al. "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments",
NeurIPS 2020. https://arxiv.org/abs/2006.09882
"""

import torch
import torch.nn.functional as F
from torch import nn

from trainables.augmentations import SWAV_RECIPE, SWAV_SMALL_CROP_RECIPE
from trainables.distributed import all_reduce_sum
from trainables.methods.base import SSLMethod, StepOutput, ViewSpec, full_precision, projection_mlp


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Equal-partition soft codes Q from prototype scores (SwAV Algorithm 1 / appendix A.1).

    scores: (B, K) prototype scores of this process's B samples. The row and column sums are
    taken over the global batch (all processes), so N workers compute what one worker computes
    on the concatenated batch. Returns (B, K) codes whose rows sum to 1.
    """
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    q = torch.exp(scores / epsilon).T  # (K, B)
    batch_size = all_reduce_sum(torch.tensor(float(q.shape[1]), device=q.device))
    num_prototypes = q.shape[0]
    q /= all_reduce_sum(q.sum())
    for _ in range(iterations):
        q /= all_reduce_sum(q.sum(dim=1, keepdim=True))  # each prototype gets 1/K of the mass
        q /= num_prototypes
        q /= q.sum(dim=0, keepdim=True)  # each sample gets 1/B of the mass
        q /= batch_size
    return (q * batch_size).T


@full_precision
def swapped_prediction_loss(scores: list[torch.Tensor], codes: list[torch.Tensor],
                            temperature: float = 0.1) -> torch.Tensor:
    """SwAV's loss: every view predicts the codes of every *other* assigned view (eq. 1).

    scores: per view (B, K) prototype scores (all crops, global first); codes: per assigned
    (global) view, (B, K) Sinkhorn codes. Averaged over pairs and samples.
    """
    total, pairs = scores[0].new_zeros(()), 0
    for code_index, code in enumerate(codes):
        for view_index, view_scores in enumerate(scores):
            if view_index == code_index:
                continue
            log_probabilities = F.log_softmax(view_scores / temperature, dim=1)
            total = total - (code * log_probabilities).sum(dim=1).mean()
            pairs += 1
    return total / pairs


class SwAV(SSLMethod):
    name = "swav"
    optimizer = "lars"  # SwAV: LARS, biases and norm parameters excluded
    base_learning_rate = 0.6  # SwAV: LARS 0.6 x batch/256 at batch 256 (4.8 at 4096)
    weight_decay = 1e-6

    def __init__(self, backbone: nn.Module, feature_dim: int, projection_hidden_dim: int = 2048,
                 projection_dim: int = 128, num_prototypes: int = 3000, temperature: float = 0.1,
                 sinkhorn_epsilon: float = 0.05, sinkhorn_iterations: int = 3, num_small_crops: int = 6,
                 freeze_prototypes_epochs: int = 1, queue_length: int = 0) -> None:
        super().__init__(backbone, feature_dim)
        self.temperature = temperature
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.sinkhorn_iterations = sinkhorn_iterations
        self.num_small_crops = num_small_crops
        self.freeze_prototypes_epochs = freeze_prototypes_epochs
        self.projector = projection_mlp(feature_dim, projection_hidden_dim, projection_dim, num_layers=2)
        self.prototypes = nn.Linear(projection_dim, num_prototypes, bias=False)
        # The optional queue keeps earlier batches' embeddings of each global view, so Sinkhorn
        # has enough samples to spread over many prototypes when batches are small (sec. 4.2).
        self.register_buffer("queue", torch.zeros(2, queue_length, projection_dim))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))

    def views(self, image_size: int) -> list[ViewSpec]:
        """2 global crops (224 px, scale 0.14-1) + N small (96 px, scale 0.05-0.14), scaled to the
        image, all with SimCLR's colour distortion and blur (appendix A, main_swav.py)."""
        small_size = max(8, round(image_size * 96 / 224))
        global_views = [ViewSpec(image_size, SWAV_RECIPE)] * 2
        return global_views + [ViewSpec(small_size, SWAV_SMALL_CROP_RECIPE)] * self.num_small_crops

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        self.normalize_prototypes()
        embeddings = [F.normalize(self.projector(self.backbone(view)), dim=1) for view in views]
        scores = [self.prototypes(embedding) for embedding in embeddings]
        codes = [self.assign(index, embeddings[index], scores[index]) for index in range(2)]
        loss = swapped_prediction_loss(scores, codes, self.temperature)
        return StepOutput(loss, embeddings[0])

    def assign(self, view_index: int, embedding: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Sinkhorn codes of a global view, using the queue when it is full."""
        scores = scores.detach()
        queue_length = self.queue.shape[1]
        if queue_length > 0 and self.training:
            if self.queue_filled >= queue_length:
                queued_scores = self.prototypes(self.queue[view_index]).detach()
                codes = sinkhorn_knopp(torch.cat([scores, queued_scores]), self.sinkhorn_epsilon,
                                       self.sinkhorn_iterations)
                codes = codes[: scores.shape[0]]
            else:
                codes = sinkhorn_knopp(scores, self.sinkhorn_epsilon, self.sinkhorn_iterations)
            self.enqueue(view_index, embedding.detach())
            return codes
        return sinkhorn_knopp(scores, self.sinkhorn_epsilon, self.sinkhorn_iterations)

    @torch.no_grad()
    def enqueue(self, view_index: int, embedding: torch.Tensor) -> None:
        # Per process, as in the official code: Sinkhorn's all-reduce then spans every queue.
        keys = embedding[: self.queue.shape[1]]
        self.queue[view_index] = torch.cat([keys, self.queue[view_index, : -len(keys)]])
        if view_index == 1:
            self.queue_filled += len(keys)

    def before_optimizer_step(self, epoch: int) -> None:
        # The prototypes stay fixed during the first epoch(s): this helps optimization (sec. B.1).
        if epoch <= self.freeze_prototypes_epochs:
            self.prototypes.weight.grad = None
