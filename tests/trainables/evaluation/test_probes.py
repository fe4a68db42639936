"""Linear and kNN probes on frozen features: frozen backbone, sklearn agreement, label subsets."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from trainables.backbones import build_backbone
from trainables.evaluation.probes import (
    extract_features,
    knn_accuracy,
    knn_votes,
    probe_knn,
    probe_linear,
    stratified_subset,
)


def classification_splits(
    seed: int, count: int = 3000, num_classes: int = 4, weights: list[float] | None = None
) -> list[torch.Tensor]:
    features, labels = make_classification(
        n_samples=count,
        n_features=24,
        n_informative=10,
        n_redundant=4,
        n_classes=num_classes,
        class_sep=1.0,
        weights=weights,
        random_state=seed,
    )
    features, labels = torch.from_numpy(features.astype(np.float32)), torch.from_numpy(labels).long()
    train, val = count // 2, count // 2 + count // 6
    return [
        features[:train],
        labels[:train],
        features[train:val],
        labels[train:val],
        features[val:],
        labels[val:],
    ]


def test_the_evaluation_path_leaves_the_backbone_weights_untouched() -> None:
    torch.manual_seed(0)
    backbone, _ = build_backbone("cbr_nano")
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a stray train-mode pass would show
        backbone.train()
        backbone(torch.randn(8, 3, 16, 16) * 2 + 1)
    before = {name: tensor.clone() for name, tensor in backbone.state_dict().items()}
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (60, 3, 16, 16), dtype=torch.uint8, generator=generator)
    labels = torch.arange(60) % 3

    features = [
        extract_features(backbone, images[part], batch_size=16)
        for part in (slice(0, 30), slice(30, 45), slice(45, 60))
    ]
    splits = [features[0], labels[:30], features[1], labels[30:45], features[2], labels[45:]]
    linear = probe_linear(
        *splits, num_classes=3, label_fraction=0.5, repeats=2, focal_gamma=4.0, class_weighted=True, epochs=5
    )
    knn = probe_knn(*splits, num_classes=3, k=5)

    after = backbone.state_dict()
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), f"{name} changed"
    assert backbone.training
    assert all(parameter.grad is None for parameter in backbone.parameters())
    assert len(linear.repeats) == 2 and len(knn.repeats) == 1


def test_probe_matches_sklearn_logistic_regression_on_all_labels() -> None:
    train_x, train_y, val_x, val_y, test_x, test_y = classification_splits(seed=4, count=6000)

    result = probe_linear(
        train_x,
        train_y,
        val_x,
        val_y,
        test_x,
        test_y,
        num_classes=4,
        label_fraction=1.0,
        repeats=2,
        focal_gamma=0.0,
        epochs=100,
    )

    mean, std = train_x.mean(dim=0), train_x.std(dim=0)
    reference = LogisticRegression(max_iter=2000).fit(((train_x - mean) / std).numpy(), train_y.numpy())
    reference_accuracy = reference.score(((test_x - mean) / std).numpy(), test_y.numpy())
    # Within 1 point (30 of the 3000 test points), for every repeat, not just their mean.
    for accuracy in result.test_accuracy.values:
        assert accuracy == pytest.approx(reference_accuracy, abs=0.01)
    assert result.test_accuracy.mean > 0.4  # chance is 0.25
    # All labels: every repeat trains on the whole training split, only the seed differs.
    assert all(repeat.train_indices == tuple(range(len(train_y))) for repeat in result.repeats)
    assert all(1 <= repeat.best_epoch <= 100 for repeat in result.repeats)


def test_repeats_draw_different_stratified_label_subsets() -> None:
    train_x, train_y, val_x, val_y, test_x, test_y = classification_splits(seed=6)
    class_counts = torch.bincount(train_y, minlength=4)

    result = probe_linear(
        train_x,
        train_y,
        val_x,
        val_y,
        test_x,
        test_y,
        num_classes=4,
        label_fraction=0.1,
        repeats=3,
        epochs=20,
    )

    subsets = [repeat.train_indices for repeat in result.repeats]
    assert len(set(subsets)) == 3
    for subset in subsets:
        subset_counts = torch.bincount(train_y[list(subset)], minlength=4)
        assert (subset_counts > 0).all()
        torch.testing.assert_close(subset_counts.float(), (class_counts * 0.1).round(), atol=0, rtol=0)
    accuracies = [repeat.test.accuracy for repeat in result.repeats]
    assert result.test_accuracy.values == pytest.approx(tuple(accuracies))
    assert result.test_accuracy.mean == pytest.approx(np.mean(accuracies))
    assert result.test_accuracy.std == pytest.approx(np.std(accuracies))
    macro_f1 = [repeat.test.macro_f1 for repeat in result.repeats]
    assert result.test_macro_f1.std == pytest.approx(np.std(macro_f1))
    assert result.test_accuracy.std > 0  # different subsets, different classifiers
    assert result.confusion_matrix == result.repeats[0].test.confusion_matrix


def test_stratified_subset_keeps_a_rare_class_and_rejects_bad_fractions() -> None:
    labels = torch.tensor([0] * 95 + [1] * 5)
    subset = stratified_subset(labels, 0.1, seed=0)
    assert torch.bincount(labels[subset]).tolist() == [10, 1]  # round(0.5) -> at least one
    assert torch.equal(stratified_subset(labels, 1.0, seed=3), torch.arange(100))
    assert not torch.equal(stratified_subset(labels, 0.5, seed=0), stratified_subset(labels, 0.5, seed=1))
    for fraction in (0.0, 1.5):
        with pytest.raises(ValueError, match="label_fraction"):
            stratified_subset(labels, fraction, seed=0)


def test_class_weights_raise_balanced_accuracy_on_imbalanced_classes() -> None:
    splits = classification_splits(seed=7, count=3000, num_classes=3, weights=[0.85, 0.1, 0.05])

    plain = probe_linear(*splits, num_classes=3, repeats=1, epochs=60)
    weighted = probe_linear(
        *splits, num_classes=3, repeats=1, epochs=60, class_weighted=True, focal_gamma=2.0
    )

    assert weighted.test_balanced_accuracy.mean > plain.test_balanced_accuracy.mean


def test_knn_probe_agrees_with_knn_accuracy_and_scores_auc_on_normalized_votes() -> None:
    train_x, train_y, val_x, val_y, test_x, test_y = classification_splits(seed=8, count=1000)

    result = probe_knn(train_x, train_y, val_x, val_y, test_x, test_y, num_classes=4, k=20, temperature=0.07)

    expected = knn_accuracy(train_x, train_y, test_x, test_y, num_classes=4, k=20, temperature=0.07)
    assert result.test_accuracy.mean == pytest.approx(expected, abs=1e-6)
    votes = knn_votes(train_x, train_y, test_x, num_classes=4)
    scores = (votes / votes.sum(dim=1, keepdim=True)).double().numpy()
    assert result.test_auc.mean == pytest.approx(
        roc_auc_score(test_y.numpy(), scores, multi_class="ovr"), abs=1e-9
    )
    assert result.repeats[0].best_epoch == 0
    assert 0.25 < result.test_accuracy.mean < 1.0
