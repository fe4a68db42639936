"""Evaluation: collapse metric, kNN, linear probe, feature extraction vs naive references."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from torch.utils._python_dispatch import TorchDispatchMode

from trainables.augmentations import IMAGENET_MEAN, IMAGENET_STD
from trainables.backbones import build_backbone
from trainables.evaluation.probes import (
    SELECTION_EVERY,
    embedding_std,
    extract_features,
    is_collapsed,
    knn_accuracy,
    knn_votes,
    probe_linear,
    standardize,
    train_linear_classifier,
)


def test_embedding_std_of_a_constant_embedding_is_zero() -> None:
    constant = torch.ones(256, 64) * torch.randn(1, 64)
    collapse_std = float(embedding_std(constant))
    assert collapse_std == pytest.approx(0.0, abs=1e-6)
    assert is_collapsed(collapse_std, 64)


def test_embedding_std_of_gaussian_embeddings_is_one_over_sqrt_dim() -> None:
    generator = torch.Generator().manual_seed(0)
    embedding = torch.randn(4096, 64, generator=generator)
    collapse_std = float(embedding_std(embedding))
    assert collapse_std == pytest.approx(1 / 64**0.5, rel=0.1)
    assert not is_collapsed(collapse_std, 64)
    # Naive reference: l2-normalize each row, per-dimension sample std, mean over dimensions.
    rows = embedding.double().numpy()
    normalized = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    assert collapse_std == pytest.approx(normalized.std(axis=0, ddof=1).mean(), rel=1e-4)
    # The rows are l2-normalized first, so rescaling rows changes nothing.
    scales = torch.rand(4096, 1, generator=generator) * 5 + 0.1
    assert float(embedding_std(embedding * scales)) == pytest.approx(collapse_std, rel=1e-4)


def naive_knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    query_labels: torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float,
) -> float:
    """Weighted kNN, one query at a time: top-k cosine neighbours each vote exp(sim / T)."""
    train = train_features.double().numpy()
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    correct = 0
    for query, label in zip(query_features.double().numpy(), query_labels.tolist(), strict=True):
        similarities = train @ (query / np.linalg.norm(query))
        neighbours = np.argsort(-similarities)[:k]
        votes = np.zeros(num_classes)
        for neighbour in neighbours:
            votes[int(train_labels[neighbour])] += np.exp(similarities[neighbour] / temperature)
        correct += int(np.argmax(votes) == label)
    return correct / len(query_labels)


@pytest.mark.parametrize(("k", "temperature"), [(5, 0.07), (20, 0.5), (500, 0.1)])
def test_knn_accuracy_matches_naive_reference(k: int, temperature: float) -> None:
    generator = torch.Generator().manual_seed(1)
    num_classes = 4
    centres = torch.randn(num_classes, 16, generator=generator)
    train_labels = torch.randint(0, num_classes, (200,), generator=generator)
    query_labels = torch.randint(0, num_classes, (80,), generator=generator)
    # Overlapping clusters, so the accuracy is neither 0 nor 1 and the weighting matters.
    train_features = centres[train_labels] + 1.5 * torch.randn(200, 16, generator=generator)
    query_features = centres[query_labels] + 1.5 * torch.randn(80, 16, generator=generator)

    accuracy = knn_accuracy(
        train_features,
        train_labels,
        query_features,
        query_labels,
        num_classes,
        k=k,
        temperature=temperature,
    )

    expected = naive_knn_accuracy(
        train_features,
        train_labels,
        query_features,
        query_labels,
        num_classes,
        k=min(k, 200),
        temperature=temperature,
    )
    assert accuracy == pytest.approx(expected, abs=1e-6)  # float32 mean vs exact fraction
    assert 0.0 < accuracy < 1.0


def test_knn_accuracy_is_perfect_on_separated_clusters() -> None:
    generator = torch.Generator().manual_seed(2)
    num_classes = 3
    centres = 10 * torch.eye(num_classes, 16)
    train_labels = torch.arange(60) % num_classes
    query_labels = torch.arange(30) % num_classes
    train_features = centres[train_labels] + 0.1 * torch.randn(60, 16, generator=generator)
    query_features = centres[query_labels] + 0.1 * torch.randn(30, 16, generator=generator)
    assert (
        knn_accuracy(train_features, train_labels, query_features, query_labels, num_classes) == 1.0
    )


def test_standardize_uses_training_statistics_only() -> None:
    generator = torch.Generator().manual_seed(3)
    train = torch.randn(500, 6, generator=generator) * 3 + 2
    val = torch.randn(200, 6, generator=generator) * 3 + 7  # shifted: its own statistics differ

    train_out, val_out = standardize(train, val)

    torch.testing.assert_close(train_out.mean(dim=0), torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(train_out.std(dim=0), torch.ones(6), atol=1e-5, rtol=0)
    train_numpy = train.double().numpy()
    expected_val = (val.double().numpy() - train_numpy.mean(axis=0)) / train_numpy.std(
        axis=0, ddof=1
    )
    np.testing.assert_allclose(val_out.numpy(), expected_val, atol=1e-4)
    assert (val_out.mean(dim=0) > 1.0).all()  # not re-centred on the validation split


def test_standardize_keeps_constant_features_finite() -> None:
    train = torch.cat([torch.randn(50, 2), torch.full((50, 1), 3.0)], dim=1)
    train_out, val_out = standardize(train, torch.full((10, 3), 3.0))
    assert torch.isfinite(train_out).all() and torch.isfinite(val_out).all()


def test_linear_probe_matches_sklearn_logistic_regression() -> None:
    features, labels = make_classification(
        n_samples=6000,
        n_features=32,
        n_informative=12,
        n_redundant=4,
        n_classes=5,
        class_sep=1.0,
        random_state=0,
    )
    features = features.astype(np.float32)
    train, val, test = slice(0, 3000), slice(3000, 4000), slice(4000, 6000)
    as_features, as_labels = torch.from_numpy, (lambda array: torch.from_numpy(array).long())
    epochs = 100

    result = probe_linear(
        as_features(features[train]),
        as_labels(labels[train]),
        as_features(features[val]),
        as_labels(labels[val]),
        as_features(features[test]),
        as_labels(labels[test]),
        num_classes=5,
        repeats=1,
        epochs=epochs,
    )

    mean, std = features[train].mean(axis=0), features[train].std(axis=0, ddof=1)
    reference = LogisticRegression(max_iter=2000).fit((features[train] - mean) / std, labels[train])
    reference_accuracy = reference.score((features[test] - mean) / std, labels[test])
    # Within 1 point (20 of the 2000 test points) of the converged sklearn classifier.
    assert result.test_accuracy.mean == pytest.approx(reference_accuracy, abs=0.01)
    assert result.test_accuracy.mean > 0.4  # chance is 0.2
    assert 1 <= result.repeats[0].best_epoch <= epochs
    assert 0.0 <= result.val_balanced_accuracy.mean <= 1.0
    assert 0.0 <= result.test_balanced_accuracy.mean <= 1.0


def test_linear_probe_is_deterministic_for_a_seed() -> None:
    generator = torch.Generator().manual_seed(4)
    features = torch.randn(300, 8, generator=generator)
    labels = (features[:, 0] + 0.5 * torch.randn(300, generator=generator) > 0).long()
    arguments = (
        features[:200],
        labels[:200],
        features[200:250],
        labels[200:250],
        features[250:],
        labels[250:],
        2,
    )
    assert probe_linear(*arguments, epochs=20, seed=7) == probe_linear(*arguments, epochs=20, seed=7)


@pytest.mark.parametrize("training", [True, False])
def test_extract_features_leaves_the_backbone_untouched(training: bool) -> None:
    torch.manual_seed(0)
    backbone, feature_dim = build_backbone("cbr_nano")
    # Non-trivial BatchNorm statistics, so eval mode is distinguishable from train mode.
    with torch.no_grad():
        backbone.train()
        backbone(torch.randn(16, 3, 32, 32) * 2 + 1)
    backbone.train(training)
    before = {name: tensor.clone() for name, tensor in backbone.state_dict().items()}
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)

    features = extract_features(backbone, images, batch_size=4)

    assert backbone.training is training
    assert all(module.training is training for module in backbone.modules())
    after = backbone.state_dict()
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), f"{name} changed"
    assert features.shape == (10, feature_dim) and features.dtype == torch.float32
    # Same as one eval-mode pass over the ImageNet-normalized batch.
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    backbone.eval()
    with torch.no_grad():
        expected = backbone((images.float() / 255 - mean) / std)
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-4)


class CopiesToHost(TorchDispatchMode):
    """Counts the copies of meta-device tensors to the host, standing in for a GPU on a CPU:
    every op runs on 'meta' (shapes only) and each copy to the host returns zeros."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func is torch.ops.aten._to_copy.default and args[0].device.type == "meta"
                and kwargs.get("device") == torch.device("cpu")):
            self.count += 1
            return torch.zeros(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)
        return func(*args, **kwargs)


@pytest.mark.parametrize(("on_device", "copies"), [(False, 1), (True, 0)])
def test_features_come_to_the_host_once_not_per_batch(on_device: bool, copies: int) -> None:
    backbone, feature_dim = build_backbone("cbr_nano")
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    with CopiesToHost() as host:  # 3 batches of 4: a copy per batch would count 3
        features = extract_features(backbone.to("meta"), images, batch_size=4, device="meta",
                                    on_device=on_device)
    assert host.count == copies
    assert features.shape == (10, feature_dim) and features.device.type == ("meta" if on_device else "cpu")


def test_knn_votes_are_counted_where_the_features_are() -> None:
    train, query = torch.randn(30, 8, device="meta"), torch.randn(5, 8, device="meta")
    with CopiesToHost() as host:
        votes = knn_votes(train, torch.randint(0, 3, (30,)), query, num_classes=3, k=4)
    assert host.count == 0 and votes.device.type == "meta" and votes.shape == (5, 3)


def test_the_linear_probe_brings_its_validation_scores_to_the_host_once_per_selection_chunk() -> None:
    """Not once per epoch: the validation counts of SELECTION_EVERY epochs travel together."""
    epochs = 2 * SELECTION_EVERY + 10
    train, val = torch.randn(40, 8, device="meta"), torch.randn(10, 8, device="meta")
    train_labels, val_labels = (torch.randint(0, 3, (count,), device="meta") for count in (40, 10))
    with CopiesToHost() as host:
        classifier, _, _ = train_linear_classifier(train, train_labels, val, val_labels, 3, epochs,
                                                   learning_rate=0.01, weight_decay=1e-4)
    assert host.count == 3 and classifier.weight.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_evaluation_under_autocast_matches_the_fp32_cpu_path() -> None:
    torch.manual_seed(0)
    backbone, _ = build_backbone("resnet18")
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(96) % 3
    reference = extract_features(backbone, images, batch_size=32)
    gpu_backbone = backbone.to("cuda", memory_format=torch.channels_last)
    features = extract_features(gpu_backbone, images, batch_size=32, device="cuda", on_device=True)
    assert features.device.type == "cuda" and features.dtype == torch.float32
    torch.testing.assert_close(features.cpu(), reference, rtol=0.05, atol=0.05)  # bf16 vs fp32
    # The probe on the GPU: the same classifier as on the CPU, from the same features.
    splits = (reference[:64], labels[:64], reference[64:80], labels[64:80], reference[80:], labels[80:])
    on_cpu = probe_linear(*splits, num_classes=3, repeats=1, epochs=30)
    on_gpu = probe_linear(*(split.cuda() if split.is_floating_point() else split for split in splits),
                          num_classes=3, repeats=1, epochs=30)
    assert on_gpu.test_accuracy.mean == pytest.approx(on_cpu.test_accuracy.mean, abs=0.07)
