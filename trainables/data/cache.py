"""The on-disk cache of decoded pools: decode and resize each image once per dataset and size.

A pool is stored as an uncompressed npz, `<data_root>/.cache/<dataset>-<size>px-v<version>.npz`,
shared by every seed, split policy, label fraction, trial and epoch (splitting a pool is
cheap; decoding 10,000 JPEGs is not). It is written to a temporary file in the same folder and
moved into place with os.replace, so a crash never leaves a half-written file under the final
name, and trials running at once each see either no cache or a complete one. A file that does
not read back (truncated, bit-flipped: the zip CRC of every array is checked, or from another
version) is logged and rebuilt.

The file also holds the fingerprint of the files it was decoded from (`source_manifest`: each
file's path, size and modification time under the dataset's folder, plus the bytes of its CSV
files, since a label edit need not change a size): when the files change (an image replaced,
added or removed, a label corrected) the cache is stale and is rebuilt, with one log line
saying how many files were added, removed or changed. The caller stores a pool only once it has
been accepted (not empty, splittable), so a refused dataset leaves nothing behind. Files are
made readable and replaceable by the group that owns `data_root`, so the people sharing a data
folder share its cache instead of each decoding it again.
"""

import hashlib
import logging
import os
import stat
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from trainables.data.pool import DecodedPool

logger = logging.getLogger(__name__)

# 4: gray images stored as one channel; 3: the source fingerprint; 2: 16-bit images read at full
# depth, DICOM files read. An older file is simply not found under the new name: decoded again.
CACHE_VERSION = 4
CACHE_FOLDER = ".cache"
FINGERPRINTED_CONTENTS = (".csv",)  # small files whose bytes, not only size and time, are the key
GROUP_READ_WRITE = stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH


class CorruptCacheError(ValueError):
    """A cache file that cannot be trusted: it is rebuilt."""


def cache_file(data_root: str | Path, dataset: str, image_size: int) -> Path:
    return Path(data_root) / CACHE_FOLDER / f"{dataset}-{image_size}px-v{CACHE_VERSION}.npz"


def source_manifest(folder: Path | None) -> list[str]:
    """One line per file under `folder` (recursively, hidden files and folders such as .cache left
    out): its relative path, size and modification time in ns, and for CSV files a hash of their
    bytes. Sorted, so that the same files give the same manifest. None (bundled data): empty."""
    if folder is None or not folder.exists():
        return []
    lines = []
    for directory, subfolders, files in os.walk(folder):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = Path(directory) / name
            try:
                status = path.stat()
            except OSError:  # vanished while listing: it is not a source any more
                continue
            line = f"{path.relative_to(folder).as_posix()}\t{status.st_size}\t{status.st_mtime_ns}"
            if path.suffix.lower() in FINGERPRINTED_CONTENTS:
                line += "\t" + hashlib.sha256(path.read_bytes()).hexdigest()
            lines.append(line)
    return sorted(lines)


def fingerprint(manifest: list[str]) -> str:
    return hashlib.sha256("\n".join(manifest).encode()).hexdigest()[:16]


def _key(path: Path) -> str:
    return path.name


def write_pool(path: Path, pool: DecodedPool, manifest: list[str] | None = None) -> None:
    """Write atomically: a temporary file in the same folder, flushed, then renamed over `path`."""
    if len(pool.labels) == 0:
        raise ValueError(f"refusing to cache an empty pool at {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest = manifest or []
    arrays = {
        "key": np.array(_key(path)),
        "fingerprint": np.array(fingerprint(manifest)),
        "source_manifest": np.array(manifest, dtype=str),
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
        share_with_group(Path(temporary), path.parent.parent)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def share_with_group(path: Path, data_root: Path) -> None:
    """mkstemp makes files only their owner can read: give the cache file (and its folder) to the
    group that owns data_root, readable and replaceable by it. Best effort: a user outside that
    group keeps the file as created."""
    group = data_root.stat().st_gid
    for target, mode in ((path, GROUP_READ_WRITE), (path.parent, None)):
        try:
            if target.stat().st_gid != group:
                os.chown(target, -1, group)
            if mode is not None:
                os.chmod(target, mode)
            else:  # the folder: the group may add files, and new files inherit its group (setgid)
                os.chmod(target, target.stat().st_mode | stat.S_IRWXG | stat.S_ISGID)
        except OSError as error:
            logger.debug("could not share %s with group %d: %s", target, group, error)


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


def stored_manifest(path: Path) -> list[str]:
    try:
        with np.load(path, allow_pickle=False) as stored:
            return [str(line) for line in stored["source_manifest"]]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise CorruptCacheError(f"{path}: {type(error).__name__}: {error}") from error


def staleness(old: list[str], new: list[str]) -> str:
    """'2 added, 1 removed, 3 changed' between two manifests (a changed file keeps its path)."""
    old_files = {line.split("\t", 1)[0]: line for line in old}
    new_files = {line.split("\t", 1)[0]: line for line in new}
    added = len(new_files.keys() - old_files.keys())
    removed = len(old_files.keys() - new_files.keys())
    changed = sum(old_files[name] != new_files[name] for name in old_files.keys() & new_files.keys())
    return f"{added} added, {removed} removed, {changed} changed"


def older_versions(path: Path) -> list[Path]:
    """Cache files of the same dataset and size written by an earlier CACHE_VERSION, oldest first."""
    prefix = path.name.removesuffix(f"v{CACHE_VERSION}.npz")
    found = [(int(version), older) for older in path.parent.glob(f"{prefix}v*.npz")
             if (version := older.name.removeprefix(prefix).removesuffix(".npz").removeprefix("v")).isdigit()
             and int(version) < CACHE_VERSION]
    return [older for _, older in sorted(found)]


def read_cached_pool(path: Path, manifest: list[str]) -> DecodedPool | None:
    """The pool at `path` when it is whole and was decoded from exactly these files; else None,
    after one log line saying why it is rebuilt (missing files say nothing: a first decode)."""
    if not path.exists():
        if older := older_versions(path):
            logger.warning("rebuilding the data cache %s: %s is of an older format (this version "
                           "writes v%d)", path, older[-1].name, CACHE_VERSION)
        return None
    try:
        old = stored_manifest(path)
        if old != manifest:
            logger.warning("rebuilding the stale data cache %s: its source files changed (%s)",
                           path, staleness(old, manifest))
            return None
        return read_pool(path)
    except CorruptCacheError as error:
        logger.warning("rebuilding the corrupt data cache %s", error)
        return None


def store_pool(path: Path, pool: DecodedPool, manifest: list[str]) -> None:
    """Write the accepted pool; a folder we may not write to only costs the cache."""
    try:
        write_pool(path, pool, manifest)
    except OSError as error:  # e.g. a read-only dataset folder: train on, decode again next time
        logger.warning("could not write the data cache %s: %s", path, error)
