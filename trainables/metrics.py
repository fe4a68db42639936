"""Every metric name the project reports, defined once.

The same strings are Ray Tune result keys, MLflow metric keys and report columns.
"""

EPOCH = "epoch"

# Reported every pretraining epoch (MLflow step = epoch; kNN also at epoch 0, the initialization).
PRETRAIN_LOSS = "pretrain/loss"
PRETRAIN_COLLAPSE_STD = "pretrain/collapse_std"
PRETRAIN_LEARNING_RATE = "pretrain/learning_rate"
PRETRAIN_EPOCH_SECONDS = "pretrain/epoch_seconds"
KNN_VAL_ACCURACY = "knn/val_accuracy"  # only in monitored epochs (TrialConfig.knn_every)
KNN_SECONDS = "knn/monitor_seconds"  # wall time of the kNN monitor, in the epochs it runs
# Source images (not views) of the epoch's training steps per second of them, over all workers.
PRETRAIN_IMAGES_PER_SECOND = "pretrain/images_per_second"
# Rank 0's peak memory since its worker started, in MiB: what torch allocated on the GPU, or on
# a CPU-only worker the resident set of its whole process (the data, Python, torch), not tensors alone.
PEAK_GPU_MEMORY_ALLOCATED_MIB = "system/peak_gpu_memory_allocated_mib"
PEAK_PROCESS_RSS_MIB = "system/peak_process_rss_mib"

# Reported once, after pretraining, by the trial's evaluation protocol: "<protocol>/<metric>"
# is the mean over the evaluation's repeats and "<protocol>/<metric>_std" its std.
LINEAR_PREFIX = "linear"  # logistic regression on frozen features (the default)
KNN_PREFIX = "knn"  # weighted kNN on frozen features
FINETUNE_PREFIX = "finetune"  # the whole network fine-tuned with labels
PREFIXES = (LINEAR_PREFIX, KNN_PREFIX, FINETUNE_PREFIX)

TEST_ACCURACY = "test_accuracy"
TEST_BALANCED_ACCURACY = "test_balanced_accuracy"
TEST_MACRO_F1 = "test_macro_f1"
TEST_AUC = "test_auc"  # one-vs-rest, macro over the classes present in the test split
VAL_BALANCED_ACCURACY = "val_balanced_accuracy"  # the model-selection criterion
METRIC_SUFFIXES = (TEST_ACCURACY, TEST_BALANCED_ACCURACY, TEST_MACRO_F1, TEST_AUC, VAL_BALANCED_ACCURACY)
STD_SUFFIX = "_std"


def evaluation_metric(protocol: str, suffix: str, std: bool = False) -> str:
    return f"{protocol}/{suffix}{STD_SUFFIX if std else ''}"


LINEAR_VAL_BALANCED_ACCURACY = evaluation_metric(LINEAR_PREFIX, VAL_BALANCED_ACCURACY)
LINEAR_TEST_ACCURACY = evaluation_metric(LINEAR_PREFIX, TEST_ACCURACY)
LINEAR_TEST_BALANCED_ACCURACY = evaluation_metric(LINEAR_PREFIX, TEST_BALANCED_ACCURACY)

COLLAPSED = "collapsed"  # 1.0 when the final collapse_std is far below 1/sqrt(dim)
SKIPPED_IMAGES = "data/skipped_images"  # unreadable images left out of the dataset (epoch 0)
SPLIT_HASH = "data/split_hash"  # a string, logged as an MLflow tag (epoch 0)
PRETRAIN_IMAGES = "data/pretrain_images"  # images SSL pretrains on (epoch 0)
PRETRAIN_OVERLAP_REMOVED = "data/pretrain_overlap_removed"  # equal to an evaluation val/test image (epoch 0)
PRETRAIN_HASH = "data/pretrain_hash"  # a string: the pretraining pool's content hash (epoch 0)
GRAYSCALE = "data/grayscale"  # a bool, logged as an MLflow tag (epoch 0)
# JSON of each view's augmentation recipe as used (epoch 0), logged as an MLflow artifact.
AUGMENTATION_RECIPES = "augmentation/recipes"
AUGMENTATION_RECIPES_ARTIFACT = "augmentation_recipes.json"

# Per-block representation similarity (trainables/evaluation/block_similarity.py), reported once at
# the end when the trial's `block_similarity` is on. "similarity/<measure>/<block>": initialization
# vs pretrained backbone; "similarity/finetuning/<measure>/<block>": the backbone fine-tuning started
# from vs the fine-tuned one; "similarity/random_baseline/<measure>/<block>": two random
# initializations (seeds s and s + 1), the seed paper's baseline. "<block>" is one of
# SIMILARITY_BLOCKS, or SIMILARITY_DEPTH_CONTRAST (mean of the lower half of the blocks minus mean
# of the upper half, with its bootstrap std over probe images as "..._std").
SIMILARITY_PREFIX = "similarity"
SIMILARITY_PRETRAINING, SIMILARITY_FINETUNING, SIMILARITY_RANDOM_BASELINE = (
    "pretraining", "finetuning", "random_baseline")
SIMILARITY_COMPARISONS = (SIMILARITY_PRETRAINING, SIMILARITY_FINETUNING, SIMILARITY_RANDOM_BASELINE)
SIMILARITY_MEASURES = ("cka", "svcca")
SIMILARITY_BLOCKS = ("stem", "block1", "block2", "block3", "block4")  # in depth order
SIMILARITY_DEPTH_CONTRAST = "lower_minus_higher"
SIMILARITY_SECONDS = "similarity/seconds"  # wall time of the whole analysis


def similarity_metric(comparison: str, measure: str, block: str) -> str:
    middle = "" if comparison == SIMILARITY_PRETRAINING else f"{comparison}/"
    return f"{SIMILARITY_PREFIX}/{middle}{measure}/{block}"


# Metrics that are themselves a contrast within one trial: a claim may take them as one cell.
WITHIN_TRIAL_CONTRASTS = tuple(
    similarity_metric(comparison, measure, SIMILARITY_DEPTH_CONTRAST)
    for comparison in (SIMILARITY_PRETRAINING, SIMILARITY_FINETUNING) for measure in SIMILARITY_MEASURES)

SIMILARITY = (
    *(similarity_metric(comparison, measure, block) for comparison in SIMILARITY_COMPARISONS
      for measure in SIMILARITY_MEASURES for block in SIMILARITY_BLOCKS),
    *(similarity_metric(comparison, measure, SIMILARITY_DEPTH_CONTRAST) + std
      for comparison in (SIMILARITY_PRETRAINING, SIMILARITY_FINETUNING)
      for measure in SIMILARITY_MEASURES for std in ("", STD_SUFFIX)),
    SIMILARITY_SECONDS,
)

# Fine-tuning's curves: one value per fine-tuning epoch (MLflow step = that epoch, from 1). Each
# travels in the final result as a list (a list, not a dict: Tune would flatten a dict's keys).
FINETUNE_TRAIN_LOSS = "finetune/epoch_train_loss"  # mean training loss over the epoch's batches
FINETUNE_VAL_LOSS = "finetune/epoch_val_loss"  # the same loss on the validation split, eval mode
FINETUNE_VAL_BALANCED_ACCURACY = "finetune/epoch_val_balanced_accuracy"
FINETUNE_CURVES = (FINETUNE_TRAIN_LOSS, FINETUNE_VAL_LOSS, FINETUNE_VAL_BALANCED_ACCURACY)
# Last minus lowest validation loss: how far it rose after its best epoch (0 if it never rose);
# seed 001's "ImageNet priors overfit, SSL priors do not" is a claim on this.
FINETUNE_VAL_LOSS_RISE = "finetune/val_loss_rise"

PER_EPOCH = (
    PRETRAIN_LOSS,
    PRETRAIN_COLLAPSE_STD,
    PRETRAIN_LEARNING_RATE,
    PRETRAIN_EPOCH_SECONDS,
    KNN_VAL_ACCURACY,
    KNN_SECONDS,
    SKIPPED_IMAGES,
    PRETRAIN_IMAGES,
    PRETRAIN_OVERLAP_REMOVED,
    PRETRAIN_IMAGES_PER_SECOND,
    PEAK_GPU_MEMORY_ALLOCATED_MIB,
    PEAK_PROCESS_RSS_MIB,
)
FINAL = (
    *(evaluation_metric(protocol, suffix, std)
      for protocol in PREFIXES for suffix in METRIC_SUFFIXES for std in (False, True)),
    COLLAPSED,
    *SIMILARITY,
    FINETUNE_VAL_LOSS_RISE,
)
