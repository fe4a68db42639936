"""smoke: the whole path (Tune -> Train -> SSL -> linear probe -> MLflow) in minutes on 2 CPUs.

Hypothesis: none about priors; it checks the plumbing. On digits a random-initialized CNN with
standardized features already reaches high linear accuracy, so the numbers here say that every
component ran, not whether SSL helps.
"""

from search_spaces import Sweep

SWEEP = Sweep(
    name="smoke",
    description="simclr/simsiam x 2 batch sizes on bundled digits: the end-to-end check, minutes on CPU",
    grid={
        "method": ["simclr", "simsiam"],
        "batch_size": [64, 128],
    },
    params={
        "dataset": "digits",
        "backbone": "cbr_nano",
        "init": "random",
        "image_size": 32,
        "epochs": 3,
        "probe_epochs": 100,
    },
    hypothesis=__doc__,
)
