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


@pytest.mark.parametrize("change", ["replace", "add", "remove"])
def test_changing_adding_or_removing_a_source_file_rebuilds_the_cache(
        tmp_path: Path, counted_decodes: list[Path], change: str, caplog: pytest.LogCaptureFixture) -> None:
    make_imagefolder(tmp_path)
    before = load_dataset("imagefolder", 16, seed=0, data_root=tmp_path, split="random")
    counted_decodes.clear()
    if change == "replace":  # same name, new pixels (and size): the pool must follow the files
        Image.fromarray(np.full((24, 32, 3), 7, dtype=np.uint8)).save(tmp_path / "a" / "0.jpg", quality=50)
    elif change == "add":
        make_imagefolder(tmp_path / "extra")  # five new images of class a, made elsewhere
        for index, path in enumerate(sorted((tmp_path / "extra" / "a").iterdir())[:5]):
            path.rename(tmp_path / "a" / f"new{index}.jpg")
        import shutil
        shutil.rmtree(tmp_path / "extra")
    else:
        (tmp_path / "b" / "3.jpg").unlink()
    with caplog.at_level("WARNING", logger="trainables.data.cache"):
        after = load_dataset("imagefolder", 16, seed=0, data_root=tmp_path, split="random")
    expected_count = {"replace": 30, "add": 35, "remove": 29}[change]
    assert len(counted_decodes) == expected_count  # decoded again, every file
    total = len(after.train_labels) + len(after.val_labels) + len(after.test_labels)
    assert total == expected_count and after.split_hash() != before.split_hash()
    (line,) = [record.getMessage() for record in caplog.records if "stale" in record.getMessage()]
    summary = {"replace": "0 added, 0 removed, 1 changed", "add": "5 added, 0 removed, 0 changed",
               "remove": "0 added, 1 removed, 0 changed"}[change]
    assert summary in line and "\n" not in line
    counted_decodes.clear()
    load_dataset("imagefolder", 16, seed=0, data_root=tmp_path, split="random")
    assert counted_decodes == []  # the rebuilt cache is current again


def test_a_label_edit_in_a_csv_rebuilds_the_cache(tmp_path: Path, counted_decodes: list[Path]) -> None:
    (tmp_path / "images").mkdir()
    generator = np.random.default_rng(1)
    rows = ["image,label"]
    for index in range(12):
        Image.fromarray(generator.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(
            tmp_path / "images" / f"{index}.png")
        rows.append(f"{index}.png,{'xy'[index % 2]}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    first = load_dataset("csvfolder", 16, seed=0, data_root=tmp_path)
    csv_path = tmp_path / "labels.csv"
    status = csv_path.stat()
    csv_path.write_text("\n".join(rows).replace("0.png,x", "0.png,y").replace("1.png,y", "1.png,x") + "\n")
    import os
    os.utime(csv_path, ns=(status.st_atime_ns, status.st_mtime_ns))  # same size, same time: only bytes
    counted_decodes.clear()
    second = load_dataset("csvfolder", 16, seed=0, data_root=tmp_path)
    assert len(counted_decodes) == 12 and second.split_hash() != first.split_hash()


def test_a_refused_dataset_leaves_no_cache_file(tmp_path: Path) -> None:
    # One image in class c: no stratified split exists, so the dataset is refused...
    make_imagefolder(tmp_path)
    for path in sorted((tmp_path / "c").iterdir())[1:]:
        path.unlink()
    with pytest.raises(ValueError):
        load_dataset("imagefolder", 16, seed=0, data_root=tmp_path, split="random")
    assert not cache_file(tmp_path, "imagefolder", 16).exists()
    # ...and a folder of unreadable files is an empty pool: refused with one line, never cached.
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError) as raised:
        load_dataset("imagefolder", 16, seed=0, data_root=empty)
    assert "none of its 1 images could be read" in str(raised.value) and "\n" not in str(raised.value)
    assert not cache_file(empty, "imagefolder", 16).exists()


def test_the_cache_file_is_readable_by_the_group_owning_data_root(tmp_path: Path) -> None:
    make_imagefolder(tmp_path)
    load_dataset("imagefolder", 16, seed=0, data_root=tmp_path)
    status = cache_file(tmp_path, "imagefolder", 16).stat()
    import stat
    assert status.st_mode & stat.S_IRGRP and status.st_gid == tmp_path.stat().st_gid
