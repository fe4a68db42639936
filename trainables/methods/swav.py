"""SwAV: predict one view's cluster assignment (codes) from another view's features.

Caron et al. "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments",
NeurIPS 2020. https://arxiv.org/abs/2006.09882

Where each default comes from (official code: facebookresearch/swav, main_swav.py and scripts/):
- 3000 prototypes, temperature 0.1, Sinkhorn epsilon 0.05 with 3 iterations, 2 + 6 multi-crop,
  LARS at 0.6 x batch/256 (4.8 at 4096), wd 1e-6: paper and code.
- The queue: the official batch-256 recipes (swav_200ep_bs256 / swav_400ep_bs256) keep 3840
  embeddings from epoch 15; the batch-4096 recipes use none. The paper's reason (sec. 3.1):
  Sinkhorn cannot spread a batch equally over K prototypes when the batch is much smaller than K,
  so earlier batches' embeddings join the assignment ("around 3K features, in the same range as
  the number of prototypes"). Fitted to each run by `run_defaults` (see there) unless
  queue_length / queue_start_epoch are given; queue_length=0 is SwAV without a queue.
- The queue is global, as in the official code: each of W workers keeps queue_length / W.
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainables.augmentations import SWAV_RECIPE, SWAV_SMALL_CROP_RECIPE
from trainables.distributed import all_reduce_sum, world_size
from trainables.methods.base import RunShape, SSLMethod, StepOutput, ViewSpec, full_precision, projection_mlp
from trainables.number_ranges import NonNegativeInt, PositiveFloat, PositiveInt

# The official batch-256 recipe: 256 + 3840 = 4096 samples per Sinkhorn assignment for 3000
# prototypes, the queue starting after 15 of 200 epochs.
OFFICIAL_SAMPLES, OFFICIAL_PROTOTYPES = 4096, 3000
OFFICIAL_QUEUE_START_FRACTION = 15 / 200


def fitted_queue_length(batch_size: int, num_prototypes: int) -> int:
    """The queue for a global batch: none when the batch alone has at least as many samples as
    there are prototypes (the official batch-4096 recipes); else the fewest whole batches that
    give Sinkhorn the official recipe's samples per prototype (3840 at batch 256, 3000 prototypes)."""
    if batch_size >= num_prototypes:
        return 0
    samples = -(-OFFICIAL_SAMPLES * num_prototypes // OFFICIAL_PROTOTYPES)  # rounded up
    return -(-(samples - batch_size) // batch_size) * batch_size


def fitted_queue_start_epoch(epochs: int) -> int:
    """15 epochs (official) in runs of 200 or more; else the same 7.5% of the run, at least the
    first epoch (whose prototypes are frozen anyway)."""
    return min(15, max(1, round(epochs * OFFICIAL_QUEUE_START_FRACTION)))


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Equal-partition soft codes Q from prototype scores (SwAV Algorithm 1 / appendix A.1).

    scores: (B, K) prototype scores of this process's B samples, every process the same B (the
    loop's equal shards). The row and column sums are taken over the global batch (all
    processes), so N workers compute what one worker computes on the concatenated batch. Returns
    (B, K) codes whose rows sum to 1. exp(scores / 0.05) amplifies a score's rounding error 20
    times: pass fp32 scores (`prototype_scores`), as the official code does.
    """
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    q = torch.exp(scores / epsilon).T  # (K, B)
    # The official `B = Q.shape[1] * world_size`: a Python number, no tensor made from one each
    # step (on a GPU that is a blocking host-to-device copy).
    batch_size = q.shape[1] * world_size()
    num_prototypes = q.shape[0]
    q /= all_reduce_sum(q.sum())
    for _ in range(iterations):
        q /= all_reduce_sum(q.sum(dim=1, keepdim=True))  # each prototype gets 1/K of the mass
        q /= num_prototypes
        q /= q.sum(dim=0, keepdim=True)  # each sample gets 1/B of the mass
        q /= batch_size
    return (q * batch_size).T


@full_precision
def prototype_scores(embedding: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """(B, K) scores of (B, D) embeddings against (K, D) prototypes in fp32, even under bf16
    autocast: the scores Sinkhorn exponentiates (the loss's own scores may stay bf16)."""
    return embedding @ prototypes.T


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
    relative_step_cost = 1.55  # the small crops

    def __init__(self, backbone: nn.Module, feature_dim: int, projection_hidden_dim: PositiveInt = 2048,
                 projection_dim: PositiveInt = 128, num_prototypes: PositiveInt = 3000,
                 temperature: PositiveFloat = 0.1, sinkhorn_epsilon: PositiveFloat = 0.05,
                 sinkhorn_iterations: PositiveInt = 3, num_small_crops: NonNegativeInt = 6,
                 freeze_prototypes_epochs: NonNegativeInt = 1, queue_length: NonNegativeInt = 3840,
                 queue_start_epoch: NonNegativeInt = 15) -> None:
        super().__init__(backbone, feature_dim)
        self.temperature = temperature
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.sinkhorn_iterations = sinkhorn_iterations
        self.num_small_crops = num_small_crops
        self.freeze_prototypes_epochs = freeze_prototypes_epochs
        self.projector = projection_mlp(feature_dim, projection_hidden_dim, projection_dim, num_layers=2)
        self.prototypes = nn.Linear(projection_dim, num_prototypes, bias=False)
        # The queue keeps earlier batches' embeddings of each global view, so Sinkhorn has enough
        # samples to spread over many prototypes when batches are small (sec. 3.1). It is filled
        # from the first step after `queue_start_epoch` finished epochs and used once full.
        self.queue_start_epoch = queue_start_epoch
        self.register_buffer("queue", torch.zeros(2, queue_length // world_size(), projection_dim))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_started", torch.zeros((), dtype=torch.bool))
        # The same two values tracked on the host, so that the step never reads a device buffer (a
        # host-device sync); read from the buffers at the first step and after a checkpoint loads.
        self._host_queue_state: list | None = None
        self.register_load_state_dict_post_hook(SwAV._forget_host_queue_state)

    @classmethod
    def run_defaults(cls, run: RunShape, params: dict[str, Any]) -> dict[str, Any]:
        """queue_length and queue_start_epoch fitted to the run, where method_params do not set them.

        Length: `fitted_queue_length` of the global batch and the prototypes (3840 at batch 256
        with 3000 prototypes, as the official recipe; none at 4096; 128 at batch 64 with 100).
        Start: `fitted_queue_start_epoch` (15 in a 200-epoch run, as the official recipe; after
        the first epoch in a 15-epoch run). A CPU-minutes run is 10,000 times shorter than the
        official one, so its queue spans a much larger part of training whatever its length:
        a queue of whole batches no longer than the samples Sinkhorn needs keeps that part small.
        """
        num_prototypes = params.get("num_prototypes", 3000)
        return {"queue_length": fitted_queue_length(run.batch_size, num_prototypes),
                "queue_start_epoch": fitted_queue_start_epoch(run.epochs)}

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
        codes = [self.assign(index, embeddings[index]) for index in range(2)]
        loss = swapped_prediction_loss(scores, codes, self.temperature)
        return StepOutput(loss, embeddings[0])

    def assign(self, view_index: int, embedding: torch.Tensor) -> torch.Tensor:
        """Sinkhorn codes of a global view, using the queue when it is full; scores in fp32."""
        prototypes = self.prototypes.weight.detach()
        scores = prototype_scores(embedding.detach(), prototypes)
        queue_length = self.queue.shape[1]
        started, filled = self.host_queue_state()
        if queue_length > 0 and self.training and started:
            if filled >= queue_length:
                queued_scores = prototype_scores(self.queue[view_index], prototypes)
                codes = sinkhorn_knopp(torch.cat([scores, queued_scores]), self.sinkhorn_epsilon,
                                       self.sinkhorn_iterations)
                codes = codes[: scores.shape[0]]
            else:
                codes = sinkhorn_knopp(scores, self.sinkhorn_epsilon, self.sinkhorn_iterations)
            self.enqueue(view_index, embedding.detach())
            return codes
        return sinkhorn_knopp(scores, self.sinkhorn_epsilon, self.sinkhorn_iterations)

    def host_queue_state(self) -> list:
        """[started, filled] of the queue, as the buffers hold them. A shape-only (meta) network, as
        the memory planner runs one, counts as not started: the queue keeps nothing for the backward
        pass (its scores are detached), so the kept activations are those of a fresh network."""
        if self.queue.is_meta:
            return [False, 0]
        if self._host_queue_state is None:
            self._host_queue_state = [bool(self.queue_started), int(self.queue_filled)]
        return self._host_queue_state

    @staticmethod
    def _forget_host_queue_state(module: nn.Module, incompatible_keys: object) -> None:
        module._host_queue_state = None

    @torch.no_grad()
    def enqueue(self, view_index: int, embedding: torch.Tensor) -> None:
        # Per process, as in the official code: Sinkhorn's all-reduce then spans every queue.
        keys = embedding[: self.queue.shape[1]]
        self.queue[view_index] = torch.cat([keys, self.queue[view_index, : -len(keys)]])
        if view_index == 1:
            state = self.host_queue_state()  # read before the buffer moves, or it counts keys twice
            self.queue_filled += len(keys)
            state[1] += len(keys)

    def before_optimizer_step(self, epoch: int) -> None:
        # Epochs count from 1 here; the official `epoch >= epoch_queue_starts` counts from 0.
        if epoch > self.queue_start_epoch:
            self.queue_started.fill_(True)
            self.host_queue_state()[0] = True
        # The prototypes stay fixed during the first epoch(s): this helps optimization (sec. B.1).
        if epoch <= self.freeze_prototypes_epochs:
            self.prototypes.weight.grad = None
