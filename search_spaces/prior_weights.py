"""prior_weights: SSL vs ImageNet vs random as priors, fine-tuned on medical data.

Akhtar & Bathula: M1 random init without SSL, M2 random + SimCLR, M3 ImageNet without SSL,
M4 ImageNet + SimCLR, each fine-tuned on five medical datasets.
Paper: M3 > M4 > M2 > M1 on most datasets. Seed 001 adds that SSL priors overfit less: during
fine-tuning ImageNet's validation loss rises after its best epoch, SSL's does not (the fourth
claim, on finetune/val_loss_rise: last minus lowest validation loss of the fine-tuning curve).
--smoke keeps the random-init arms (no ImageNet weights offline): M1 vs M2 only.
"""

from search_spaces import Claim, Sweep
from trainables import metrics

M1 = {"init": "random", "method": "none"}
M2 = {"init": "random", "method": "simclr"}
M3 = {"init": "imagenet", "method": "none"}
M4 = {"init": "imagenet", "method": "simclr"}
METRIC = "finetune/test_accuracy"

SWEEP = Sweep(
    name="prior_weights",
    description="SSL vs ImageNet vs random priors (Akhtar & Bathula): M1-M4, fine-tuned",
    grid={"init": ["random", "imagenet"], "method": ["none", "simclr"],
          "dataset": ["dermamnist", "pneumoniamnist", "breastmnist", "bloodmnist", "retinamnist"]},
    params={"backbone": "resnet50", "image_size": 224, "batch_size": 256, "epochs": 100,
            "eval": "finetune", "finetune_epochs": 30, "block_similarity": True},
    claims=(
        Claim("M3 (ImageNet) beats M4 (ImageNet + SimCLR)", ((M3, 1.0), (M4, -1.0)), METRIC),
        Claim("M4 (ImageNet + SimCLR) beats M2 (random + SimCLR)", ((M4, 1.0), (M2, -1.0)), METRIC),
        Claim("M2 (random + SimCLR) beats M1 (random)", ((M2, 1.0), (M1, -1.0)), METRIC),
        Claim("SSL priors' validation loss rises less during fine-tuning than ImageNet's "
              "(M3 minus the mean of M2 and M4)", ((M3, 1.0), (M2, -0.5), (M4, -0.5)),
              metrics.FINETUNE_VAL_LOSS_RISE),
    ),
    smoke_params={"backbone": "cbr_nano", "image_size": 32, "batch_size": 64, "epochs": 2,
                  "finetune_epochs": 2},
    smoke_grid={"init": ["random"]},
    hypothesis=__doc__,
)
