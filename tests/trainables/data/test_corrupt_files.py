"""A source file that is there but damaged (an interrupted copy or download) is one error line that
names the file and what to do, not numpy's "BadZipFile: File is not a zip file" or torchvision's
"Dataset not found or corrupted"."""

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets

import trainables.data.medmnist as data_medmnist
from trainables.data import DatasetNotFoundError, load_dataset
from trainables.data.pool import CorruptDatasetFileError

SPLIT_SIZES = {"train": 12, "val": 4, "test": 6}
CIFAR10_FILES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]


def write_medmnist(path: Path, classes: int = 2, size: int = 28) -> None:
    """An npz in MedMNIST's format: uint8 gray images (N, S, S) and labels (N, 1) per split."""
    generator = np.random.default_rng(0)
    arrays = {}
    for split, count in SPLIT_SIZES.items():
        arrays[f"{split}_images"] = generator.integers(0, 256, (count, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % classes).reshape(-1, 1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def damage(path: Path, how: str) -> None:
    contents = bytearray(path.read_bytes())
    if how == "truncate":
        contents = contents[: len(contents) // 2]  # the zip directory at the end is gone
    elif how == "flip_a_byte":
        contents[len(contents) // 2] ^= 0xFF  # inside an image array: the zip CRC catches it
    elif how == "empty":
        contents = bytearray()
    else:
        raise ValueError(how)
    path.write_bytes(bytes(contents))


def assert_one_line_naming(error: BaseException, *words: str) -> None:
    message = str(error)
    assert "\n" not in message, message
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize("how", ["truncate", "flip_a_byte", "empty"])
def test_a_damaged_medmnist_file_is_named_with_what_to_do(tmp_path: Path, how: str) -> None:
    path = tmp_path / "medmnist" / "pneumoniamnist.npz"
    write_medmnist(path)
    damage(path, how)
    with pytest.raises(CorruptDatasetFileError) as raised:
        load_dataset("pneumoniamnist", 28, seed=0, data_root=tmp_path)
    assert_one_line_naming(raised.value, str(path), "corrupt", "delete it", "download=true")
    restored = pickle.loads(pickle.dumps(raised.value))  # as a Ray worker sends it to the driver
    assert str(restored) == str(raised.value) and restored.path == str(path)


def test_a_medmnist_file_without_the_expected_arrays_is_named(tmp_path: Path) -> None:
    path = tmp_path / "medmnist" / "breastmnist.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, images=np.zeros((2, 28, 28), dtype=np.uint8))
    with pytest.raises(CorruptDatasetFileError) as raised:
        load_dataset("breastmnist", 28, seed=0, data_root=tmp_path)
    assert_one_line_naming(raised.value, str(path), "train_labels")


def test_deleting_the_damaged_file_and_downloading_as_the_message_says_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "zenodo" / "retinamnist.npz"  # a local folder standing in for Zenodo
    write_medmnist(source, classes=5)
    monkeypatch.setattr(data_medmnist, "MEDMNIST_URL", source.parent.as_uri() + "/{file_name}")
    monkeypatch.setitem(data_medmnist.MEDMNIST_MD5, "retinamnist.npz",
                        hashlib.md5(source.read_bytes()).hexdigest())
    data_root = tmp_path / "data"
    local = data_root / "medmnist" / "retinamnist.npz"
    local.parent.mkdir(parents=True)
    local.write_bytes(source.read_bytes()[:1000])  # an interrupted copy
    with pytest.raises(CorruptDatasetFileError, match="retinamnist.npz"):
        load_dataset("retinamnist", 28, seed=0, data_root=data_root, download=True)
    local.unlink()
    splits = load_dataset("retinamnist", 28, seed=0, data_root=data_root, download=True)
    assert len(splits.test_labels) == SPLIT_SIZES["test"]


def write_cifar10_batches(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's CIFAR-10 python layout with small batches, and torchvision told their MD5s
    (the real files' MD5s cannot match these), so that only damage makes a file fail its check."""
    folder.mkdir(parents=True)
    generator = np.random.default_rng(0)
    for name in CIFAR10_FILES[:-1]:
        batch = {"data": generator.integers(0, 256, (10, 3072), dtype=np.uint8), "labels": list(range(10))}
        (folder / name).write_bytes(pickle.dumps(batch))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    md5 = {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in CIFAR10_FILES}
    cifar10 = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cifar10, "train_list", [[name, md5[name]] for name in CIFAR10_FILES[:5]])
    monkeypatch.setattr(cifar10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(cifar10, "meta", {**cifar10.meta, "md5": md5["batches.meta"]})


def test_the_fake_cifar10_batches_load_while_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar10_batches(tmp_path / "cifar10" / "cifar-10-batches-py", monkeypatch)
    assert len(load_dataset("cifar10", 32, seed=0, data_root=tmp_path, cache=False).test_labels) == 10


def test_a_truncated_cifar10_batch_is_named_with_what_to_do(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    write_cifar10_batches(folder, monkeypatch)
    damage(folder / "data_batch_3", "truncate")
    with pytest.raises(CorruptDatasetFileError) as raised:
        load_dataset("cifar10", 32, seed=0, data_root=tmp_path, cache=False)
    assert_one_line_naming(raised.value, str(folder / "data_batch_3"), "MD5", f"delete {folder}",
                           "download=true")
    assert "also corrupt" not in str(raised.value)  # the other files are whole


def test_every_damaged_cifar10_batch_is_listed_on_the_one_line(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    write_cifar10_batches(folder, monkeypatch)
    damage(folder / "data_batch_1", "truncate")
    damage(folder / "test_batch", "empty")
    with pytest.raises(CorruptDatasetFileError) as raised:
        load_dataset("cifar10", 32, seed=0, data_root=tmp_path, cache=False)
    assert_one_line_naming(raised.value, str(folder / "data_batch_1"), "also corrupt: test_batch")


def test_a_missing_cifar10_batch_is_still_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    write_cifar10_batches(folder, monkeypatch)
    (folder / "data_batch_5").unlink()
    with pytest.raises(DatasetNotFoundError) as raised:
        load_dataset("cifar10", 32, seed=0, data_root=tmp_path, cache=False)
    assert_one_line_naming(raised.value, str(folder), "download=True")
