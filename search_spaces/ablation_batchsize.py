"""ablation_batchsize: does double pretraining (P2X) make SSL robust to small batches?

Ciga, Xu, Martel, "Resource and data efficient self supervised learning", Table 4: SimCLR,
SwAV and BYOL pretrained on the medical data from scratch (P1X, init=random) or from the same
method's ImageNet SSL weights (P2X, init=ssl-imagenet), at batch 32 and 1024, 224 px.
Paper: P2X loses less accuracy at batch 32 than P1X does.

The paper pretrains on one dataset and validates on another: for X-rays, ChestX-ray8 (here NIH
ChestX-ray14, its later release; its train split, labels ignored) and the COVID-19 Radiography
Database. That pair is one cell of the paired axes (pretrain_dataset, dataset); HAM10000 and
DermaMNIST, pretrained on their own train split, are same-domain cells beside it. The claim is
matched over the pairs like any other axis. --dry-run lists the pretrain -> evaluation pairs.

P2X starts from each method's published ImageNet checkpoint, from the catalogue in
trainables/initializations/ssl_catalogue.py (SwAV official; SimCLR and BYOL are OpenMMLab's
PyTorch reproductions, the official releases being TensorFlow and JAX), downloaded once into
the cache; --dry-run says which are there; --set weights_path=... uses your own files instead.
--smoke keeps P1X only (no checkpoints offline), so its claim verdict is "inconclusive: missing
cells" by construction; datasets not on disk become shapes (evaluation) and digits (a pretraining
dataset other than its evaluation's), so the smoke run still pretrains on other images than it
evaluates on.
"""

from search_spaces import Claim, Sweep, paired_axes

P1X, P2X = {"init": "random"}, {"init": "ssl-imagenet"}
# What pretrains -> what is evaluated: the paper's X-ray protocol, then the same-domain cells.
DATA_AXES = ("pretrain_dataset", "dataset")
DATA_PAIRS = (("chestxray14", "covid19_radiography"), ("ham10000", "ham10000"), ("dermamnist", "dermamnist"))

SWEEP = Sweep(
    name="ablation_batchsize",
    description="double pretraining (Ciga et al. Table 4): P1X vs P2X at batch 32 vs 1024",
    grid={"method": ["simclr", "swav", "byol"], "init": ["random", "ssl-imagenet"],
          "batch_size": [32, 1024], **paired_axes(DATA_AXES, DATA_PAIRS)},
    paired=(DATA_AXES,),
    params={"backbone": "resnet50", "image_size": 224, "epochs": 100, "optimizer": "lars",
            "warmup_epochs": 10},
    claims=(
        Claim("P2X loses less accuracy at batch 32 than P1X",
              (({**P2X, "batch_size": 32}, 1.0), ({**P2X, "batch_size": 1024}, -1.0),
               ({**P1X, "batch_size": 32}, -1.0), ({**P1X, "batch_size": 1024}, 1.0))),
    ),
    smoke_params={"backbone": "cbr_nano", "image_size": 32, "epochs": 2, "probe_repeats": 1,
                  "optimizer": "sgd", "warmup_epochs": 0},
    smoke_grid={"batch_size": [16, 128], "init": ["random"]},
    method_params={"swav": {"num_small_crops": 2}},
    hypothesis=__doc__,
)
