"""MedMNIST npz files (official split, size choice, MD5-checked download) and CIFAR-10 via torchvision."""

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets.cifar

import trainables.data.medmnist as data_medmnist
from trainables.data import DatasetLabelError, DatasetNotFoundError, load_dataset

SPLIT_SIZES = {"train": 40, "val": 10, "test": 20}


def write_medmnist(path: Path, size: int, classes: int, colour: bool, seed: int = 0) -> None:
    """An npz in MedMNIST's format: uint8 images (N, S, S[, 3]) and labels (N, 1) per split."""
    generator = np.random.default_rng(seed)
    arrays = {}
    for split, count in SPLIT_SIZES.items():
        shape = (count, size, size, 3) if colour else (count, size, size)
        arrays[f"{split}_images"] = generator.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % classes).reshape(-1, 1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def test_medmnist_keeps_the_official_split(tmp_path: Path) -> None:
    write_medmnist(tmp_path / "medmnist" / "pneumoniamnist.npz", 28, classes=2, colour=False)
    splits = load_dataset("pneumoniamnist", 32, seed=0, data_root=tmp_path)
    assert splits.class_names == ("normal", "pneumonia")
    assert [len(splits.train_labels), len(splits.val_labels), len(splits.test_labels)] == [40, 10, 20]
    assert splits.train_images.shape[1:] == (1, 32, 32) and splits.grayscale  # gray: one channel
    assert splits.train_labels.tolist() == [i % 2 for i in range(40)]


def test_medmnist_uses_the_smallest_file_at_least_as_large_as_the_image_size(tmp_path: Path) -> None:
    folder = tmp_path / "medmnist"
    for size in (28, 64, 224):
        file_name = data_medmnist.medmnist_file_name("dermamnist", size)
        write_medmnist(folder / file_name, size, classes=7, colour=True, seed=size)
    assert data_medmnist.find_medmnist_file("dermamnist", 32, tmp_path, False).name == "dermamnist_64.npz"
    assert data_medmnist.find_medmnist_file("dermamnist", 96, tmp_path, False).name == "dermamnist_224.npz"
    assert data_medmnist.find_medmnist_file("dermamnist", 28, tmp_path, False).name == "dermamnist.npz"
    (folder / "dermamnist_224.npz").unlink()
    assert data_medmnist.find_medmnist_file("dermamnist", 96, tmp_path, False).name == "dermamnist_64.npz"
    splits = load_dataset("dermamnist", 48, seed=0, data_root=tmp_path)
    assert splits.num_classes == 7 and splits.train_images.shape[1:] == (3, 48, 48)


def test_medmnist_labels_outside_the_classes_are_an_error(tmp_path: Path) -> None:
    write_medmnist(tmp_path / "medmnist" / "breastmnist.npz", 28, classes=3, colour=False)
    with pytest.raises(DatasetLabelError, match="breastmnist.npz"):
        load_dataset("breastmnist", 28, seed=0, data_root=tmp_path)


def test_every_registered_medmnist_file_has_a_known_md5() -> None:
    for name in data_medmnist.MEDMNIST_CLASSES:
        for size in data_medmnist.MEDMNIST_SIZES:
            md5 = data_medmnist.MEDMNIST_MD5[data_medmnist.medmnist_file_name(name, size)]
            assert len(md5) == 32 and int(md5, 16) >= 0


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local folder standing in for Zenodo (file:// URLs), with the MD5 of its retinamnist.npz."""
    source = tmp_path / "zenodo"
    write_medmnist(source / "retinamnist.npz", 28, classes=5, colour=True)
    monkeypatch.setattr(data_medmnist, "MEDMNIST_URL", source.as_uri() + "/{file_name}")
    digest = hashlib.md5((source / "retinamnist.npz").read_bytes()).hexdigest()
    monkeypatch.setitem(data_medmnist.MEDMNIST_MD5, "retinamnist.npz", digest)
    return source


def test_download_verifies_the_md5_and_then_loads(tmp_path: Path, mirror: Path) -> None:
    with pytest.raises(DatasetNotFoundError):
        load_dataset("retinamnist", 28, seed=0, data_root=tmp_path / "data")  # no download by default
    splits = load_dataset("retinamnist", 28, seed=0, data_root=tmp_path / "data", download=True)
    assert splits.num_classes == 5 and len(splits.test_labels) == 20
    assert (tmp_path / "data" / "medmnist" / "retinamnist.npz").is_file()


def test_a_download_with_the_wrong_md5_leaves_nothing(tmp_path: Path, mirror: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(data_medmnist.MEDMNIST_MD5, "retinamnist.npz", "0" * 32)
    with pytest.raises(OSError, match="MD5 mismatch"):
        load_dataset("retinamnist", 28, seed=0, data_root=tmp_path / "data", download=True)
    assert list((tmp_path / "data" / "medmnist").iterdir()) == []


def write_fake_cifar10(root: Path, per_batch: int = 20) -> None:
    """torchvision's CIFAR-10 python layout, with `per_batch` images per batch file."""
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    generator = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": generator.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "labels": [i % 10 for i in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))


def test_cifar10_reads_torchvisions_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_cifar10(tmp_path)
    # The fake batches cannot match the real files' MD5s, which torchvision checks.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: True)
    splits = load_dataset("cifar10", 32, seed=0, data_root=tmp_path)
    assert splits.class_names[0] == "airplane" and splits.num_classes == 10
    assert len(splits.test_labels) == 20  # the official test batch
    assert [len(splits.train_labels), len(splits.val_labels)] == [90, 10]  # 10% of train is val


def test_cifar10_missing_without_download_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as raised:
        load_dataset("cifar10", 32, seed=0, data_root=tmp_path)
    message = str(raised.value)
    assert "\n" not in message and "cifar-10-batches-py" in message and "download=True" in message
