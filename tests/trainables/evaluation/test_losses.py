"""Focal loss against a naive reference; inverse-frequency class weights against scikit-learn."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from trainables.evaluation.losses import focal_loss, inverse_frequency_weights


def naive_focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float) -> float:
    """-(1 - p_t)^gamma log p_t, averaged, one example at a time in float64."""
    total = 0.0
    for row, label in zip(logits.double().numpy(), labels.tolist(), strict=True):
        probabilities = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        p_t = probabilities[label]
        total += -((1 - p_t) ** gamma) * np.log(p_t)
    return total / len(labels)


def random_batch(seed: int, count: int = 64, num_classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(count, num_classes, generator=generator), torch.randint(
        0, num_classes, (count,), generator=generator
    )


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 4.0])
def test_focal_loss_matches_naive_reference(gamma: float) -> None:
    logits, labels = random_batch(int(gamma * 10))
    assert focal_loss(logits, labels, gamma).item() == pytest.approx(
        naive_focal_loss(logits, labels, gamma), abs=1e-6
    )


def test_focal_loss_at_gamma_zero_is_cross_entropy_with_and_without_class_weights() -> None:
    logits, labels = random_batch(1)
    torch.testing.assert_close(
        focal_loss(logits, labels, 0.0), F.cross_entropy(logits, labels), atol=1e-6, rtol=0
    )
    weights = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.1])
    torch.testing.assert_close(
        focal_loss(logits, labels, 0.0, weights),
        F.cross_entropy(logits, labels, weight=weights),
        atol=1e-6,
        rtol=0,
    )


def test_focal_loss_down_weights_easy_examples_and_has_finite_gradients() -> None:
    logits, labels = random_batch(2)
    logits.requires_grad_(True)
    focal = focal_loss(logits, labels, 4.0)
    focal.backward()
    assert focal.item() < F.cross_entropy(logits, labels).item()
    assert torch.isfinite(logits.grad).all()
    # A confidently correct example contributes (almost) nothing at gamma 4.
    confident = torch.tensor([[20.0, 0.0, 0.0]])
    assert focal_loss(confident, torch.tensor([0]), 4.0).item() < 1e-30


def test_inverse_frequency_weights_match_sklearn_balanced() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 5)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels.numpy())
    np.testing.assert_allclose(inverse_frequency_weights(labels, 3).numpy(), expected, rtol=1e-6)
    # A class with no example gets weight 0 (it never occurs in the loss anyway).
    assert inverse_frequency_weights(labels, 4)[3].item() == 0.0
