"""CIFAR-10 through torchvision: the official train set split into train/val, the official test set.

Missing batches raise DatasetNotFoundError; batches that are there but fail torchvision's MD5 check
raise CorruptDatasetFileError naming them (torchvision's own error says "not found or corrupted").
"""

from pathlib import Path

import numpy as np

from trainables.data.pool import (
    TEST,
    TRAIN,
    CorruptDatasetFileError,
    DatasetNotFoundError,
    DecodedPool,
    resize_to_uint8,
)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_SOURCE = f"{CIFAR10_URL} (or download=True)"


def cifar10_pool(image_size: int, data_root: Path, download: bool = False) -> DecodedPool:
    """Reads `<data_root>/cifar10/cifar-10-batches-py/`; downloads there only when `download`."""
    from torchvision.datasets import CIFAR10

    root = data_root / "cifar10"
    try:
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=download)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted."
        folder = root / CIFAR10.base_folder
        corrupt = corrupt_cifar10_files(folder)
        if corrupt:
            also = f"; also corrupt: {', '.join(path.name for path in corrupt[1:])}" if corrupt[1:] else ""
            raise CorruptDatasetFileError(
                "cifar10", corrupt[0], f"its MD5 is not the published one{also}",
                f"delete {folder} and run again with download=true, or unpack {CIFAR10_URL} there again",
            ) from error
        raise DatasetNotFoundError(
            "cifar10", folder,
            "torchvision's CIFAR-10 python batches (data_batch_1..5, test_batch, batches.meta)",
            CIFAR10_SOURCE,
        ) from error
    images = resize_to_uint8(np.concatenate([train.data, test.data]), image_size, max_value=255.0)
    labels = np.array(list(train.targets) + list(test.targets), dtype=np.int64)
    official = np.array([TRAIN] * len(train.data) + [TEST] * len(test.data), dtype=np.int8)
    return DecodedPool(images, labels, tuple(train.classes), official_split=official)


def corrupt_cifar10_files(folder: Path) -> list[Path]:
    """The batch files in `folder` that are there but fail torchvision's MD5 check (a truncated
    copy or download): torchvision's own error does not say whether files are missing or damaged."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    expected = [*CIFAR10.train_list, *CIFAR10.test_list, (CIFAR10.meta["filename"], CIFAR10.meta["md5"])]
    return [folder / name for name, md5 in expected
            if (folder / name).is_file() and not check_integrity(str(folder / name), md5)]
