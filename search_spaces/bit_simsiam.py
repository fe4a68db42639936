"""bit_simsiam: do BiT priors speed SimSiam up, and does GroupNorm make it collapse?

Lu, Jha, Huo 2021: SimSiam from random, BiT-S and BiT-M weights, with BiT's GroupNorm kept or
replaced by BatchNorm (conv weights kept), on CIFAR-10 and HAM10000 at 224 px; linear eval with
10% of the labels, focal loss (gamma 4), balanced accuracy, mean of 3 repeats.
Paper: with GroupNorm SimSiam collapses; with BatchNorm the BiT priors converge faster and end
higher than random.
The paper does not say whether its GroupNorm variant also put GroupNorm in the SimSiam heads:
--set method_params.head_norm=groupnorm runs that reading (default: BatchNorm heads).
--smoke uses cbr_nano (BatchNorm, or GroupNorm after the surgery) from random init.
"""

from search_spaces import Claim, Sweep

COLLAPSE = "pretrain/collapse_std"
BALANCED = "linear/test_balanced_accuracy"
RANDOM_BN = {"init": "random", "norm": "batchnorm"}

SWEEP = Sweep(
    name="bit_simsiam",
    description="BiT priors + SimSiam (Lu et al.): random/BiT-S/BiT-M x GroupNorm/BatchNorm",
    grid={"init": ["random", "bit-s", "bit-m"], "norm": ["groupnorm", "batchnorm"],
          "dataset": ["cifar10", "ham10000"]},
    params={"method": "simsiam", "backbone": "resnetv2_50x1_bit", "image_size": 224, "batch_size": 256,
            "epochs": 100, "eval": "linear", "label_fraction": 0.1, "focal_gamma": 4.0,
            "probe_repeats": 3},
    claims=(
        Claim("with GroupNorm SimSiam collapses (lower collapse std than with BatchNorm)",
              (({"norm": "batchnorm"}, 1.0), ({"norm": "groupnorm"}, -1.0)), COLLAPSE),
        Claim("with BatchNorm, BiT-M ends higher than random",
              (({"init": "bit-m", "norm": "batchnorm"}, 1.0), (RANDOM_BN, -1.0)),
              BALANCED),
        Claim("with BatchNorm, BiT-S ends higher than random",
              (({"init": "bit-s", "norm": "batchnorm"}, 1.0), (RANDOM_BN, -1.0)),
              BALANCED),
    ),
    smoke_params={"backbone": "cbr_nano", "image_size": 32, "batch_size": 64, "epochs": 3,
                  "probe_repeats": 1, "label_fraction": 0.5},
    smoke_grid={"init": ["random"]},
    method_params={"simsiam": {"projection_dim": 512, "predictor_hidden_dim": 128}},
    hypothesis=__doc__,
)
