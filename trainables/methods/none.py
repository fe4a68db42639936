"""none: no SSL pretraining; the probe runs directly on the initialization's features.

The baseline of the "SSL vs ImageNet vs random" comparisons (Akhtar & Bathula: M1 random,
M3 ImageNet without SSL).
"""

import torch

from trainables.methods.base import SSLMethod, StepOutput


class NoPretraining(SSLMethod):
    name = "none"
    base_learning_rate = 0.0
    weight_decay = 0.0
    relative_step_cost = 0.0  # trains nothing
    pretrains = False

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        raise RuntimeError("method 'none' does not pretrain; the loop goes straight to evaluation")
