"""A decoded dataset before it is split: uint8 images at one size, labels, and what the split needs.

Every source (an npz, a folder of JPEGs, a CSV, a generator) is turned into one `DecodedPool`;
`trainables.data.splits` then cuts it into train/val/test for a seed, and `trainables.data.cache`
stores it on disk so that decoding happens once per dataset and image size.

Image files are decoded in chunks (`decode_image_files`): from PARALLEL_MIN_FILES files up in a
pool of worker processes, one per CPU this process may use, else in this process's threads;
the chunks are merged in file order, so both give the same pool byte for byte. Gray images
(8-bit gray files, DICOM and 16-bit gray, RGB files with three equal channels) decode to one
channel, and a pool of gray images only is one channel.
"""

import logging
import math
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
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

    images: uint8 (N, C, S, S), C = 1 for gray data (stored so, one byte per pixel; the
    augmentations expand it to three channels when they normalize a view) or 3; labels: int64
    (N,) indexing class_names; official_split: int8 (N,) of TRAIN/VAL/TEST where the dataset
    ships a split, else None; groups: int64 (N,) ids of images that must stay in one split (e.g.
    HAM10000's lesion_id), else None; skipped_images: files that could not be read and were left
    out.
    """

    images: torch.Tensor
    labels: np.ndarray
    class_names: tuple[str, ...]
    official_split: np.ndarray | None = None
    groups: np.ndarray | None = None
    skipped_images: int = 0

    def __post_init__(self) -> None:
        count = len(self.labels)
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] not in (1, 3):
            raise ValueError(
                f"images must be uint8 (N, 1 or 3, S, S), got {self.images.dtype} {tuple(self.images.shape)}"
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


def resize_to_uint8(images: np.ndarray, image_size: int, max_value: float,
                    chunk_size: int = 512) -> torch.Tensor:
    """(N, H, W) gray or (N, H, W, 3) colour array -> uint8 tensor (N, 1 or 3, image_size, image_size).

    Resized in chunks so that 50,000 images at 224 px never exist as one float tensor.
    """
    channels = 1 if images.ndim == 3 else 3
    chunks = []
    for start in range(0, len(images), chunk_size):
        tensor = torch.as_tensor(images[start:start + chunk_size], dtype=torch.float32) / max_value
        tensor = tensor.unsqueeze(1) if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2)
        if tensor.shape[-2:] != (image_size, image_size):
            tensor = F.interpolate(tensor, size=(image_size, image_size), mode="bilinear",
                                   align_corners=False, antialias=tensor.shape[-1] > image_size)
        chunks.append((tensor.clamp(0, 1) * 255).round().to(torch.uint8))
    if not chunks:
        return torch.empty(0, channels, image_size, image_size, dtype=torch.uint8)
    return torch.cat(chunks).contiguous()


# PIL modes whose 8-bit pixels are gray: decoded to one channel.
GRAY_MODES = ("L", "LA", "1")


def decode_image(path: Path, image_size: int) -> np.ndarray:
    """One image file -> uint8 (image_size, image_size) when it is gray, else (image_size,
    image_size, 3), squashed to a square (nothing cropped). A colour file whose three channels
    are equal everywhere (a radiograph saved as RGB) is gray.

    DICOM files and gray images of more than 8 bits (16-bit PNG/TIFF) are read at full depth and
    windowed (`trainables.data.dicom`, `trainables.data.windowing`); 8-bit images as they are."""
    if is_dicom_file(Path(path)):
        decoded = decode_dicom(Path(path), image_size)
    else:
        with Image.open(path) as image:
            if image.mode in HIGH_DEPTH_MODES:
                return decode_high_depth_image(image, image_size)
            mode = "L" if image.mode in GRAY_MODES else "RGB"
            image.draft(mode, (image_size, image_size))  # JPEG: decode at the smallest scale >= size
            resized = image.convert(mode).resize((image_size, image_size), Image.Resampling.BILINEAR)
        decoded = np.asarray(resized, dtype=np.uint8)
    if decoded.ndim == 3 and (decoded[..., 0] == decoded[..., 1]).all() and \
            (decoded[..., 1] == decoded[..., 2]).all():
        return np.ascontiguousarray(decoded[..., 0])
    return decoded


@dataclass
class DecodedChunk:
    """What one decoding worker hands back for a run of files: uint8 images (K, C, S, S) of the
    readable ones in order (C = 1 when all of them are gray, else 3), which were read, and the
    (position in the chunk, message) of each unreadable and each refused (multi-frame) file."""

    images: np.ndarray
    readable: np.ndarray
    unreadable: list[tuple[int, str]]
    refused: list[tuple[int, str]]


def decode_chunk(paths: Sequence[Path], image_size: int) -> DecodedChunk:
    """Decode a run of files in this process, one after another (a process pool's unit of work)."""
    decoded: list[np.ndarray] = []
    readable = np.zeros(len(paths), dtype=bool)
    unreadable: list[tuple[int, str]] = []
    refused: list[tuple[int, str]] = []
    for position, path in enumerate(paths):
        try:
            decoded.append(decode_image(path, image_size))
            readable[position] = True
        except MultiFrameDicomError as error:
            refused.append((position, str(error)))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            unreadable.append((position, f"{path}: {error}"))
    channels = 3 if any(image.ndim == 3 for image in decoded) else 1
    images = np.empty((len(decoded), channels, image_size, image_size), dtype=np.uint8)
    for row, image in enumerate(decoded):
        images[row] = image.transpose(2, 0, 1) if image.ndim == 3 else image  # gray: to every channel
    return DecodedChunk(images, readable, unreadable, refused)


def decoding_processes() -> int:
    """The CPUs this process may use: its CPU affinity, capped by OMP_NUM_THREADS where Ray (which
    sets it to a worker's CPU share) or the user set it. The driver gets every CPU of its node."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(available, int(limit))) if limit.isdigit() and int(limit) > 0 else available


# Fewer files than this are decoded in this process (threads): the pool's fork server starts once
# per process and imports torch, this module and the main module (1-5 s; measured 3.5-5.7 s on
# a busy 2-core machine), more than it saves on a small folder at ~1,000 files/s per core.
PARALLEL_MIN_FILES = 2000
CHUNKS_PER_PROCESS = 8  # chunks per worker process: even loads, and a progress line per ~10%
PROGRESS_STEPS = 10  # progress lines per decode in the process pool


def _process_pool(processes: int) -> ProcessPoolExecutor:
    """Workers forked from a fork server, never from the caller itself, which may hold Ray's or
    OpenMP's threads (unsafe to fork). The server imports this module and the caller's main
    module (`python -m orchestrator.sweep`: timm, Ray) once, so that a worker, which runs the
    main module again as multiprocessing does, finds its imports done and starts in a moment."""
    context = multiprocessing.get_context("forkserver")
    main_name = getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name", None)
    context.set_forkserver_preload([name for name in (main_name, __name__) if name and name != "__main__"])
    return ProcessPoolExecutor(max_workers=processes, mp_context=context)


def decode_image_files(paths: Sequence[Path], image_size: int, processes: int | None = None,
                       chunk_size: int | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Decode and resize files, in chunks: in a pool of `processes` worker processes (default: the
    CPUs available, `decoding_processes`, from PARALLEL_MIN_FILES files up), with one progress line
    per ~10%, or with processes=1 in this process (threads; PIL releases the GIL while decoding).
    Either way the result is the same, byte for byte: the chunks are merged in file order.

    Returns (uint8 images (K, C, S, S) of the readable files, bool mask (N,) of which were read);
    C is 1 when every readable file is gray, else 3 (gray images then fill all three channels).
    An unreadable or missing file is skipped and logged, never fatal. A multi-frame DICOM is
    refused (MultiFrameDicomError, after every file was tried, counting the others): it is not
    damaged, and which of its frames to train on is the user's choice.
    """
    if processes is None:
        processes = decoding_processes() if len(paths) >= PARALLEL_MIN_FILES else 1
    chunk_size = chunk_size or max(1, math.ceil(len(paths) / (max(processes, 2) * CHUNKS_PER_PROCESS)))
    starts = range(0, len(paths), chunk_size)
    chunks = [list(paths[start:start + chunk_size]) for start in starts]
    started = time.perf_counter()
    if processes > 1:
        try:
            with _process_pool(processes) as executor:
                results = executor.map(decode_chunk, chunks, [image_size] * len(chunks))
                return _merge_chunks(paths, image_size, starts, results, progress=(processes, started))
        except BrokenProcessPool as error:  # e.g. a main module that cannot be run again (stdin)
            logger.warning("the decoding processes stopped (%s); decoding %d files in this process",
                           error, len(paths))
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as executor:
        return _merge_chunks(paths, image_size, starts,
                             executor.map(decode_chunk, chunks, [image_size] * len(chunks)))


def _merge_chunks(paths: Sequence[Path], image_size: int, starts: Sequence[int],
                  results: Iterator[DecodedChunk],
                  progress: tuple[int, float] | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Lay the chunks' images one after another into one array, in file order, as they arrive;
    it starts with one channel and becomes three at the first colour chunk."""
    output = np.empty((len(paths), 1, image_size, image_size), dtype=np.uint8)
    readable = np.zeros(len(paths), dtype=bool)
    refused: list[tuple[int, str]] = []
    filled, reported = 0, 0
    for number, (start, chunk) in enumerate(zip(starts, results, strict=True), start=1):
        if chunk.images.shape[1] > output.shape[1]:
            output = np.repeat(output, 3, axis=1) if filled else \
                np.empty((len(paths), 3, image_size, image_size), dtype=np.uint8)
        output[filled:filled + len(chunk.images)] = chunk.images  # a gray chunk fills all channels
        filled += len(chunk.images)
        readable[start:start + len(chunk.readable)] = chunk.readable
        for _, message in chunk.unreadable:
            logger.warning("skipping unreadable image %s", message)
        refused += [(start + position, message) for position, message in chunk.refused]
        if progress is not None and (steps := number * PROGRESS_STEPS // len(starts)) > reported:
            reported, (processes, started) = steps, progress
            done = min(len(paths), start + len(chunk.readable))
            # A leading space: the driver's "data [1/2] ... ..." line (orchestrator.datasets)
            # is still open when the first of these lines comes.
            print(f" decoding {len(paths)} files in {processes} processes: {done}/{len(paths)} "
                  f"({100 * done // len(paths)}%), {done / (time.perf_counter() - started):.0f} files/s",
                  flush=True)
    if refused:
        others = f" ({len(refused) - 1} other file(s) are multi-frame too)" if len(refused) > 1 else ""
        raise MultiFrameDicomError(f"{min(refused)[1]}{others}")
    if not readable.all():
        logger.warning("skipped %d of %d images that could not be read", (~readable).sum(), len(paths))
    return torch.from_numpy(output[:filled]), readable


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


# ITU-R 601 luma in 16-bit fixed point, as PIL's convert("L"): the weights sum to 65536, so a
# pixel with R = G = B keeps its value exactly.
LUMA_FIXED_POINT = (19595, 38470, 7471)


def to_one_channel(images: torch.Tensor, chunk_size: int = 4096) -> torch.Tensor:
    """uint8 (N, 3, S, S) -> (N, 1, S, S): the luma of each pixel (exact for gray pixels), in chunks."""
    if images.shape[1] == 1:
        return images
    weights = torch.tensor(LUMA_FIXED_POINT, dtype=torch.int32).view(1, 3, 1, 1)
    output = torch.empty((len(images), 1, *images.shape[2:]), dtype=torch.uint8)
    for start in range(0, len(images), chunk_size):
        chunk = images[start:start + chunk_size].to(torch.int32)
        output[start:start + chunk_size] = ((chunk * weights).sum(dim=1, keepdim=True) + 32768) >> 16
    return output


def integer_ids(values: Sequence[str]) -> np.ndarray:
    """Strings -> int64 ids, equal strings equal ids (in order of first appearance)."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(value, len(ids)) for value in values], dtype=np.int64)
