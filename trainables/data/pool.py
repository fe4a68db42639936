"""A decoded dataset before it is split: uint8 images at one size, labels, and what the split needs.

Every source (an npz, a folder of JPEGs, a CSV, a generator) is turned into one `DecodedPool`;
`trainables.data.splits` then cuts it into train/val/test for a seed, and `trainables.data.cache`
stores it on disk so that decoding happens once per dataset and image size.
"""

import logging
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from trainables.data.dicom import DICOM_EXTENSIONS, MultiFrameDicomError, decode_dicom, is_dicom_file
from trainables.data.windowing import HIGH_DEPTH_MODES, decode_high_depth_image

logger = logging.getLogger(__name__)

# Values of DecodedPool.official_split.
TRAIN, VAL, TEST = 0, 1, 2
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", *DICOM_EXTENSIONS)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing; str() is one line: what, where, which layout, where to get it."""

    def __init__(self, dataset: str, path: Path | str, layout: str, source: str) -> None:
        message = f"dataset {dataset!r} not found at {path}: expected {layout}; get it from {source}"
        super().__init__(" ".join(message.split()))
        self.dataset, self.path, self.layout, self.source = dataset, str(path), layout, source

    def __reduce__(self) -> tuple[type, tuple[str, str, str, str]]:
        # Pickle (Ray sends a worker's exception to the driver this way) would otherwise call
        # __init__ with the message alone and raise a TypeError in place of this error.
        return type(self), (self.dataset, self.path, self.layout, self.source)


class CorruptDatasetFileError(ValueError):
    """A dataset file that is there but does not read back (a truncated download, a damaged disk);
    str() is one line: which file, what went wrong, and what to do about it."""

    def __init__(self, dataset: str, path: Path | str, problem: str, remedy: str) -> None:
        message = f"dataset {dataset!r}: {path} is corrupt ({problem}); {remedy}"
        super().__init__(" ".join(message.split()))
        self.dataset, self.path, self.problem, self.remedy = dataset, str(path), problem, remedy

    def __reduce__(self) -> tuple[type, tuple[str, str, str, str]]:
        # As DatasetNotFoundError: unpickling calls __init__ with these four, not the message.
        return type(self), (self.dataset, self.path, self.problem, self.remedy)


class DatasetLabelError(ValueError):
    """A label that is not one of the dataset's expected classes (raised before any training)."""


@dataclass(frozen=True)
class DecodedPool:
    """All images of a dataset, decoded and resized once.

    images: uint8 (N, 3, S, S); labels: int64 (N,) indexing class_names; official_split: int8
    (N,) of TRAIN/VAL/TEST where the dataset ships a split, else None; groups: int64 (N,) ids of
    images that must stay in one split (e.g. HAM10000's lesion_id), else None; skipped_images:
    files that could not be read and were left out.
    """

    images: torch.Tensor
    labels: np.ndarray
    class_names: tuple[str, ...]
    official_split: np.ndarray | None = None
    groups: np.ndarray | None = None
    skipped_images: int = 0

    def __post_init__(self) -> None:
        count = len(self.labels)
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"images must be uint8 (N, 3, S, S), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        for name, values in (("images", self.images), ("official_split", self.official_split),
                             ("groups", self.groups)):
            if values is not None and len(values) != count:
                raise ValueError(f"{name} has {len(values)} rows for {count} labels")
        check_labels(self.labels, self.class_names, "the decoded pool")


def pool_to_arrays(pool: DecodedPool) -> dict[str, Any]:
    """numpy arrays and values for Ray's object store: stored once per node and read in place
    (zero-copy) by every worker there (ImageSplits.to_arrays says why numpy, not torch)."""
    return {"images": pool.images.numpy(), "labels": pool.labels, "class_names": pool.class_names,
            "official_split": pool.official_split, "groups": pool.groups,
            "skipped_images": pool.skipped_images}


def pool_from_arrays(arrays: dict[str, Any]) -> DecodedPool:
    """The pool over arrays from `pool_to_arrays`, sharing their memory (read-only: splitting
    gathers copies, nothing writes into them)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        images = torch.from_numpy(arrays["images"])
    return DecodedPool(images=images, labels=arrays["labels"], class_names=tuple(arrays["class_names"]),
                       official_split=arrays["official_split"], groups=arrays["groups"],
                       skipped_images=int(arrays["skipped_images"]))


def check_labels(labels: np.ndarray, class_names: Sequence[str], where: str) -> None:
    """Raise DatasetLabelError unless every label indexes class_names."""
    bad = np.unique(labels[(labels < 0) | (labels >= len(class_names))])
    if len(bad):
        raise DatasetLabelError(
            f"labels {bad.tolist()[:10]} in {where} are outside the {len(class_names)} classes "
            f"{list(class_names)}"
        )


def label_indices(values: Sequence[str], class_names: Sequence[str], where: str) -> np.ndarray:
    """Class-name strings -> int64 indices; DatasetLabelError naming any value not in class_names."""
    index = {name: position for position, name in enumerate(class_names)}
    unknown = sorted({value for value in values if value not in index})
    if unknown:
        raise DatasetLabelError(
            f"unexpected labels {unknown[:10]} in {where}; expected one of {list(class_names)}"
        )
    return np.array([index[value] for value in values], dtype=np.int64)


def resize_to_uint8_rgb(images: np.ndarray, image_size: int, max_value: float,
                        chunk_size: int = 512) -> torch.Tensor:
    """(N, H, W) or (N, H, W, 3) array -> uint8 tensor (N, 3, image_size, image_size).

    Resized in chunks so that 50,000 images at 224 px never exist as one float tensor.
    """
    chunks = []
    for start in range(0, len(images), chunk_size):
        tensor = torch.as_tensor(images[start:start + chunk_size], dtype=torch.float32) / max_value
        if tensor.ndim == 3:
            tensor = tensor.unsqueeze(1).expand(-1, 3, -1, -1)
        else:
            tensor = tensor.permute(0, 3, 1, 2)
        if tensor.shape[-2:] != (image_size, image_size):
            tensor = F.interpolate(tensor, size=(image_size, image_size), mode="bilinear",
                                   align_corners=False, antialias=tensor.shape[-1] > image_size)
        chunks.append((tensor.clamp(0, 1) * 255).round().to(torch.uint8))
    if not chunks:
        return torch.empty(0, 3, image_size, image_size, dtype=torch.uint8)
    return torch.cat(chunks).contiguous()


def decode_image(path: Path, image_size: int) -> np.ndarray:
    """One image file -> uint8 (image_size, image_size, 3), squashed to a square (nothing cropped).

    DICOM files and gray images of more than 8 bits (16-bit PNG/TIFF) are read at full depth and
    windowed (`trainables.data.dicom`, `trainables.data.windowing`); 8-bit images as they are."""
    if is_dicom_file(Path(path)):
        return decode_dicom(Path(path), image_size)
    with Image.open(path) as image:
        if image.mode in HIGH_DEPTH_MODES:
            return decode_high_depth_image(image, image_size)
        image.draft("RGB", (image_size, image_size))  # JPEG: decode at the smallest scale >= size
        rgb = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def decode_image_files(paths: Sequence[Path], image_size: int) -> tuple[torch.Tensor, np.ndarray]:
    """Decode and resize files in parallel threads (PIL releases the GIL while decoding).

    Returns (uint8 images (K, 3, S, S) of the readable files, bool mask (N,) of which were read).
    An unreadable or missing file is skipped and logged, never fatal. A multi-frame DICOM is
    refused (MultiFrameDicomError, after every file was tried, counting the others): it is not
    damaged, and which of its frames to train on is the user's choice.
    """
    output = np.zeros((len(paths), image_size, image_size, 3), dtype=np.uint8)
    readable = np.zeros(len(paths), dtype=bool)
    refused: list[tuple[int, MultiFrameDicomError]] = []

    def decode_into(position: int) -> None:
        try:
            output[position] = decode_image(paths[position], image_size)
            readable[position] = True
        except MultiFrameDicomError as error:
            refused.append((position, error))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            logger.warning("skipping unreadable image %s: %s", paths[position], error)

    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as executor:
        list(executor.map(decode_into, range(len(paths))))
    if refused:
        others = f" ({len(refused) - 1} other file(s) are multi-frame too)" if len(refused) > 1 else ""
        raise MultiFrameDicomError(f"{min(refused, key=lambda item: item[0])[1]}{others}")
    if not readable.all():
        logger.warning("skipped %d of %d images that could not be read", (~readable).sum(), len(paths))
    images = torch.from_numpy(output[readable]).permute(0, 3, 1, 2).contiguous()
    return images, readable


def pool_from_files(paths: Sequence[Path], labels: np.ndarray, class_names: tuple[str, ...],
                    image_size: int, official_split: np.ndarray | None = None,
                    groups: np.ndarray | None = None) -> DecodedPool:
    """Decode `paths` into a pool, dropping the rows of unreadable files and counting them."""
    images, readable = decode_image_files(paths, image_size)
    return DecodedPool(
        images=images,
        labels=labels[readable],
        class_names=class_names,
        official_split=None if official_split is None else official_split[readable],
        groups=None if groups is None else groups[readable],
        skipped_images=int((~readable).sum()),
    )


def is_grayscale(images: torch.Tensor) -> bool:
    """Whether every image of a uint8 (N, 3, S, S) batch has three equal channels."""
    return torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 1], images[:, 2])


def integer_ids(values: Sequence[str]) -> np.ndarray:
    """Strings -> int64 ids, equal strings equal ids (in order of first appearance)."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(value, len(ids)) for value in values], dtype=np.int64)
