"""Evaluation of a frozen backbone: features, the collapse metric, kNN and linear probes.

The probes follow the BiT + SimSiam study's protocol: features are extracted once, in eval
mode; each repeat draws a stratified subset of the training labels, trains a classifier on it,
selects the epoch with the best validation balanced accuracy and tests that classifier. The
probes return an `EvaluationResult` (trainables.evaluation.results); fine-tuning is in `finetuning`.
"""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from trainables.augmentations import normalize
from trainables.data import splits as data_splits
from trainables.devices import memory_format, mixed_precision
from trainables.evaluation.losses import focal_loss, inverse_frequency_weights
from trainables.evaluation.results import (
    EvaluationResult,
    RepeatResult,
    balanced_accuracy,
    classification_metrics,
    confusion_balanced_accuracy,
    confusion_counts,
)

# The linear probe's epochs whose validation scores come to the host together: one host-device
# sync per this many epochs, and at most this many copies of the classifier kept meanwhile.
SELECTION_EVERY = 25


@torch.no_grad()
def extract_features(backbone: nn.Module, images: torch.Tensor, batch_size: int = 256,
                     device: torch.device | str = "cpu", on_device: bool = False) -> torch.Tensor:
    """Backbone features of uint8 images (N, C, H, W), in eval mode, as float32: on the host, or
    on `device` with `on_device` (the kNN and the probes then run there too). A gray batch
    (C = 1) is broadcast to three channels by `normalize`.

    Runs as the trial's training does on `device` (trainables.devices): bf16 autocast and
    channels-last on GPUs, plain fp32 on CPUs. Each batch's features are written into one
    float32 tensor on the device, copied to the host once at the end: no blocking copy per
    batch. Restores the backbone's train/eval mode afterwards.
    """
    device = torch.device(device)
    was_training = backbone.training
    backbone.eval()
    features = None
    with mixed_precision(device):
        for start in range(0, len(images), batch_size):
            batch = normalize(images[start:start + batch_size].to(device, non_blocking=True))
            output = backbone(batch.contiguous(memory_format=memory_format(device)))
            if features is None:
                features = torch.empty((len(images), *output.shape[1:]), dtype=torch.float32, device=device)
            features[start:start + len(output)] = output
    backbone.train(was_training)
    if features is None:
        raise ValueError("extract_features got no images; give at least one")
    return features if on_device else features.cpu()


def embedding_std(embedding: torch.Tensor) -> torch.Tensor:
    """SimSiam's collapse metric: per-dimension std of the l2-normalized embeddings, averaged.

    About 1/sqrt(D) for well-spread embeddings, 0 for a collapsed (constant) output. A 0-dim
    tensor on the embedding's device: the loop sums it every step without a host-device sync.
    """
    normalized = F.normalize(embedding.detach().float(), dim=1)
    return normalized.std(dim=0).mean()


def is_collapsed(collapse_std: float, dim: int, fraction: float = 0.1) -> bool:
    """Collapsed when the collapse metric is below `fraction` of the healthy 1/sqrt(dim)."""
    return collapse_std < fraction / dim**0.5


@torch.no_grad()
def knn_votes(train_features: torch.Tensor, train_labels: torch.Tensor, query_features: torch.Tensor,
              num_classes: int, k: int = 20, temperature: float = 0.07) -> torch.Tensor:
    """Weighted kNN votes (Wu et al., 2018, as used by SSL monitors), (N_query, num_classes).

    The k nearest training features by cosine similarity each vote exp(similarity / T) for
    their class; the predicted class is the argmax.
    """
    device = query_features.device  # the votes are counted where the features are
    train_features = F.normalize(train_features.float().to(device), dim=1)
    query_features = F.normalize(query_features.float(), dim=1)
    k = min(k, len(train_features))
    similarity, index = (query_features @ train_features.T).topk(k, dim=1)
    weights = (similarity / temperature).exp()
    votes = torch.zeros(len(query_features), num_classes, device=device)
    votes.scatter_add_(1, train_labels.to(device)[index], weights)
    return votes


@torch.no_grad()
def knn_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor,
                 query_features: torch.Tensor, query_labels: torch.Tensor,
                 num_classes: int, k: int = 20, temperature: float = 0.07) -> float:
    """Accuracy of the weighted kNN vote: the per-epoch monitor."""
    votes = knn_votes(train_features, train_labels, query_features, num_classes, k, temperature)
    return (votes.argmax(dim=1) == query_labels.to(votes.device)).float().mean().item()


def stratified_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices of a random `fraction` of each class (at least one example per class).

    fraction = 1.0 returns every index, whatever the seed. The same rule as the datasets' own
    labelled subset (trainables.data.splits), on tensors.
    """
    return torch.as_tensor(data_splits.stratified_subset(labels.cpu().numpy(), fraction, seed))


@torch.no_grad()
def probe_knn(train_features: torch.Tensor, train_labels: torch.Tensor,
              val_features: torch.Tensor, val_labels: torch.Tensor,
              test_features: torch.Tensor, test_labels: torch.Tensor, num_classes: int,
              k: int = 20, temperature: float = 0.07, label_fraction: float = 1.0,
              repeats: int = 1, seed: int = 0) -> EvaluationResult:
    """Weighted kNN on frozen features; test AUC from the votes normalized to sum to 1.

    Nothing is trained, so repeats differ only by their label subsets (best_epoch is 0). The
    votes are counted where the features are (on the GPU when extracted there).
    """
    results = []
    for repeat in range(repeats):
        subset = stratified_subset(train_labels, label_fraction, seed + repeat)
        bank_features, bank_labels = train_features[subset], train_labels[subset]
        val_votes = knn_votes(bank_features, bank_labels, val_features, num_classes, k, temperature)
        test_votes = knn_votes(bank_features, bank_labels, test_features, num_classes, k, temperature)
        results.append(RepeatResult(
            val_balanced_accuracy=balanced_accuracy(val_labels, val_votes.argmax(dim=1), num_classes),
            test=classification_metrics(test_labels, test_votes / test_votes.sum(dim=1, keepdim=True)),
            best_epoch=0,
            train_indices=tuple(subset.tolist()),
        ))
    return EvaluationResult.from_repeats(results)


def standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Standardize every feature set with the training split's mean and std."""
    mean, std = train.mean(dim=0), train.std(dim=0).clamp_min(1e-6)
    return [(features - mean) / std for features in (train, *others)]


def train_linear_classifier(train_x: torch.Tensor, train_labels: torch.Tensor,
                            val_x: torch.Tensor, val_labels: torch.Tensor, num_classes: int,
                            epochs: int, learning_rate: float, weight_decay: float,
                            focal_gamma: float = 0.0, class_weights: torch.Tensor | None = None,
                            seed: int = 0) -> tuple[nn.Linear, float, int]:
    """Multinomial logistic regression, full-batch Adam; returns the best epoch's classifier.

    Returns (classifier, its validation balanced accuracy, its epoch); the earliest epoch wins
    ties. The caller's global RNG is left as it was. Trains where the features are, with one
    host-device sync per SELECTION_EVERY epochs.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifier = nn.Linear(train_x.shape[1], num_classes)  # drawn on the CPU: the same everywhere
    classifier = classifier.to(train_x.device)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=learning_rate, weight_decay=weight_decay)
    best_score, best_epoch, best_state = -1.0, 0, copy.deepcopy(classifier.state_dict())
    for first in range(1, epochs + 1, SELECTION_EVERY):
        # Each epoch's validation counts and weights stay on the device; the scores come to the
        # host once per SELECTION_EVERY epochs (a sync point), not once per epoch.
        chunk = range(first, min(first + SELECTION_EVERY, epochs + 1))
        confusions, weights = [], []
        for _ in chunk:
            optimizer.zero_grad()
            focal_loss(classifier(train_x), train_labels, focal_gamma, class_weights).backward()
            optimizer.step()
            with torch.no_grad():
                confusions.append(confusion_counts(val_labels, classifier(val_x).argmax(dim=1), num_classes))
                weights.append({name: value.clone() for name, value in classifier.state_dict().items()})
        for epoch, confusion, state in zip(chunk, torch.stack(confusions).cpu(), weights, strict=True):
            score = confusion_balanced_accuracy(confusion)
            if score > best_score:
                best_score, best_epoch, best_state = score, epoch, state
    classifier.load_state_dict(best_state)
    return classifier, best_score, best_epoch


def probe_linear(train_features: torch.Tensor, train_labels: torch.Tensor,
                 val_features: torch.Tensor, val_labels: torch.Tensor,
                 test_features: torch.Tensor, test_labels: torch.Tensor, num_classes: int,
                 label_fraction: float = 1.0, repeats: int = 3, focal_gamma: float = 0.0,
                 class_weighted: bool = False, epochs: int = 100, learning_rate: float = 0.01,
                 weight_decay: float = 1e-4, seed: int = 0) -> EvaluationResult:
    """Linear probe on frozen features, repeated over stratified label subsets.

    Repeat r uses seed + r for its label subset and its classifier's initialization, so with
    label_fraction = 1.0 the repeats differ only by initialization. Features are standardized
    with the statistics of every training feature (no labels involved, so the unlabelled part
    may be used). class_weighted: inverse-frequency weights of the repeat's labelled subset.
    Trains where the features are (on the GPU when extracted there).
    """
    train_x, val_x, test_x = standardize(train_features, val_features, test_features)
    device = train_x.device
    train_labels, val_labels = train_labels.to(device), val_labels.to(device)
    results = []
    for repeat in range(repeats):
        subset = stratified_subset(train_labels, label_fraction, seed + repeat)
        subset_labels = train_labels[subset]
        weights = inverse_frequency_weights(subset_labels, num_classes) if class_weighted else None
        classifier, best_score, best_epoch = train_linear_classifier(
            train_x[subset], subset_labels, val_x, val_labels, num_classes, epochs, learning_rate,
            weight_decay, focal_gamma, weights, seed + repeat,
        )
        with torch.no_grad():
            test_scores = classifier(test_x).softmax(dim=1)
        results.append(RepeatResult(
            val_balanced_accuracy=best_score,
            test=classification_metrics(test_labels, test_scores),
            best_epoch=best_epoch,
            train_indices=tuple(subset.tolist()),
        ))
    return EvaluationResult.from_repeats(results)
