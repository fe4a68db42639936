"""Evaluation: how good a pretrained backbone's features are, by the protocols of the seed studies.

`probes` extracts frozen features once and runs the linear and kNN probes (repeated over label
subsets, best-on-validation classifier tested) plus the collapse metric; `protocol` runs the
protocols in order at the end of a trial (`evaluate`, with its artifacts) and holds the one kNN
monitor the loop calls each epoch (`monitor_knn`); `finetuning` trains a copy of the whole
network; `losses` holds the focal loss and class weights they share; `results` turns predictions
into an `EvaluationResult` and its flat metric names; `tsne` draws the test embeddings and
`confusion` the confusion matrix; `similarity` holds linear CKA and SVCCA and `block_similarity`
the per-block comparison of a trial's networks with their start (called by `protocol`). Add a
protocol as a module here that returns an `EvaluationResult`, then name it in
`trainables.metrics.PREFIXES` and call it from `trainables.evaluation.protocol.evaluate`.
"""

from trainables.evaluation.confusion import confusion_matrix_wide, confusion_table, plot_confusion_matrix
from trainables.evaluation.finetuning import finetune
from trainables.evaluation.probes import (
    embedding_std,
    extract_features,
    is_collapsed,
    knn_accuracy,
    probe_knn,
    probe_linear,
)
from trainables.evaluation.results import EvaluationResult, evaluation_metrics_to_flat_dict
from trainables.evaluation.tsne import draw_tsne, plot_tsne

__all__ = ["EvaluationResult", "confusion_matrix_wide", "confusion_table", "draw_tsne", "embedding_std",
           "evaluation_metrics_to_flat_dict", "extract_features", "finetune", "is_collapsed", "knn_accuracy",
           "plot_confusion_matrix", "plot_tsne", "probe_knn", "probe_linear"]
