"""MoCo v2: contrast each query with its momentum-encoded key and a queue of past keys.

Chen, Fan, Girshick, He. "Improved Baselines with Momentum Contrastive Learning", 2020.
https://arxiv.org/abs/2003.04297 (MoCo: He et al., CVPR 2020, https://arxiv.org/abs/1911.05722)

Where each default comes from (official code: facebookresearch/moco, main_moco.py with the
README's MoCo v2 flags `--mlp --moco-t 0.2 --aug-plus --cos`); paper and code agree:
- queue 65536, key-encoder momentum 0.999, temperature 0.2, 2048-128 MLP head, SGD at 0.03 per
  256 images with momentum 0.9, wd 1e-4, cosine decay. The code sets 0.03 for its batch of 256;
  this code scales it linearly with the batch (the README's advice for other batch sizes).
- One deliberate difference: no shuffled BatchNorm (see `forward`).
"""

import copy
import itertools
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from trainables.augmentations import MOCO_V2_RECIPE
from trainables.distributed import gather_with_grad
from trainables.methods.base import SSLMethod, StepOutput, ViewSpec, full_precision
from trainables.methods.byol import ema_update
from trainables.number_ranges import Fraction, PositiveFloat, PositiveInt


@full_precision
def moco_infonce_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor,
                      temperature: float = 0.2) -> torch.Tensor:
    """InfoNCE (MoCo eq. 1): -log exp(q.k+/t) / (exp(q.k+/t) + sum_queue exp(q.k-/t)), batch mean.

    q, k: (N, D) l2-normalized queries and their positive keys (the gradient is stopped on k);
    queue: (D, K) l2-normalized negative keys. The positive is logit 0 of 1 + K.
    """
    positive = (q * k.detach()).sum(dim=1, keepdim=True)
    negatives = q @ queue.detach()
    logits = torch.cat([positive, negatives], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def mlp_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """MoCo v2's head: Linear-ReLU-Linear, without BatchNorm (as the paper's code)."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


class MoCoV2(SSLMethod):
    name = "mocov2"
    base_learning_rate = 0.03  # MoCo v2: SGD 0.03 x batch/256, momentum 0.9
    weight_decay = 1e-4
    relative_step_cost = 1.33  # the key encoder's forward pass

    def __init__(self, backbone: nn.Module, feature_dim: int, projection_hidden_dim: PositiveInt = 2048,
                 projection_dim: PositiveInt = 128, queue_size: PositiveInt = 65536,
                 temperature: PositiveFloat = 0.2, encoder_momentum: Fraction = 0.999) -> None:
        super().__init__(backbone, feature_dim)
        self.temperature, self.encoder_momentum = temperature, encoder_momentum
        self.projector = mlp_head(feature_dim, projection_hidden_dim, projection_dim)
        self.key_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.key_projector = copy.deepcopy(self.projector).requires_grad_(False)
        # Buffers, so they are checkpointed. The queue must be the same on every worker, with no
        # buffer broadcast at all (the loop passes broadcast_buffers=False, which in this torch
        # also skips DDP's copy at wrap time): every worker draws it from the same seeded RNG
        # (the loop seeds torch with the trial's seed first) and then enqueues the same gathered
        # keys (tests/trainables/methods/test_distributed_equivalence.py compares the queues).
        self.register_buffer("queue", F.normalize(torch.randn(projection_dim, queue_size), dim=0))
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))

    def views(self, image_size: int) -> list[ViewSpec]:
        """Query and key views with MoCo v2's recipe (sec. 3: MoCo's augmentation plus blur)."""
        return [ViewSpec(image_size, MOCO_V2_RECIPE)] * 2

    def query_parameters(self) -> Iterable[torch.Tensor]:
        return itertools.chain(self.backbone.parameters(), self.projector.parameters())

    def key_parameters(self) -> Iterable[torch.Tensor]:
        return itertools.chain(self.key_backbone.parameters(), self.key_projector.parameters())

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        # No shuffle BN: BatchNorm statistics are those of the whole global batch (one process, or
        # SyncBatchNorm on several), which SimCLR (sec. 2.2) uses instead to stop the BN leak.
        query = self.projector(self.backbone(views[0]))
        q = F.normalize(query, dim=1)
        with torch.no_grad():
            k = F.normalize(self.key_projector(self.key_backbone(views[1])), dim=1)
        # The clone keeps the queue the loss saved for backward intact when it is updated below.
        loss = moco_infonce_loss(q, k, self.queue.clone(), self.temperature)
        self.enqueue(k)
        return StepOutput(loss, query)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest columns by the keys of the global batch (from ALL workers)."""
        keys = gather_with_grad(keys.detach())
        count, size = keys.shape[0], self.queue.shape[1]
        if count > size:
            raise ValueError(f"global batch {count} is larger than queue_size {size}")
        columns = (self.queue_pointer + torch.arange(count, device=keys.device)) % size
        self.queue[:, columns] = keys.T.to(self.queue.dtype)
        self.queue_pointer.copy_((self.queue_pointer + count) % size)

    def after_optimizer_step(self, progress: float) -> None:
        # Constant momentum (MoCo sec. 3.2); parameters only, the key BN keeps its own statistics.
        ema_update(self.key_parameters(), self.query_parameters(), self.encoder_momentum)
