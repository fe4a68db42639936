"""MedMNIST v2 (Yang et al., 2023, Scientific Data): its 2D single-label datasets from the npz files.

Layout: `<data_root>/medmnist/<name>.npz` (28 px) and/or `<name>_64.npz`, `<name>_128.npz`,
`<name>_224.npz`, each with uint8 train_images, val_images, test_images ((N, S, S) gray or
(N, S, S, 3) colour) and train_labels, val_labels, test_labels ((N, 1)). The file used is the
smallest size >= the requested image size (downsampling keeps detail), else the largest there.
The official train/val/test split is kept. With download=True a missing file is fetched from
Zenodo (record 10519652) and its MD5 checked against MEDMNIST_MD5, the values published in the
medmnist package (medmnist/info.py, v3.0.2). A file that is there but does not read back (an
interrupted copy) raises CorruptDatasetFileError, one line naming it and saying what to do.
"""

import hashlib
import logging
import os
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import torch

from trainables.data.pool import (
    TEST,
    TRAIN,
    VAL,
    CorruptDatasetFileError,
    DatasetNotFoundError,
    DecodedPool,
    check_labels,
    resize_to_uint8,
)

logger = logging.getLogger(__name__)

MEDMNIST_URL = "https://zenodo.org/records/10519652/files/{file_name}?download=1"
MEDMNIST_SIZES = (28, 64, 128, 224)

MEDMNIST_CLASSES: dict[str, tuple[str, ...]] = {
    "dermamnist": ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                   "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                   "vascular lesions"),
    "pneumoniamnist": ("normal", "pneumonia"),
    "breastmnist": ("malignant", "normal, benign"),
    "bloodmnist": ("basophil", "eosinophil", "erythroblast",
                   "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte",
                   "monocyte", "neutrophil", "platelet"),
    "retinamnist": ("0", "1", "2", "3", "4"),
    "pathmnist": ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                  "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"),
    "octmnist": ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
    "organamnist": ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
                    "lung-left", "lung-right", "pancreas", "spleen"),
}

# The official training splits' sizes (MedMNIST v2's table of datasets), for the GPU-hour estimate.
MEDMNIST_TRAIN_IMAGES: dict[str, int] = {
    "dermamnist": 7007, "pneumoniamnist": 4708, "breastmnist": 546, "bloodmnist": 11959, "retinamnist": 1080,
    "pathmnist": 89996, "octmnist": 97477, "organamnist": 34561,
}

# file name -> MD5, copied from medmnist/info.py (v3.0.2). Every file of MEDMNIST_CLASSES is here.
MEDMNIST_MD5: dict[str, str] = {
    "dermamnist.npz": "0744692d530f8e62ec473284d019b0c7",
    "dermamnist_64.npz": "b70a2f5635c6199aeaa28c31d7202e1f",
    "dermamnist_128.npz": "2defd784463fa5243564e855ed717de1",
    "dermamnist_224.npz": "8974907d8e169bef5f5b96bc506ae45d",
    "pneumoniamnist.npz": "28209eda62fecd6e6a2d98b1501bb15f",
    "pneumoniamnist_64.npz": "8f4eceb4ccffa70c672198ea285246c6",
    "pneumoniamnist_128.npz": "05b46931834c231683c68f40c47b2971",
    "pneumoniamnist_224.npz": "d6a3c71de1b945ea11211b03746c1fe1",
    "breastmnist.npz": "750601b1f35ba3300ea97c75c52ff8f6",
    "breastmnist_64.npz": "742edef2a1fd1524b2efff4bd7ba9364",
    "breastmnist_128.npz": "363e4b3f8d712e9b5de15470a2aaadf1",
    "breastmnist_224.npz": "b56378a6eefa9fed602bb16d192d4c8b",
    "bloodmnist.npz": "7053d0359d879ad8a5505303e11de1dc",
    "bloodmnist_64.npz": "2b94928a2ae4916078ca51e05b6b800b",
    "bloodmnist_128.npz": "adace1e0ed228fccda1f39692059dd4c",
    "bloodmnist_224.npz": "b718ff6835fcbdb22ba9eacccd7b2601",
    "retinamnist.npz": "bd4c0672f1bba3e3a89f0e4e876791e4",
    "retinamnist_64.npz": "afda852cc34dcda56f86ad2b2457dbcc",
    "retinamnist_128.npz": "e48e916a24454daf90583d4e6efb1a18",
    "retinamnist_224.npz": "eae7e3b6f3fcbda4ae613ebdcbe35348",
    "pathmnist.npz": "a8b06965200029087d5bd730944a56c1",
    "pathmnist_64.npz": "55aa9c1e0525abe5a6b9d8343a507616",
    "pathmnist_128.npz": "ac42d08fb904d92c244187169d1fd1d9",
    "pathmnist_224.npz": "2c51a510bcdc9cf8ddb2af93af1eadec",
    "octmnist.npz": "c68d92d5b585d8d81f7112f81e2d0842",
    "octmnist_64.npz": "e229e9440236b774d9f0dfef9d07bdaf",
    "octmnist_128.npz": "0a97e76651ace45c5d943ee3f65b63ae",
    "octmnist_224.npz": "abc493b6d529d5de7569faaef2773ba3",
    "organamnist.npz": "68e3f8846a6bd62f0c9bf841c0d9eacc",
    "organamnist_64.npz": "2dcccc29b88e6da5a01161ef20cda288",
    "organamnist_128.npz": "eeae80d0a227a8d099027e1b3cfd3b60",
    "organamnist_224.npz": "50747347e05c87dd3aaf92c49f9f3170",
}


def medmnist_file_name(name: str, size: int) -> str:
    return f"{name}.npz" if size == 28 else f"{name}_{size}.npz"


def preferred_sizes(image_size: int) -> list[int]:
    """MedMNIST sizes in order of preference: the smallest >= image_size first, then larger, then smaller."""
    larger = [size for size in MEDMNIST_SIZES if size >= image_size]
    smaller = [size for size in reversed(MEDMNIST_SIZES) if size < image_size]
    return larger + smaller


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_medmnist(name: str, size: int, folder: Path) -> Path:
    """Fetch one MedMNIST file into `folder`, verifying its MD5; the file appears only when it matches."""
    file_name = medmnist_file_name(name, size)
    expected = MEDMNIST_MD5.get(file_name)
    if expected is None:
        raise ValueError(f"no known MD5 for {file_name}; refusing an unverified download")
    folder.mkdir(parents=True, exist_ok=True)
    url = MEDMNIST_URL.format(file_name=file_name)
    logger.info("downloading %s", url)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{file_name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(descriptor, "wb") as file, urllib.request.urlopen(url, timeout=60) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                file.write(block)
        actual = md5_of(Path(temporary))
        if actual != expected:
            raise OSError(f"MD5 mismatch for {url}: got {actual}, expected {expected}")
        os.replace(temporary, folder / file_name)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return folder / file_name


def find_medmnist_file(name: str, image_size: int, data_root: Path, download: bool) -> Path:
    folder = data_root / "medmnist"
    for size in preferred_sizes(image_size):
        if (folder / medmnist_file_name(name, size)).is_file():
            return folder / medmnist_file_name(name, size)
    if download:
        return download_medmnist(name, preferred_sizes(image_size)[0], folder)
    raise DatasetNotFoundError(
        name, folder / medmnist_file_name(name, preferred_sizes(image_size)[0]),
        f"one of {', '.join(medmnist_file_name(name, size) for size in MEDMNIST_SIZES)} with keys "
        "train_images, train_labels, val_images, val_labels, test_images, test_labels",
        f"{MEDMNIST_URL.format(file_name=medmnist_file_name(name, 28))} (or download=True)",
    )


# What np.load and reading an npz member raise for a truncated or damaged file (a missing
# member is a KeyError): "File is not a zip file", "Bad CRC-32", "No data left in file", ...
UNREADABLE_NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


def corrupt_medmnist_file(name: str, path: Path, error: BaseException) -> CorruptDatasetFileError:
    """The one-line error for a MedMNIST file that does not read back: which file, and what to do."""
    return CorruptDatasetFileError(
        name, path, f"{type(error).__name__}: {error}",
        f"delete it and run again with download=true (the new copy's MD5 is checked), or copy it "
        f"again from {MEDMNIST_URL.format(file_name=path.name)}",
    )


def medmnist_pool(name: str, image_size: int, data_root: Path, download: bool) -> DecodedPool:
    """The official train/val/test images of one MedMNIST dataset, resized to image_size.

    A file that does not read back is a CorruptDatasetFileError naming it: an interrupted copy
    otherwise surfaces as numpy's "BadZipFile: File is not a zip file", which names nothing.
    """
    path = find_medmnist_file(name, image_size, data_root, download)
    class_names = MEDMNIST_CLASSES[name]
    images, labels, parts = [], [], []
    try:
        stored = np.load(path)
    except UNREADABLE_NPZ_ERRORS as error:
        raise corrupt_medmnist_file(name, path, error) from error

    def read(key: str) -> np.ndarray:
        # Members are decompressed and CRC-checked only here, so damage can show up this late.
        try:
            return stored[key]
        except UNREADABLE_NPZ_ERRORS as error:
            raise corrupt_medmnist_file(name, path, error) from error

    with stored:
        for part, key in ((TRAIN, "train"), (VAL, "val"), (TEST, "test")):
            part_labels = read(f"{key}_labels").reshape(-1).astype(np.int64)
            check_labels(part_labels, class_names, f"{path} ({key}_labels)")
            images.append(resize_to_uint8(read(f"{key}_images"), image_size, max_value=255.0))
            labels.append(part_labels)
            parts.append(np.full(len(part_labels), part, dtype=np.int8))
    return DecodedPool(torch.cat(images), np.concatenate(labels), class_names,
                       official_split=np.concatenate(parts))
