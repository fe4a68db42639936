"""Classification losses for the evaluation heads: focal loss and inverse-frequency class weights."""

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float = 0.0,
               class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Focal loss (Lin et al., 2017): mean of -w_t (1 - p_t)^gamma log p_t.

    logits (N, C), labels (N,) int64, class_weights (C,) or None; returns a scalar. gamma = 0
    is cross entropy; the BiT + SimSiam study probes with gamma = 4 on imbalanced HAM10000.
    With class weights the mean is weighted, sum(w_t l_t) / sum(w_t), as in F.cross_entropy.
    """
    log_p_t = F.log_softmax(logits.float(), dim=1).gather(1, labels.view(-1, 1)).squeeze(1)
    loss = -log_p_t
    if gamma != 0:  # skipped at 0: the gradient of x**0 at x = 0 would be nan
        loss = (1 - log_p_t.exp()) ** gamma * loss
    if class_weights is None:
        return loss.mean()
    weights = class_weights.to(loss)[labels]
    return (weights * loss).sum() / weights.sum()


def inverse_frequency_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """N / (C * n_c) per class (sklearn's "balanced"); 0 for a class without examples."""
    counts = torch.bincount(labels.cpu(), minlength=num_classes).double()
    weights = len(labels) / (num_classes * counts.clamp_min(1))
    return torch.where(counts > 0, weights, 0.0).float()
