"""transfusion: how much of transfer learning's benefit is the weights' scale, and which blocks?

Raghu, Zhang, Kleinberg, Bengio 2019, "Transfusion": ImageNet weights versus random, Mean-Var
(weights drawn from each pretrained layer's mean and variance), pretrained weights up to block K
(transfusion-K) and the slim hybrid, fine-tuned on medical data, for ResNet-50 and a small CBR.
Paper: Mean-Var recovers much of the convergence speed-up; the first blocks matter most.
Its representational analysis (Section 5): SVCCA per layer before vs after fine-tuning shows that
pretrained lower blocks stay closer to their initialization than higher blocks; every trial here
measures it (block_similarity: CKA and SVCCA per block, with two random inits as the baseline).
--smoke keeps random init (no ImageNet weights offline).
"""

from search_spaces import Claim, Sweep
from trainables import metrics

METRIC = "finetune/test_accuracy"


def depth_claim(measure: str) -> Claim:
    """The seed's words on one trial's similarity before vs after fine-tuning: the mean over the
    lower half of the blocks minus the upper half is positive; matched over every axis."""
    metric = metrics.similarity_metric(metrics.SIMILARITY_FINETUNING, measure,
                                       metrics.SIMILARITY_DEPTH_CONTRAST)
    return Claim(f"pretrained lower blocks stay closer to their initialization than higher blocks "
                 f"({measure.upper()} before vs after fine-tuning, lower half of blocks minus upper half)",
                 (({}, 1.0),), metric)


SWEEP = Sweep(
    name="transfusion",
    description="Transfusion (Raghu et al.): ImageNet vs Mean-Var vs first-K-blocks transfer",
    grid={"init": ["random", "imagenet", "meanvar", "transfusion-1", "transfusion-2", "transfusion-3",
                   "transfusion-4", "slim"],
          "backbone": ["resnet50", "cbr_small"], "dataset": ["retinamnist", "pneumoniamnist"]},
    params={"method": "none", "eval": "finetune", "image_size": 224, "batch_size": 64,
            "epochs": 1, "finetune_epochs": 30, "block_similarity": True},
    claims=(
        Claim("Mean-Var beats random init", (({"init": "meanvar"}, 1.0), ({"init": "random"}, -1.0)), METRIC),
        Claim("the first two blocks give most of ImageNet's gain (transfusion-2 - random > imagenet - "
              "transfusion-2)",
              (({"init": "transfusion-2"}, 2.0), ({"init": "random"}, -1.0), ({"init": "imagenet"}, -1.0)),
              METRIC),
        depth_claim("svcca"),
        depth_claim("cka"),
    ),
    smoke_params={"image_size": 32, "batch_size": 64, "finetune_epochs": 2},
    smoke_grid={"init": ["random"], "backbone": ["cbr_nano"]},
    hypothesis=__doc__,
)
