"""methods_on_shapes: does each SSL method learn something real in a few CPU minutes?

Hypothesis: on `shapes` (class = the shape; colour, position, scale, rotation and background
texture are nuisances that the augmentations remove), a randomly initialized backbone's frozen
features are weak (about 0.36 linear accuracy with cbr_nano, 6 classes), and every SSL method's
features beat them by a clear margin after 15 epochs on one CPU core. `method=none` is the
random-init baseline with the same backbone, seed and probe. Heads are CPU-sized (512 wide)
rather than the papers' 2048-8192; the recipes are otherwise the papers': each method's own
augmentations and optimizer (LARS for SimCLR, BYOL, Barlow Twins, VICReg and SwAV; SGD for
SimSiam and MoCo v2), lr x batch/256, one warmup epoch for every method.
"""

from search_spaces import Claim, Sweep

PRETRAINING = ["simclr", "simsiam", "byol", "barlowtwins", "vicreg", "mocov2", "swav"]

SWEEP = Sweep(
    name="methods_on_shapes",
    description="every SSL method vs random-init features on synthetic shapes (CPU minutes per method)",
    grid={"method": ["none", *PRETRAINING]},
    params={"dataset": "shapes", "backbone": "cbr_nano", "init": "random", "image_size": 32,
            "batch_size": 128, "epochs": 15, "warmup_epochs": 1, "probe_repeats": 3},
    method_params={
        "simclr": {"projection_hidden_dim": 512},
        "simsiam": {"projection_dim": 512, "predictor_hidden_dim": 128},
        "byol": {"projection_hidden_dim": 512, "predictor_hidden_dim": 512},
        "barlowtwins": {"projection_hidden_dim": 512, "projection_dim": 512},
        "vicreg": {"projection_hidden_dim": 512, "projection_dim": 512},
        "mocov2": {"projection_hidden_dim": 512, "queue_size": 4096},
        "swav": {"projection_hidden_dim": 512, "num_prototypes": 100, "num_small_crops": 2},
    },
    claims=tuple(
        Claim(f"{method} features beat random-init features",
              (({"method": method}, 1.0), ({"method": "none"}, -1.0)))
        for method in PRETRAINING
    ),
    smoke_params={"epochs": 2, "probe_repeats": 1},
    hypothesis=__doc__,
)
