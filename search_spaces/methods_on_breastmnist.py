"""methods_on_breastmnist: does each SSL method beat random-init features on real medical images?

Hypothesis: on BreastMNIST (MedMNIST v2; 780 breast ultrasound images at 28 px, 546 of them for
training; benign/normal vs malignant, about 73/27), each SSL method's frozen features give a
higher linear-probe balanced accuracy than the same backbone's random-init features (`method=none`,
same seed and probe) within a CPU budget of about the images `methods_on_shapes` sees (batch 64,
15 epochs, 120 steps). The recipes are exactly those of `methods_on_shapes` (CPU-sized heads, each
method's own augmentations and optimizer); none is tuned to this dataset. The probe weights its
loss by inverse class frequency, so that predicting "benign" everywhere scores 0.5, not 0.73.
The file is `<data_root>/medmnist/breastmnist.npz` (official split kept); PneumoniaMNIST is kept
aside for an independent check.
"""

from search_spaces import Claim, Sweep
from search_spaces.methods_on_shapes import PRETRAINING
from search_spaces.methods_on_shapes import SWEEP as ON_SHAPES

BALANCED = "linear/test_balanced_accuracy"

SWEEP = Sweep(
    name="methods_on_breastmnist",
    description="every SSL method vs random-init features on BreastMNIST (real ultrasound, CPU minutes)",
    grid={"method": ["none", *PRETRAINING]},
    params={"dataset": "breastmnist", "backbone": "cbr_nano", "init": "random", "image_size": 32,
            "batch_size": 64, "epochs": 15, "warmup_epochs": 1, "probe_repeats": 3,
            "class_weighted": True},
    method_params=ON_SHAPES.method_params,
    claims=tuple(
        Claim(f"{method} features beat random-init features",
              (({"method": method}, 1.0), ({"method": "none"}, -1.0)), BALANCED)
        for method in PRETRAINING
    ),
    smoke_params={"epochs": 2, "probe_repeats": 1},
    hypothesis=__doc__,
)
