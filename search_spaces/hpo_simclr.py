"""hpo_simclr: SimCLR's learning rate, weight decay and temperature for a medical dataset.

Not a paper reproduction: a tuning run before a long pretraining. Optuna's TPE proposes
configurations through Ray Tune's OptunaSearch; ASHA stops trials whose kNN accuracy lags.
"""

from search_spaces import Search, Sweep

SWEEP = Sweep(
    name="hpo_simclr",
    description="Optuna (TPE) + ASHA over SimCLR's learning rate, weight decay and temperature",
    grid={},
    params={"method": "simclr", "dataset": "dermamnist", "backbone": "resnet18", "image_size": 64,
            "batch_size": 256, "epochs": 50},
    search=Search(
        space={"learning_rate": ("loguniform", 0.01, 2.0), "weight_decay": ("loguniform", 1e-7, 1e-3),
               "method_params.temperature": ("uniform", 0.05, 0.7)},
        metric="knn/val_accuracy", mode="max", num_samples=30, smoke_num_samples=4,
    ),
    smoke_params={"dataset": "shapes", "backbone": "cbr_nano", "image_size": 32, "batch_size": 128,
                  "epochs": 3, "probe_repeats": 1},
    method_params={"simclr": {"projection_hidden_dim": 512}},
    hypothesis=__doc__,
)
