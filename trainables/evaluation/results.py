"""What an evaluation returns: its classification scores per repeat, their summary over repeats,
and their flat names (the names themselves are defined once, in trainables.metrics).

Every evaluation protocol (linear probe, kNN, fine-tuning) returns an `EvaluationResult`, so
the loop, MLflow and the report treat them alike. A result holds one `RepeatResult` per repeat
(a label subset or a seed) and, per metric, the mean and std over the repeats.
"""

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import sklearn.metrics
import torch

# The metric names live in trainables.metrics; they are also the fields of `EvaluationResult`.
from trainables.metrics import (  # noqa: E402
    FINETUNE_PREFIX,
    KNN_PREFIX,
    LINEAR_PREFIX,
    METRIC_SUFFIXES,
    PREFIXES,
    STD_SUFFIX,
    TEST_ACCURACY,
    TEST_AUC,
    TEST_BALANCED_ACCURACY,
    TEST_MACRO_F1,
    VAL_BALANCED_ACCURACY,
)

__all__ = ["FINETUNE_PREFIX", "KNN_PREFIX", "LINEAR_PREFIX", "METRIC_SUFFIXES", "PREFIXES", "STD_SUFFIX",
           "TEST_ACCURACY", "TEST_AUC", "TEST_BALANCED_ACCURACY", "TEST_MACRO_F1", "VAL_BALANCED_ACCURACY"]


@dataclass(frozen=True)
class ClassificationMetrics:
    """Metrics of one classifier on one split; predictions are the argmax of the scores."""

    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    auc: float  # nan when fewer than two classes are present in the labels
    confusion_matrix: list[list[int]]  # [true class][predicted class], counts


def confusion_counts(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts (num_classes, num_classes) [true class][predicted class], int64, where `labels` are.
    No host-device sync (torch.bincount on a GPU reads its input's maximum back to the host)."""
    pairs = labels.long() * num_classes + predictions.long().to(labels.device)
    counts = torch.zeros(num_classes**2, dtype=torch.long, device=labels.device)
    return counts.index_add_(0, pairs, torch.ones_like(pairs)).view(num_classes, num_classes)


def balanced_accuracy(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> float:
    """Mean recall over the classes present in `labels` (sklearn's balanced_accuracy_score).

    Hand-written because it is model selection's criterion, computed every epoch on the tensors
    where they are: 0.08 ms here vs 2 ms for sklearn's (host copy and input checks).
    """
    return confusion_balanced_accuracy(confusion_counts(labels, predictions, num_classes))


def confusion_balanced_accuracy(confusion: torch.Tensor) -> float:
    """balanced_accuracy from the counts confusion_counts gives (a host sync where they are on a GPU)."""
    support = confusion.sum(dim=1)
    present = support > 0
    return (confusion.diagonal()[present].double() / support[present]).mean().item()


def one_vs_rest_auc(labels: torch.Tensor, scores: torch.Tensor) -> float:
    """Macro one-vs-rest ROC AUC of class scores (N, C).

    Two classes: the AUC of the second class's score (sklearn's binary convention). More
    classes: the mean AUC over the classes that are present in `labels` (a class absent from
    the test split has no AUC and is left out, where sklearn would raise); nan when fewer than
    two classes are present.
    """
    labels_numpy, scores_numpy = labels.cpu().numpy(), scores.detach().double().cpu().numpy()
    present = np.unique(labels_numpy)
    if len(present) < 2:
        return float("nan")
    if scores_numpy.shape[1] == 2:
        return float(sklearn.metrics.roc_auc_score(labels_numpy == 1, scores_numpy[:, 1]))
    return float(np.mean([sklearn.metrics.roc_auc_score(labels_numpy == c, scores_numpy[:, c])
                          for c in present]))


def classification_metrics(labels: torch.Tensor, scores: torch.Tensor) -> ClassificationMetrics:
    """All metrics of class scores (N, C), e.g. softmax probabilities, against labels (N,).

    scikit-learn's conventions: balanced accuracy averages recall over the classes present in
    the labels; macro F1 over the classes present or predicted, 0 for a class never predicted.
    """
    y_true = labels.cpu().numpy()
    y_pred = scores.argmax(dim=1).cpu().numpy()
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": the convention above
        warnings.simplefilter("ignore", UserWarning)
        balanced = sklearn.metrics.balanced_accuracy_score(y_true, y_pred)
    return ClassificationMetrics(
        accuracy=float(sklearn.metrics.accuracy_score(y_true, y_pred)),
        balanced_accuracy=float(balanced),
        macro_f1=float(sklearn.metrics.f1_score(y_true, y_pred, average="macro", zero_division=0.0)),
        auc=one_vs_rest_auc(labels, scores),
        confusion_matrix=sklearn.metrics.confusion_matrix(
            y_true, y_pred, labels=list(range(scores.shape[1]))).tolist(),
    )


@dataclass(frozen=True)
class RepeatResult:
    """One repeat: a classifier selected on validation, then tested."""

    val_balanced_accuracy: float
    test: ClassificationMetrics
    best_epoch: int  # the selected epoch; 0 when nothing is trained (kNN)
    train_indices: tuple[int, ...]  # the labelled training images this repeat used, sorted


@dataclass(frozen=True)
class MetricSummary:
    mean: float
    std: float  # population std (numpy's default, ddof=0): 0 for a single repeat, never nan
    values: tuple[float, ...]  # one per repeat

    @classmethod
    def of(cls, values: Sequence[float]) -> "MetricSummary":
        array = np.asarray(values, dtype=np.float64)
        return cls(mean=float(array.mean()), std=float(array.std()), values=tuple(float(v) for v in values))


@dataclass(frozen=True)
class EvaluationResult:
    """Mean and std over repeats of every metric; field names are the metric suffixes above.

    `confusion_matrix` is the first repeat's (counts of one real classifier, so its rows sum to
    the test split's class counts); every repeat's is in `repeats[i].test.confusion_matrix`.
    """

    test_accuracy: MetricSummary
    test_balanced_accuracy: MetricSummary
    test_macro_f1: MetricSummary
    test_auc: MetricSummary
    val_balanced_accuracy: MetricSummary
    confusion_matrix: list[list[int]]
    repeats: tuple[RepeatResult, ...]
    # Fine-tuning's trained copy of the backbone (best epoch's weights), for the per-block
    # similarity analysis; None for the protocols that leave the backbone frozen.
    finetuned_backbone: torch.nn.Module | None = field(default=None, compare=False, repr=False)
    # Fine-tuning's per-epoch curves ({metrics.FINETUNE_* name: [value per epoch]}); empty otherwise.
    curves: dict[str, list[float]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_repeats(cls, repeats: Sequence[RepeatResult]) -> "EvaluationResult":
        if not repeats:
            raise ValueError("an evaluation needs at least one repeat")
        return cls(
            test_accuracy=MetricSummary.of([r.test.accuracy for r in repeats]),
            test_balanced_accuracy=MetricSummary.of([r.test.balanced_accuracy for r in repeats]),
            test_macro_f1=MetricSummary.of([r.test.macro_f1 for r in repeats]),
            test_auc=MetricSummary.of([r.test.auc for r in repeats]),
            val_balanced_accuracy=MetricSummary.of([r.val_balanced_accuracy for r in repeats]),
            confusion_matrix=repeats[0].test.confusion_matrix,
            repeats=tuple(repeats),
        )


def evaluation_metrics_to_flat_dict(result: EvaluationResult, prefix: str) -> dict[str, float]:
    """{"<prefix>/<metric>": mean, "<prefix>/<metric>_std": std} for every metric suffix."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown evaluation prefix {prefix!r}; valid prefixes: {', '.join(PREFIXES)}")
    flat = {}
    for suffix in METRIC_SUFFIXES:
        summary: MetricSummary = getattr(result, suffix)
        flat[f"{prefix}/{suffix}"] = summary.mean
        flat[f"{prefix}/{suffix}{STD_SUFFIX}"] = summary.std
    return flat
