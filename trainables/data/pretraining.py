"""The pretraining pool: the images SSL trains on, which need not be the evaluation dataset's.

A trial pretrains on its evaluation dataset's train split (the default), on another registered
dataset's train split (its labels ignored), or on an `unlabeled` folder. The evaluation's val
and test images never reach pretraining: from the same files the split rule keeps them out;
from other files every pretraining image whose pixels equal an evaluation val/test image (a
content hash at the trial's image size) is dropped and counted (`overlap_removed`).
`pretrain_fraction` then keeps a seeded subset. Everything here is pure numpy/torch.
"""

import hashlib
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class PretrainingPool:
    """uint8 images (N, C, S, S) to pretrain on (C = 1: gray), and where they came from."""

    images: torch.Tensor
    dataset: str
    grayscale: bool
    overlap_removed: int = 0  # images equal to an evaluation val/test image, dropped
    skipped_images: int = 0
    fraction: float = 1.0

    def content_hash(self) -> str:
        """A short hash of the pool's image bytes: equal hashes, the same pretraining images."""
        return content_hash(self.images)


def content_hash(images: torch.Tensor) -> str:
    """A short hash of a uint8 image tensor's bytes (a pool's, or an evaluation train split's when
    SSL pretrains on it): equal hashes, the same pretraining images."""
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()[:16]


def image_hashes(images: torch.Tensor) -> list[bytes]:
    """One sha256 digest per image of a uint8 (N, C, S, S) tensor: equal pixels, equal digests. A
    gray image hashes as its one channel whether it is stored with one or with three equal ones,
    so a gray pool is compared with a colour evaluation set (and the other way round) by pixels."""
    array = images.contiguous().numpy()
    return [hashlib.sha256((image[:1] if (image[:1] == image).all() else image).tobytes()).digest()
            for image in array]


def without_images_in(images: torch.Tensor, excluded: torch.Tensor) -> tuple[torch.Tensor, int]:
    """`images` less those whose pixels equal one of `excluded` (same size): (kept, removed count)."""
    if len(excluded) == 0 or len(images) == 0:
        return images, 0
    if images.shape[2:] != excluded.shape[2:]:
        raise ValueError(f"cannot compare images {tuple(images.shape[1:])} with {tuple(excluded.shape[1:])}")
    forbidden = set(image_hashes(excluded))
    keep = torch.tensor([digest not in forbidden for digest in image_hashes(images)], dtype=torch.bool)
    return images[keep], int((~keep).sum())


def seeded_subset(count: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of round(fraction * count) rows (at least one), fixed by the seed."""
    if not 0 < fraction <= 1:
        raise ValueError(f"bad pretrain_fraction {fraction}; it must be in (0, 1]")
    if fraction == 1:
        return np.arange(count)
    keep = max(1, round(fraction * count))
    return np.sort(np.random.default_rng(seed).permutation(count)[:keep])
