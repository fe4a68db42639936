"""Fine-tuning evaluation: the whole backbone plus a linear head, trained with labels.

The protocol of the "SSL vs ImageNet vs random" study (Akhtar, Bathula), which compares priors
after fine-tuning the whole network rather than on frozen features. The caller's backbone is
never modified: a deep copy is trained, and returned as the result's `finetuned_backbone`.
"""

import copy
import dataclasses
import math
from collections.abc import Callable

import torch
from torch import nn

from trainables import metrics
from trainables.augmentations import normalize
from trainables.distributed import convert_batchnorm_to_local
from trainables.evaluation.losses import focal_loss, inverse_frequency_weights
from trainables.evaluation.probes import extract_features, stratified_subset
from trainables.evaluation.results import (
    EvaluationResult,
    RepeatResult,
    balanced_accuracy,
    classification_metrics,
)
from trainables.optimization import warmup_cosine

OPTIMIZERS = ("sgd", "adam")


def finetune(backbone: nn.Module, train_images: torch.Tensor, train_labels: torch.Tensor,
             val_images: torch.Tensor, val_labels: torch.Tensor,
             test_images: torch.Tensor, test_labels: torch.Tensor, num_classes: int,
             epochs: int = 10, batch_size: int = 64, learning_rate: float = 0.01,
             device: torch.device | str = "cpu",
             augment_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
             optimizer: str = "sgd", momentum: float = 0.9, weight_decay: float = 1e-4,
             label_fraction: float = 1.0, focal_gamma: float = 0.0, class_weighted: bool = False,
             seed: int = 0) -> EvaluationResult:
    """Fine-tune a copy of `backbone` with a new linear head; test the best epoch on validation.

    Images are uint8 (N, C, H, W), C = 1 or 3. `augment_fn` maps a uint8 batch on `device` to normalized
    float views (e.g. `lambda images: augment(images, recipe)`); without it, images are only
    normalized. Every parameter of the copy is trained (requires_grad is switched on), with a
    cosine learning-rate decay per step from `learning_rate` to 0. After each epoch the model's
    validation balanced accuracy is measured in eval mode; the weights of the best epoch (the
    earliest on ties) are restored and tested. One repeat, on a stratified `label_fraction` of
    the training labels. The result's `curves` hold, per epoch, the mean training loss, the
    validation loss (the same loss, eval mode) and the validation balanced accuracy.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown fine-tuning optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    device = torch.device(device)
    model = build_classifier(backbone, num_classes, train_images[:2], seed).to(device)
    subset = stratified_subset(train_labels, label_fraction, seed)
    images, labels = train_images[subset], train_labels[subset]
    class_weights = inverse_frequency_weights(labels, num_classes).to(device) if class_weighted else None

    parameters = list(model.parameters())
    if optimizer == "sgd":
        solver = torch.optim.SGD(parameters, lr=learning_rate, momentum=momentum, weight_decay=weight_decay)
    else:
        solver = torch.optim.Adam(parameters, lr=learning_rate, weight_decay=weight_decay)
    total_steps = epochs * math.ceil(len(images) / batch_size)
    generator = torch.Generator().manual_seed(seed)
    augment_fn = augment_fn or normalize

    step, best_score, best_epoch = 0, -1.0, 0
    best_state = _cpu_copy(model.state_dict())
    curves: dict[str, list[float]] = {name: [] for name in metrics.FINETUNE_CURVES}
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        batch_losses = []
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            if len(batch) < 2:  # BatchNorm cannot normalize a batch of one image in train mode
                continue
            for group in solver.param_groups:
                group["lr"] = warmup_cosine(step, total_steps, 0, learning_rate)
            logits = model(augment_fn(images[batch].to(device)))
            loss = focal_loss(logits, labels[batch].to(device), focal_gamma, class_weights)
            solver.zero_grad(set_to_none=True)
            loss.backward()
            solver.step()
            step += 1
            batch_losses.append(loss.detach())  # no .item() here: that would sync every step
        val_logits = extract_features(model, val_images, batch_size, device)
        score = balanced_accuracy(val_labels, val_logits.argmax(dim=1), num_classes)
        val_weights = None if class_weights is None else class_weights.to(val_logits.device)
        val_loss = focal_loss(val_logits, val_labels.to(val_logits.device), focal_gamma, val_weights)
        curves[metrics.FINETUNE_TRAIN_LOSS].append(
            torch.stack(batch_losses).mean().item() if batch_losses else math.nan)
        curves[metrics.FINETUNE_VAL_LOSS].append(val_loss.item())
        curves[metrics.FINETUNE_VAL_BALANCED_ACCURACY].append(score)
        if score > best_score:
            best_score, best_epoch, best_state = score, epoch, _cpu_copy(model.state_dict())

    model.load_state_dict(best_state)
    test_scores = extract_features(model, test_images, batch_size, device).softmax(dim=1)
    return dataclasses.replace(EvaluationResult.from_repeats([RepeatResult(
        val_balanced_accuracy=best_score,
        test=classification_metrics(test_labels, test_scores),
        best_epoch=best_epoch,
        train_indices=tuple(subset.tolist()),
    )]), finetuned_backbone=model[0], curves=curves)


def build_classifier(backbone: nn.Module, num_classes: int, sample_images: torch.Tensor,
                     seed: int) -> nn.Sequential:
    """A trainable deep copy of the backbone followed by a new linear head, on the CPU.

    The copy's cross-process BatchNorms (a trial on several workers) become process-local ones
    with the same statistics: only the calling process trains it, and a SyncBatchNorm in train
    mode would wait for the others forever. The feature dimension is read from one eval-mode
    pass over `sample_images` (uint8), so any backbone that maps images to (N, D) features works.
    The caller's RNG is left as it was.
    """
    copied = convert_batchnorm_to_local(copy.deepcopy(backbone)).cpu()
    for parameter in copied.parameters():
        parameter.requires_grad_(True)
    feature_dim = extract_features(copied, sample_images, device="cpu").shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(feature_dim, num_classes)
    return nn.Sequential(copied, head)


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}
