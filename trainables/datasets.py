"""Datasets: one place maps a dataset name to uint8 image tensors with a fixed train/val/test split.

Every dataset yields `ImageSplits`: uint8 images (N, 3, H, W) at the trial's image size and int64
labels, split deterministically from a seed. The unlabeled pretraining set is the train split, so
test images never reach pretraining. Add a dataset by adding a row to `DATASETS`.
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split


@dataclass(frozen=True)
class ImageSplits:
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split_hash(self) -> str:
        """A short hash of the labels and image bytes of each split: equal hashes, equal data."""
        digest = hashlib.sha256()
        for tensor in (self.train_images, self.train_labels, self.val_images, self.val_labels,
                       self.test_images, self.test_labels):
            digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


def stratified_split(
    labels: np.ndarray, seed: int, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a stratified train/val/test split, identical for the same labels and seed."""
    indices = np.arange(len(labels))
    train_fraction, val_fraction, test_fraction = fractions
    train_val, test = train_test_split(
        indices, test_size=test_fraction, stratify=labels, random_state=seed
    )
    train, val = train_test_split(
        train_val,
        test_size=val_fraction / (train_fraction + val_fraction),
        stratify=labels[train_val],
        random_state=seed,
    )
    return np.sort(train), np.sort(val), np.sort(test)


def resize_to_uint8_rgb(images: np.ndarray, image_size: int, max_value: float) -> torch.Tensor:
    """(N, H, W) or (N, H, W, 3) array -> uint8 tensor (N, 3, image_size, image_size)."""
    tensor = torch.as_tensor(images, dtype=torch.float32) / max_value
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(1).expand(-1, 3, -1, -1)
    else:
        tensor = tensor.permute(0, 3, 1, 2)
    tensor = F.interpolate(tensor, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return (tensor.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()


def _split_arrays(
    images: torch.Tensor, labels: np.ndarray, seed: int, class_names: tuple[str, ...]
) -> ImageSplits:
    train, val, test = stratified_split(labels, seed)
    labels_tensor = torch.as_tensor(labels, dtype=torch.int64)
    return ImageSplits(
        train_images=images[train], train_labels=labels_tensor[train],
        val_images=images[val], val_labels=labels_tensor[val],
        test_images=images[test], test_labels=labels_tensor[test],
        class_names=class_names,
    )


def load_digits(image_size: int, seed: int, data_root: str) -> ImageSplits:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), upsampled.

    Real and offline, but easy: random features already reach ~0.9 linear accuracy, so it shows
    that the plumbing works, not whether SSL helps.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = resize_to_uint8_rgb(digits.images, image_size, max_value=16.0)
    return _split_arrays(images, digits.target, seed, tuple(str(d) for d in range(10)))


@dataclass(frozen=True)
class DatasetSpec:
    description: str
    load: Callable[[int, int, str], ImageSplits]  # (image_size, seed, data_root) -> splits


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec("scikit-learn's bundled 8x8 digits, upsampled (offline)", load_digits),
}


def load_dataset(name: str, image_size: int, seed: int, data_root: str = "data") -> ImageSplits:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    return DATASETS[name].load(image_size, seed, data_root)
