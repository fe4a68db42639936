"""The on-disk cache of decoded pools: decode and resize each image once per dataset and size.

A pool is stored as an uncompressed npz, `<data_root>/.cache/<dataset>-<size>px-v<version>.npz`,
shared by every seed, split policy, label fraction, trial and epoch (splitting a pool is
cheap; decoding 10,000 JPEGs is not). It is written to a temporary file in the same folder and
moved into place with os.replace, so a crash never leaves a half-written file under the final
name, and trials running at once each see either no cache or a complete one. A file that does
not read back (truncated, bit-flipped: the zip CRC of every array is checked, or from another
version) is logged and rebuilt.
"""

import logging
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from trainables.data.pool import DecodedPool

logger = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: 16-bit images are read at full depth and windowed, DICOM files read
CACHE_FOLDER = ".cache"


class CorruptCacheError(ValueError):
    """A cache file that cannot be trusted: it is rebuilt."""


def cache_file(data_root: str | Path, dataset: str, image_size: int) -> Path:
    return Path(data_root) / CACHE_FOLDER / f"{dataset}-{image_size}px-v{CACHE_VERSION}.npz"


def _key(path: Path) -> str:
    return path.name


def write_pool(path: Path, pool: DecodedPool) -> None:
    """Write atomically: a temporary file in the same folder, flushed, then renamed over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "key": np.array(_key(path)),
        "images": pool.images.numpy(),
        "labels": pool.labels.astype(np.int64),
        "class_names": np.array(pool.class_names, dtype=str),
        "skipped_images": np.array(pool.skipped_images, dtype=np.int64),
    }
    if pool.official_split is not None:
        arrays["official_split"] = pool.official_split.astype(np.int8)
    if pool.groups is not None:
        arrays["groups"] = pool.groups.astype(np.int64)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_pool(path: Path) -> DecodedPool:
    """The pool stored at `path`, or CorruptCacheError when it does not read back whole."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) != _key(path):
                raise CorruptCacheError(f"{path} holds {stored['key']}, not {_key(path)}")
            return DecodedPool(
                images=torch.from_numpy(stored["images"]),
                labels=stored["labels"],
                class_names=tuple(str(name) for name in stored["class_names"]),
                official_split=stored["official_split"] if "official_split" in stored else None,
                groups=stored["groups"] if "groups" in stored else None,
                skipped_images=int(stored["skipped_images"]),
            )
    except CorruptCacheError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise CorruptCacheError(f"{path}: {type(error).__name__}: {error}") from error


def cached_pool(path: Path, build: Callable[[], DecodedPool]) -> DecodedPool:
    """Read the pool at `path`; build and store it when it is missing or corrupt."""
    if path.exists():
        try:
            return read_pool(path)
        except CorruptCacheError as error:
            logger.warning("rebuilding the corrupt data cache %s", error)
    pool = build()
    try:
        write_pool(path, pool)
    except OSError as error:  # e.g. a read-only dataset folder: train on, decode again next time
        logger.warning("could not write the data cache %s: %s", path, error)
    return pool
