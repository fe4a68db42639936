"""transfusion: how much of transfer learning's benefit is the weights' scale, and which blocks?

Raghu, Zhang, Kleinberg, Bengio 2019, "Transfusion": ImageNet weights versus random, Mean-Var
(weights drawn from each pretrained layer's mean and variance), pretrained weights up to block K
(transfusion-K) and the slim hybrid, fine-tuned on medical data, for ResNet-50 and a small CBR.
Paper: Mean-Var recovers much of the convergence speed-up; the first blocks matter most.
--smoke keeps random init (no ImageNet weights offline).
"""

from search_spaces import Claim, Sweep

METRIC = "finetune/test_accuracy"

SWEEP = Sweep(
    name="transfusion",
    description="Transfusion (Raghu et al.): ImageNet vs Mean-Var vs first-K-blocks transfer",
    grid={"init": ["random", "imagenet", "meanvar", "transfusion-1", "transfusion-2", "transfusion-3",
                   "transfusion-4", "slim"],
          "backbone": ["resnet50", "cbr_small"], "dataset": ["retinamnist", "pneumoniamnist"]},
    params={"method": "none", "eval": "finetune", "image_size": 224, "batch_size": 64,
            "epochs": 1, "finetune_epochs": 30},
    claims=(
        Claim("Mean-Var beats random init", (({"init": "meanvar"}, 1.0), ({"init": "random"}, -1.0)), METRIC),
        Claim("the first two blocks give most of ImageNet's gain (transfusion-2 - random > imagenet - "
              "transfusion-2)",
              (({"init": "transfusion-2"}, 2.0), ({"init": "random"}, -1.0), ({"init": "imagenet"}, -1.0)),
              METRIC),
    ),
    smoke_params={"image_size": 32, "batch_size": 64, "finetune_epochs": 2},
    smoke_grid={"init": ["random"], "backbone": ["cbr_nano"]},
    hypothesis=__doc__,
)
