"""ablation_imagesize: does double pretraining (P2X) make SSL robust to small images?

Ciga, Xu, Martel, Table 5: the batch-size ablation's methods and priors at 96 vs 224 px.
Paper: P2X loses less accuracy at 96 px than P1X does. As in ablation_batchsize, each cell
pretrains on one dataset and evaluates on another where the paper does: ChestX-ray14 -> the
COVID-19 Radiography Database, beside the same-domain HAM10000 and DermaMNIST cells (the paired
axes pretrain_dataset, dataset). P2X's checkpoints come from the catalogue
(trainables/initializations/ssl_catalogue.py; see ablation_batchsize). The paper's CIFAR-10 arm
at 32 px with the CIFAR stem is one command away (a pair's axes are set together):
    python -m orchestrator.sweep ablation_imagesize --set pretrain_dataset=cifar10 \\
        --set dataset=cifar10 --set image_size=32 --set cifar_stem=true
"""

from search_spaces import Claim, Sweep, paired_axes
from search_spaces.ablation_batchsize import DATA_AXES, DATA_PAIRS

P1X, P2X = {"init": "random"}, {"init": "ssl-imagenet"}

SWEEP = Sweep(
    name="ablation_imagesize",
    description="double pretraining (Ciga et al. Table 5): P1X vs P2X at 96 vs 224 px",
    grid={"method": ["simclr", "swav", "byol"], "init": ["random", "ssl-imagenet"],
          "image_size": [96, 224], **paired_axes(DATA_AXES, DATA_PAIRS)},
    paired=(DATA_AXES,),
    params={"backbone": "resnet50", "batch_size": 256, "epochs": 100, "optimizer": "lars",
            "warmup_epochs": 10},
    claims=(
        Claim("P2X loses less accuracy at 96 px than P1X",
              (({**P2X, "image_size": 96}, 1.0), ({**P2X, "image_size": 224}, -1.0),
               ({**P1X, "image_size": 96}, -1.0), ({**P1X, "image_size": 224}, 1.0))),
    ),
    smoke_params={"backbone": "cbr_nano", "batch_size": 64, "epochs": 2, "probe_repeats": 1,
                  "optimizer": "sgd", "warmup_epochs": 0},
    smoke_grid={"image_size": [16, 32], "init": ["random"]},
    method_params={"swav": {"num_small_crops": 2}},
    hypothesis=__doc__,
)
