"""Fine-tuning evaluation: learns separable images, selects on validation, copies the backbone."""

import pytest
import torch

from trainables.backbones import build_backbone
from trainables.evaluation import finetuning as eval_finetune
from trainables.evaluation.finetuning import finetune


def separable_images(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: dark noisy images; class 1: bright noisy images with a bright blue channel."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 2
    noise = torch.randint(0, 60, (count, 3, 16, 16), generator=generator)
    base = torch.tensor([[20, 20, 20], [120, 120, 190]])[labels].view(count, 3, 1, 1)
    return (base + noise).to(torch.uint8), labels


def test_finetune_learns_separable_data_and_leaves_the_backbone_unchanged() -> None:
    torch.manual_seed(0)
    backbone, _ = build_backbone("cbr_nano")
    backbone.eval()
    backbone.blocks[0][0].weight.requires_grad_(False)  # the copy trains it anyway
    before = {name: tensor.clone() for name, tensor in backbone.state_dict().items()}
    train_images, train_labels = separable_images(48, seed=1)
    val_images, val_labels = separable_images(16, seed=2)
    test_images, test_labels = separable_images(16, seed=3)
    augmented_batches = []

    def augment_fn(images: torch.Tensor) -> torch.Tensor:
        augmented_batches.append(len(images))
        return images.float() / 127.5 - 1

    result = finetune(
        backbone,
        train_images,
        train_labels,
        val_images,
        val_labels,
        test_images,
        test_labels,
        num_classes=2,
        epochs=3,
        batch_size=16,
        learning_rate=0.05,
        augment_fn=augment_fn,
    )

    assert result.test_accuracy.mean >= 0.9
    assert result.val_balanced_accuracy.mean >= 0.9
    assert 1 <= result.repeats[0].best_epoch <= 3
    assert augmented_batches == [16] * 9  # 3 batches an epoch, 3 epochs
    after = backbone.state_dict()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), f"{name} changed"
    assert not backbone.training
    assert not backbone.blocks[0][0].weight.requires_grad
    assert all(parameter.grad is None for parameter in backbone.parameters())


def test_finetune_tests_the_epoch_with_the_best_validation_balanced_accuracy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    backbone, _ = build_backbone("cbr_nano")
    generator = torch.Generator().manual_seed(4)
    # Random labels: the validation score moves from epoch to epoch, so the choice matters.
    images = torch.randint(0, 256, (57, 3, 16, 16), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 3, (57,), generator=generator)
    val_images, val_labels = images[41:], labels[41:]
    scores = []

    def recording_balanced_accuracy(*arguments: object) -> float:
        scores.append(original(*arguments))
        return scores[-1]

    original = eval_finetune.balanced_accuracy
    monkeypatch.setattr(eval_finetune, "balanced_accuracy", recording_balanced_accuracy)
    # The validation split doubles as the test split, so the tested model's score is visible.
    arguments = (backbone, images[:41], labels[:41], val_images, val_labels, val_images, val_labels, 3)

    # 41 training images in batches of 8: the last batch of one is skipped (BatchNorm).
    result = finetune(*arguments, epochs=5, batch_size=8, optimizer="adam", learning_rate=3e-3, seed=3)

    assert len(set(scores)) > 1, "the validation score never moved: the test cannot tell epochs apart"
    best_epoch = scores.index(max(scores)) + 1
    assert result.repeats[0].best_epoch == best_epoch
    assert result.val_balanced_accuracy.mean == pytest.approx(max(scores))
    assert result.test_balanced_accuracy.mean == pytest.approx(max(scores))
    assert (
        finetune(*arguments, epochs=5, batch_size=8, optimizer="adam", learning_rate=3e-3, seed=3) == result
    )
    with pytest.raises(ValueError, match="optimizer"):
        finetune(*arguments, epochs=1, optimizer="lbfgs")


def test_finetune_keeps_per_epoch_curves_that_agree_with_its_choice_of_epoch() -> None:
    from trainables import metrics
    from trainables.evaluation.protocol import curve_metrics

    torch.manual_seed(0)
    backbone, _ = build_backbone("cbr_nano")
    train_images, train_labels = separable_images(48, seed=1)
    val_images, val_labels = separable_images(16, seed=2)
    epochs = 4
    result = finetune(backbone, train_images, train_labels, val_images, val_labels, val_images, val_labels,
                      num_classes=2, epochs=epochs, batch_size=16, learning_rate=0.05)
    curves = result.curves
    assert sorted(curves) == sorted(metrics.FINETUNE_CURVES)
    assert all(len(values) == epochs for values in curves.values())
    accuracy = curves[metrics.FINETUNE_VAL_BALANCED_ACCURACY]
    # The tested epoch is the first best one on the validation curve.
    assert result.repeats[0].best_epoch == accuracy.index(max(accuracy)) + 1
    assert result.val_balanced_accuracy.mean == pytest.approx(max(accuracy))
    assert all(0 < value < float("inf") for value in curves[metrics.FINETUNE_TRAIN_LOSS])
    assert curves[metrics.FINETUNE_TRAIN_LOSS][-1] < curves[metrics.FINETUNE_TRAIN_LOSS][0]  # it learns
    flat = curve_metrics(curves)
    val_loss = curves[metrics.FINETUNE_VAL_LOSS]
    assert flat[metrics.FINETUNE_VAL_LOSS_RISE] == pytest.approx(val_loss[-1] - min(val_loss))
    assert flat[metrics.FINETUNE_VAL_LOSS_RISE] >= 0.0
    assert curve_metrics({}) == {}  # linear and kNN probes have no curves
