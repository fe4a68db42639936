"""which_prior: which prior weights to start SSL pretraining from, for your images, in one command.

Two stages. Stage 1 screens every prior on this machine by its frozen features (`method=none`, a
linear probe on the backbone as loaded: cheap). Stage 2 SSL-pretrains the `top_k` best priors
of stage 1 (mean over label fractions and seeds), plus random initialization as the baseline,
with each method of the grid, and probes them the same way. The report recommends, per label
fraction, the prior and method with the highest mean balanced accuracy over seeds, with its 95%
t-interval, the arms within noise of it (their difference to it, paired by seed, has a 95%
interval that contains 0) and how much worse random initialization is (paired by seed).

The priors screened are those of `init` below that this machine has (or can download) for the
backbone: `orchestrator/screening.py` drops the others, one line each. Add your own with
`--set init=...` (then exactly those are screened). Point it at your data with
`--set dataset=imagefolder --set data_root=DIR` (or `csvfolder`, or a registered dataset), and
pretrain on an unlabeled pool with `--set pretrain_dataset=unlabeled --set pretrain_data_root=DIR`.
The papers' results (Ciga et al.; Azizi et al.) say the frozen-feature ranking mostly survives
pretraining; stage 2 is there to check it on your data, and the report says where it does not.
"""

from search_spaces import Screening, Sweep

SWEEP = Sweep(
    name="which_prior",
    description="which prior for my data? screen every prior's frozen features, pretrain the best 2 + random",
    grid={"init": ["random", "imagenet", "bit-s", "bit-m", "meanvar"],
          "method": ["simclr", "byol"],
          "label_fraction": [0.01, 0.1, 1.0],
          "seed": [0, 1, 2]},
    params={"dataset": "pneumoniamnist", "backbone": "resnet50", "image_size": 224, "batch_size": 256,
            "epochs": 100, "eval": "linear", "probe_repeats": 3, "class_weighted": True},
    screening=Screening(top_k=2, baseline="random"),
    smoke_params={"backbone": "cbr_nano", "image_size": 32, "batch_size": 32, "epochs": 2,
                  "probe_repeats": 1, "probe_epochs": 50},
    smoke_grid={"method": ["simclr"], "label_fraction": [0.5, 1.0]},
    hypothesis=__doc__,
)
