"""Every metric name the project reports, defined once.

The same strings are Ray Tune result keys, MLflow metric keys and report columns.
"""

EPOCH = "epoch"

# Reported every pretraining epoch (MLflow step = epoch).
PRETRAIN_LOSS = "pretrain/loss"
PRETRAIN_COLLAPSE_STD = "pretrain/collapse_std"
PRETRAIN_LEARNING_RATE = "pretrain/learning_rate"
PRETRAIN_EPOCH_SECONDS = "pretrain/epoch_seconds"
KNN_VAL_ACCURACY = "knn/val_accuracy"

# Reported once, after pretraining.
LINEAR_VAL_BALANCED_ACCURACY = "linear/val_balanced_accuracy"
LINEAR_TEST_ACCURACY = "linear/test_accuracy"
LINEAR_TEST_BALANCED_ACCURACY = "linear/test_balanced_accuracy"
COLLAPSED = "collapsed"  # 1.0 when the final collapse_std is far below 1/sqrt(dim)

PER_EPOCH = (
    PRETRAIN_LOSS,
    PRETRAIN_COLLAPSE_STD,
    PRETRAIN_LEARNING_RATE,
    PRETRAIN_EPOCH_SECONDS,
    KNN_VAL_ACCURACY,
)
FINAL = (
    LINEAR_VAL_BALANCED_ACCURACY,
    LINEAR_TEST_ACCURACY,
    LINEAR_TEST_BALANCED_ACCURACY,
    COLLAPSED,
)
