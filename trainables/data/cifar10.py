"""CIFAR-10 through torchvision: the official train set split into train/val, the official test set."""

from pathlib import Path

import numpy as np

from trainables.data.pool import TEST, TRAIN, DatasetNotFoundError, DecodedPool, resize_to_uint8_rgb

CIFAR10_SOURCE = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (or download=True)"


def cifar10_pool(image_size: int, data_root: Path, download: bool = False) -> DecodedPool:
    """Reads `<data_root>/cifar10/cifar-10-batches-py/`; downloads there only when `download`."""
    from torchvision.datasets import CIFAR10

    root = data_root / "cifar10"
    try:
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=download)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted."
        raise DatasetNotFoundError(
            "cifar10", root / "cifar-10-batches-py",
            "torchvision's CIFAR-10 python batches (data_batch_1..5, test_batch, batches.meta)",
            CIFAR10_SOURCE,
        ) from error
    images = resize_to_uint8_rgb(np.concatenate([train.data, test.data]), image_size, max_value=255.0)
    labels = np.array(list(train.targets) + list(test.targets), dtype=np.int64)
    official = np.array([TRAIN] * len(train.data) + [TEST] * len(test.data), dtype=np.int8)
    return DecodedPool(images, labels, tuple(train.classes), official_split=official)
