"""Evaluation of a backbone: frozen features, a kNN monitor, the collapse metric, a linear probe."""

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from torch import nn

from trainables.augmentations import normalize


@torch.no_grad()
def extract_features(backbone: nn.Module, images: torch.Tensor, batch_size: int = 256,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Backbone features of uint8 images (N, 3, H, W), in eval mode, as float32 on the CPU.

    Restores the backbone's train/eval mode afterwards.
    """
    was_training = backbone.training
    backbone.eval()
    features = [
        backbone(normalize(images[start:start + batch_size].to(device))).float().cpu()
        for start in range(0, len(images), batch_size)
    ]
    backbone.train(was_training)
    return torch.cat(features)


def embedding_std(embedding: torch.Tensor) -> float:
    """SimSiam's collapse metric: per-dimension std of the l2-normalized embeddings, averaged.

    About 1/sqrt(D) for well-spread embeddings, 0 for a collapsed (constant) output.
    """
    normalized = F.normalize(embedding.detach().float(), dim=1)
    return normalized.std(dim=0).mean().item()


def is_collapsed(collapse_std: float, dim: int, fraction: float = 0.1) -> bool:
    """Collapsed when the collapse metric is below `fraction` of the healthy 1/sqrt(dim)."""
    return collapse_std < fraction / dim**0.5


@torch.no_grad()
def knn_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor,
                 query_features: torch.Tensor, query_labels: torch.Tensor,
                 num_classes: int, k: int = 20, temperature: float = 0.07) -> float:
    """Weighted kNN accuracy on cosine similarity (Wu et al., 2018, as used by SSL monitors)."""
    train_features = F.normalize(train_features, dim=1)
    query_features = F.normalize(query_features, dim=1)
    k = min(k, len(train_features))
    similarity, index = (query_features @ train_features.T).topk(k, dim=1)
    weights = (similarity / temperature).exp()
    votes = torch.zeros(len(query_features), num_classes)
    votes.scatter_add_(1, train_labels[index], weights)
    return (votes.argmax(dim=1) == query_labels).float().mean().item()


@dataclass(frozen=True)
class ProbeResult:
    val_balanced_accuracy: float
    test_accuracy: float
    test_balanced_accuracy: float
    best_epoch: int


def standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Standardize every feature set with the training split's mean and std."""
    mean, std = train.mean(dim=0), train.std(dim=0).clamp_min(1e-6)
    return [(features - mean) / std for features in (train, *others)]


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor,
                 val_features: torch.Tensor, val_labels: torch.Tensor,
                 test_features: torch.Tensor, test_labels: torch.Tensor,
                 num_classes: int, epochs: int = 100, learning_rate: float = 0.01,
                 weight_decay: float = 1e-4, seed: int = 0) -> ProbeResult:
    """Multinomial logistic regression on frozen, standardized features.

    Trained full-batch with Adam; the classifier with the best validation balanced accuracy is
    the one tested (the protocol of the BiT + SimSiam study).
    """
    torch.manual_seed(seed)
    train_x, val_x, test_x = standardize(train_features, val_features, test_features)
    classifier = nn.Linear(train_x.shape[1], num_classes)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=learning_rate, weight_decay=weight_decay)
    best_score, best_epoch, best_state = -1.0, 0, copy.deepcopy(classifier.state_dict())
    for epoch in range(1, epochs + 1):
        optimizer.zero_grad()
        F.cross_entropy(classifier(train_x), train_labels).backward()
        optimizer.step()
        with torch.no_grad():
            score = balanced_accuracy_score(val_labels, classifier(val_x).argmax(dim=1))
        if score > best_score:
            best_score, best_epoch, best_state = score, epoch, copy.deepcopy(classifier.state_dict())
    classifier.load_state_dict(best_state)
    with torch.no_grad():
        predictions = classifier(test_x).argmax(dim=1)
    return ProbeResult(
        val_balanced_accuracy=float(best_score),
        test_accuracy=float(accuracy_score(test_labels, predictions)),
        test_balanced_accuracy=float(balanced_accuracy_score(test_labels, predictions)),
        best_epoch=best_epoch,
    )
