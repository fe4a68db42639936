"""Evaluation metrics against scikit-learn, their summary over repeats, and the flat metric keys."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)

from trainables.evaluation.results import (
    METRIC_SUFFIXES,
    STD_SUFFIX,
    ClassificationMetrics,
    EvaluationResult,
    MetricSummary,
    RepeatResult,
    classification_metrics,
    evaluation_metrics_to_flat_dict,
    one_vs_rest_auc,
)


def random_scores(count: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (count,), generator=generator)
    # Scores a little better than chance, so no metric sits at a trivial value.
    logits = torch.randn(count, num_classes, generator=generator) + 0.8 * torch.eye(num_classes)[labels]
    return labels, logits.softmax(dim=1)


def assert_matches_sklearn(
    metrics: ClassificationMetrics, labels: torch.Tensor, scores: torch.Tensor
) -> None:
    y_true, y_score = labels.numpy(), scores.double().numpy()
    y_pred = y_score.argmax(axis=1)
    num_classes = y_score.shape[1]
    assert metrics.accuracy == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    with warnings.catch_warnings():  # sklearn warns when a predicted class is absent from y_true
        warnings.simplefilter("ignore")
        assert metrics.balanced_accuracy == pytest.approx(balanced_accuracy_score(y_true, y_pred), abs=1e-12)
        assert metrics.macro_f1 == pytest.approx(f1_score(y_true, y_pred, average="macro"), abs=1e-12)
    expected_confusion = confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))
    assert metrics.confusion_matrix == expected_confusion.tolist()
    assert all(isinstance(count, int) for row in metrics.confusion_matrix for count in row)


@pytest.mark.parametrize(("num_classes", "seed"), [(3, 0), (5, 1), (7, 2)])
def test_multiclass_metrics_match_sklearn(num_classes: int, seed: int) -> None:
    labels, scores = random_scores(400, num_classes, seed)
    metrics = classification_metrics(labels, scores)
    assert_matches_sklearn(metrics, labels, scores)
    expected_auc = roc_auc_score(labels.numpy(), scores.double().numpy(), multi_class="ovr", average="macro")
    assert metrics.auc == pytest.approx(expected_auc, abs=1e-9)
    assert 0.0 < metrics.macro_f1 < 1.0 and 0.5 < metrics.auc < 1.0


def test_binary_metrics_match_sklearn() -> None:
    labels, scores = random_scores(300, 2, 3)
    metrics = classification_metrics(labels, scores)
    assert_matches_sklearn(metrics, labels, scores)
    assert metrics.auc == pytest.approx(
        roc_auc_score(labels.numpy(), scores[:, 1].double().numpy()), abs=1e-9
    )


def test_a_class_absent_from_the_test_labels_is_left_out_of_auc_and_recall() -> None:
    labels, scores = random_scores(300, 4, 4)
    labels = labels.clamp(max=2)  # class 3 never occurs, but is still predicted sometimes
    assert (scores.argmax(dim=1) == 3).any()

    metrics = classification_metrics(labels, scores)

    assert_matches_sklearn(metrics, labels, scores)
    per_class = [roc_auc_score(labels.numpy() == c, scores[:, c].double().numpy()) for c in range(3)]
    assert metrics.auc == pytest.approx(np.mean(per_class), abs=1e-9)
    assert metrics.confusion_matrix[3] == [0, 0, 0, 0]


def test_auc_is_nan_with_a_single_class_present() -> None:
    scores = torch.rand(10, 3).softmax(dim=1)
    assert np.isnan(one_vs_rest_auc(torch.zeros(10, dtype=torch.long), scores))


def make_repeat(accuracy: float, val: float) -> RepeatResult:
    test = ClassificationMetrics(accuracy, accuracy - 0.1, accuracy - 0.2, accuracy + 0.05, [[1, 0], [0, 1]])
    return RepeatResult(val_balanced_accuracy=val, test=test, best_epoch=3, train_indices=(0, 1))


def test_summary_is_numpy_mean_and_population_std_over_repeats() -> None:
    accuracies, vals = [0.71, 0.74, 0.80], [0.6, 0.65, 0.61]
    result = EvaluationResult.from_repeats([make_repeat(a, v) for a, v in zip(accuracies, vals, strict=True)])
    assert result.test_accuracy.mean == pytest.approx(np.mean(accuracies))
    assert result.test_accuracy.std == pytest.approx(np.std(accuracies))
    assert result.test_auc.values == pytest.approx(tuple(a + 0.05 for a in accuracies))
    assert result.val_balanced_accuracy.std == pytest.approx(np.std(vals))
    assert result.confusion_matrix == result.repeats[0].test.confusion_matrix
    assert MetricSummary.of([0.5]).std == 0.0


def test_flat_dict_has_a_mean_and_a_std_per_metric_under_the_prefix() -> None:
    result = EvaluationResult.from_repeats([make_repeat(0.7, 0.6), make_repeat(0.8, 0.7)])
    flat = evaluation_metrics_to_flat_dict(result, "knn")
    assert flat["knn/test_accuracy"] == pytest.approx(0.75)
    assert flat["knn/test_accuracy_std"] == pytest.approx(0.05)
    assert flat["knn/val_balanced_accuracy"] == pytest.approx(0.65)
    expected_keys = {f"knn/{suffix}{std}" for suffix in METRIC_SUFFIXES for std in ("", STD_SUFFIX)}
    assert set(flat) == expected_keys
    assert {"knn/test_macro_f1", "knn/test_auc", "knn/test_balanced_accuracy"} <= set(flat)
    assert all(isinstance(value, float) for value in flat.values())
    with pytest.raises(ValueError, match="linear"):
        evaluation_metrics_to_flat_dict(result, "linaer")
