"""The decoded-image cache: reused across loads, rebuilt when corrupt, never left half-written."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import trainables.data.cache as data_cache
import trainables.data.pool as data_pool
from trainables.data import load_dataset
from trainables.data.cache import cache_file

CLASSES = ("a", "b", "c")


def make_imagefolder(root: Path, per_class: int = 10) -> None:
    generator = np.random.default_rng(0)
    for class_name in CLASSES:
        (root / class_name).mkdir(parents=True)
        for i in range(per_class):
            pixels = generator.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / class_name / f"{i}.jpg", quality=90)


@pytest.fixture
def counted_decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every image the pipeline decodes."""
    decoded: list[Path] = []
    original = data_pool.decode_image

    def counting(path: Path, image_size: int) -> np.ndarray:
        decoded.append(path)
        return original(path, image_size)

    monkeypatch.setattr(data_pool, "decode_image", counting)
    return decoded


def leftovers(root: Path) -> list[str]:
    return [path.name for path in (root / ".cache").iterdir() if path.suffix != ".npz"]


def test_second_load_reads_the_cache_without_decoding(tmp_path: Path, counted_decodes: list[Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    make_imagefolder(tmp_path)
    first = load_dataset("imagefolder", 16, seed=0, data_root=tmp_path)
    assert len(counted_decodes) == 30
    assert cache_file(tmp_path, "imagefolder", 16).is_file() and leftovers(tmp_path) == []

    def fail(path: Path, image_size: int) -> np.ndarray:
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(data_pool, "decode_image", fail)
    for seed in (0, 1):  # every seed (and split policy) reuses the one decoded pool
        again = load_dataset("imagefolder", 16, seed=seed, data_root=tmp_path)
        assert again.skipped_images == 0
    assert load_dataset("imagefolder", 16, seed=0, data_root=tmp_path).split_hash() == first.split_hash()


def test_each_image_size_has_its_own_cache(tmp_path: Path, counted_decodes: list[Path]) -> None:
    make_imagefolder(tmp_path)
    small = load_dataset("imagefolder", 16, seed=0, data_root=tmp_path)
    large = load_dataset("imagefolder", 24, seed=0, data_root=tmp_path)
    assert small.train_images.shape[-1] == 16 and large.train_images.shape[-1] == 24
    assert len(counted_decodes) == 60
    assert cache_file(tmp_path, "imagefolder", 24).is_file()


@pytest.mark.parametrize("damage", ["truncate", "flip_a_byte", "empty"])
def test_a_corrupt_cache_is_rebuilt(tmp_path: Path, counted_decodes: list[Path], damage: str) -> None:
    make_imagefolder(tmp_path)
    expected = load_dataset("imagefolder", 16, seed=0, data_root=tmp_path).split_hash()
    path = cache_file(tmp_path, "imagefolder", 16)
    contents = bytearray(path.read_bytes())
    if damage == "truncate":
        contents = contents[: len(contents) // 2]
    elif damage == "flip_a_byte":
        contents[len(contents) // 2] ^= 0xFF  # inside the images array: the zip CRC catches it
    else:
        contents = bytearray()
    path.write_bytes(bytes(contents))
    counted_decodes.clear()
    assert load_dataset("imagefolder", 16, seed=0, data_root=tmp_path).split_hash() == expected
    assert len(counted_decodes) == 30  # rebuilt from the images
    assert data_cache.read_pool(path).images.shape == (30, 3, 16, 16)  # and written back whole
    assert leftovers(tmp_path) == []


def test_a_crash_while_writing_leaves_no_cache_and_no_temporary_file(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    make_imagefolder(tmp_path)

    def crash(file, **arrays: np.ndarray) -> None:
        file.write(b"PK\x03\x04 half an npz")
        raise KeyboardInterrupt  # e.g. the trial is killed mid-write

    monkeypatch.setattr(data_cache.np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        load_dataset("imagefolder", 16, seed=0, data_root=tmp_path)
    assert list((tmp_path / ".cache").iterdir()) == []


def test_cache_false_neither_reads_nor_writes(tmp_path: Path) -> None:
    make_imagefolder(tmp_path)
    load_dataset("imagefolder", 16, seed=0, data_root=tmp_path, cache=False)
    assert not (tmp_path / ".cache").exists()


def test_an_unwritable_cache_folder_only_costs_the_cache(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    make_imagefolder(tmp_path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(data_cache, "write_pool", refuse)
    splits = load_dataset("imagefolder", 16, seed=0, data_root=tmp_path)
    assert len(splits.train_labels) + len(splits.val_labels) + len(splits.test_labels) == 30
