"""Datasets: the registry that maps a dataset name to uint8 image tensors with a fixed train/val/test split.

This package holds the registry (`DATASETS`, `load_dataset`, here) and the pieces below it:
`pool` (a decoded dataset before splitting, image decoding), `splits` (split policies),
`cache` (the on-disk decoded cache), and one loader module per source family (`synthetic`,
`cifar10`, `medmnist`, `files` for image folders and CSV layouts). Add a dataset by writing
its loader (a function returning a `DecodedPool`) in the module of its family, or a new one,
and adding a row to `DATASETS`.

`load_dataset(name, image_size, seed, data_root)` returns `ImageSplits`: uint8 images
(N, C, S, S) at the trial's image size (C = 1 for gray data, 3 for colour) and int64 labels,
split deterministically from the seed (policies in `trainables.data.splits`). The unlabeled
pretraining set is the whole train split, so val and test images never reach pretraining. The
evaluation draws its own stratified label subsets, one per repeat (trainables.evaluation, the
trial's `label_fraction`); `load_dataset`'s `label_fraction` (`labeled_train_images`,
`labeled_train_labels`) is used by tests only.

Layouts under `data_root` (default `data/`); a missing dataset raises DatasetNotFoundError with
one line naming the path looked at, the layout expected and where to get it:

- `digits`, `shapes`: no files (scikit-learn's 8x8 digits; procedurally generated shapes).
- `cifar10`: `cifar10/cifar-10-batches-py/` (torchvision's python batches). From
  https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, or `download=True`. Default split: the
  official test set; 10% of the official train set, stratified, is val.
- `ham10000`: `ham10000/HAM10000_metadata.csv` (columns lesion_id, image_id, dx, ...) and
  `ham10000/HAM10000_images_part_1/`, `ham10000/HAM10000_images_part_2/` holding `<image_id>.jpg`.
  From https://doi.org/10.7910/DVN/DBW86T. Classes akiec, bcc, bkl, df, mel, nv, vasc. Default
  split 60/20/20, stratified by dx and grouped by lesion_id (no lesion in two splits);
  `split="random"` is the plain stratified random split of the BiT + SimSiam study.
- MedMNIST v2 (`dermamnist`, `pneumoniamnist`, `breastmnist`, `bloodmnist`, `retinamnist`,
  `pathmnist`, `octmnist`, `organamnist`): `medmnist/<name>.npz` (28 px) or `<name>_64.npz`,
  `_128`, `_224` (the smallest size >= the image size is used). From
  https://zenodo.org/records/10519652, or `download=True` (MD5-checked). Official splits kept.
- `kermany_cxr` (Kermany et al., 2018, pediatric pneumonia X-rays):
  `kermany_cxr/chest_xray/{train,test}/{NORMAL,PNEUMONIA}/*.jpeg` (a `val/` folder, 16 images
  in the Kaggle copy, joins train). From https://data.mendeley.com/datasets/rscbjbr9sj/2.
- `covid19_radiography`: `covid19_radiography/COVID-19_Radiography_Dataset/{COVID,Lung_Opacity,
  Normal,Viral Pneumonia}/images/*.png` (the `masks/` folders are ignored). From
  https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database. Split 60/20/20.
- `isic2019`: `isic2019/ISIC_2019_Training_GroundTruth.csv` (image, MEL, NV, BCC, AK, BKL, DF,
  VASC, SCC[, UNK] one-hot) and `isic2019/ISIC_2019_Training_Input/<image>.jpg`; with
  `isic2019/ISIC_2019_Training_Metadata.csv` (image, lesion_id) present the split is grouped by
  lesion. From https://challenge.isic-archive.com/data/#2019.
- `idrid_grading` (IDRiD, diabetic retinopathy grade 0-4): under `idrid_grading/B. Disease
  Grading/`, `2. Groundtruths/a. IDRiD_Training Set_Labels.csv` and `b. IDRiD_Testing Set_Labels.csv`
  (columns "Image name", "Retinopathy grade") with images in `1. Original Images/a. Training Set/`
  and `b. Testing Set/` as `<Image name>.jpg`. From https://idrid.grand-challenge.org. The
  official test set is kept.
- `chestxray14` (NIH ChestX-ray14; ChestX-ray8 is its first release): `chestxray14/Data_Entry_2017.csv`
  (Image Index, Finding Labels, Patient ID) and the PNGs under `chestxray14/images*/`. From
  https://nihcc.app.box.com/v/ChestXray-NIHCC. Labels are finding vs "No Finding"; split grouped
  by patient. Mostly a pretraining pool (`pretrain_dataset=chestxray14`).
- `imagefolder`: your own data, `data_root` itself is the dataset folder:
  `<data_root>/<class>/*.png|jpg|dcm`, or `<data_root>/{train,val,test}/<class>/*` to keep a split.
- `csvfolder`: your own data, `<data_root>/labels.csv` (columns image, label: a file name, with or
  without .jpg, and a class name) and the images in `<data_root>/images/`.

Both folder layouts read DICOM files (`.dcm`, `.dicom`, or no extension with the DICM marker;
`trainables.data.dicom`) and 16-bit PNG/TIFF at full depth, windowed to 8 bits
(`trainables.data.windowing`): the file's VOI LUT, else its window centre/width, else the
0.5-99.5 percentile window; MONOCHROME1 is inverted. A multi-frame DICOM is refused with
MultiFrameDicomError. Gray data is stored with one channel (`ImageSplits.grayscale`): a dataset
marked gray (`DatasetSpec.grayscale`; a colour file in it is reduced to its luma), or one whose
every decoded image is gray; a third of the bytes of three replicated channels in the cache, the
object store and on the GPU. Only the normalization of a view (`trainables.augmentations`)
makes three channels of it, for the backbone's 3-channel first layer.

Every file dataset is decoded and resized once per image size into
`<data_root>/.cache/<name>-<size>px-v4.npz` (`trainables.data.cache`), shared by every seed,
split and trial. Unreadable images are skipped and counted in `ImageSplits.skipped_images`;
labels outside a dataset's classes raise DatasetLabelError before anything is decoded.
"""

import dataclasses
import hashlib
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from trainables.data.cache import cache_file, read_cached_pool, source_manifest, store_pool
from trainables.data.cifar10 import cifar10_pool
from trainables.data.files import (
    CsvLayout,
    CsvTable,
    ImageFolderLayout,
    chestxray14_pool,
    csvfolder_pool,
    ham10000_pool,
    imagefolder_pool,
    unlabeled_pool,
)
from trainables.data.medmnist import MEDMNIST_CLASSES, MEDMNIST_TRAIN_IMAGES, medmnist_pool
from trainables.data.pool import (
    TEST,
    TRAIN,
    DatasetLabelError,
    DatasetNotFoundError,
    DecodedPool,
    pool_from_arrays,
    pool_to_arrays,
    resize_to_uint8,
    to_one_channel,
)
from trainables.data.pretraining import PretrainingPool, seeded_subset, without_images_in
from trainables.data.splits import SPLIT_POLICIES, split_pool, stratified_split, stratified_subset
from trainables.data.synthetic import digits_pool, shapes_pool

logger = logging.getLogger(__name__)

__all__ = ["DATASETS", "LABELED_DATASETS", "DatasetLabelError", "DatasetNotFoundError", "DatasetSpec",
           "DecodedPool", "EmptyDatasetError", "ImageSplits", "PretrainingPool", "SPLIT_POLICIES",
           "decoded_pool", "load_dataset", "load_pretraining_pool", "pool_from_arrays", "pool_to_arrays",
           "resize_to_uint8", "split_dataset", "split_indices", "stratified_split"]


@dataclass(frozen=True)
class ImageSplits:
    """uint8 images (N, C, S, S) and int64 labels of each split, plus what the loop reports.

    labeled_train_indices: positions into train_* whose labels the probe may use (all of them
    unless load_dataset got label_fraction < 1); skipped_images: unreadable files left out;
    grayscale: single-channel data (stored as one channel, C = 1), whose augmentations leave
    out the colour operations.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: tuple[str, ...]
    skipped_images: int = 0
    label_fraction: float = 1.0
    labeled_train_indices: torch.Tensor | None = None
    grayscale: bool = False

    TENSOR_FIELDS: ClassVar[tuple[str, ...]] = (
        "train_images", "train_labels", "val_images", "val_labels", "test_images", "test_labels",
        "labeled_train_indices",
    )

    def __post_init__(self) -> None:
        if self.labeled_train_indices is None:
            object.__setattr__(self, "labeled_train_indices", torch.arange(len(self.train_labels)))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def labeled_train_images(self) -> torch.Tensor:
        return self.train_images[self.labeled_train_indices]

    @property
    def labeled_train_labels(self) -> torch.Tensor:
        return self.train_labels[self.labeled_train_indices]

    def to_arrays(self) -> dict[str, Any]:
        """Plain numpy arrays and values, for Ray's object store: numpy arrays are stored once
        per node and read in place (zero-copy) by every worker there; torch tensors would not be."""
        arrays: dict[str, Any] = {name: getattr(self, name).numpy() for name in self.TENSOR_FIELDS}
        return {**arrays, "class_names": self.class_names, "skipped_images": self.skipped_images,
                "label_fraction": self.label_fraction, "grayscale": self.grayscale}

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any]) -> "ImageSplits":
        """The splits over arrays from `to_arrays`, sharing their memory (the object store's
        arrays are read-only: nothing here writes into them, every batch is a gathered copy)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensors = {name: torch.from_numpy(arrays[name]) for name in cls.TENSOR_FIELDS}
        return cls(**tensors, class_names=tuple(arrays["class_names"]),
                   skipped_images=int(arrays["skipped_images"]),
                   label_fraction=float(arrays["label_fraction"]),
                   grayscale=bool(arrays.get("grayscale", False)))

    def split_hash(self) -> str:
        """A short hash of the image bytes and labels of each split and of the labelled subset."""
        digest = hashlib.sha256()
        for tensor in (self.train_images, self.train_labels, self.val_images, self.val_labels,
                       self.test_images, self.test_labels, self.labeled_train_indices):
            digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class DatasetSpec:
    description: str
    build: Callable[[int, Path, bool], DecodedPool]  # (image_size, data_root, download) -> pool
    cache_from_size: int | None = 0  # cache the pool on disk at image sizes >= this; None: never
    # A cheap look (no decoding) at whether the files are under data_root; bundled data: always.
    on_disk: Callable[[Path], bool] = lambda data_root: True
    # True when the images have no up/down orientation (dermoscopy, pathology, blood smears,
    # fundus, the randomly rotated shapes): pretraining and fine-tuning then flip them vertically
    # too. Radiographs, ultrasound and natural images keep their orientation.
    vertical_flip: bool = False
    # Single-channel images (radiographs, OCT, ultrasound): stored as one channel (a colour file
    # reduced to its luma), and the augmentations drop hue, saturation and grayscale conversion.
    # None: detected, true when every decoded image has R = G = B (a folder of DICOMs or gray
    # PNGs; JPEGs saved in colour are not). False: kept as decoded.
    grayscale: bool | None = None
    # The folder under data_root whose files the cache fingerprints ("" is data_root itself);
    # None: no files (bundled or generated data).
    source_folder: str | None = ""
    labeled: bool = True  # False: a pretraining pool only (the `unlabeled` layout)
    # Training-split size (images), for the dry run's GPU-hour estimate only (orchestrator.estimates);
    # None: the user's own folder, of a size unknown until it is read.
    train_image_count: int | None = None


def _exists(relative: str) -> Callable[[Path], bool]:
    return lambda data_root: (Path(data_root) / relative).exists()


MEDMNIST_WITHOUT_ORIENTATION = ("dermamnist", "pathmnist", "bloodmnist", "retinamnist")


def _medmnist(name: str) -> DatasetSpec:
    return DatasetSpec(f"MedMNIST v2 {name} ({len(MEDMNIST_CLASSES[name])} classes), official split",
                       partial(medmnist_pool, name), source_folder="medmnist",
                       on_disk=lambda data_root: any((Path(data_root) / "medmnist").glob(f"{name}*.npz")),
                       vertical_flip=name in MEDMNIST_WITHOUT_ORIENTATION,
                       train_image_count=MEDMNIST_TRAIN_IMAGES[name])


KERMANY_CXR = ImageFolderLayout(
    "kermany_cxr", "kermany_cxr/chest_xray", "https://data.mendeley.com/datasets/rscbjbr9sj/2",
    class_names=("NORMAL", "PNEUMONIA"), merge_val_into_train=True,
)
COVID19_RADIOGRAPHY = ImageFolderLayout(
    "covid19_radiography", "covid19_radiography/COVID-19_Radiography_Dataset",
    "https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database",
    class_names=("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"), image_subfolder="images",
)
ISIC2019 = CsvLayout(
    "isic2019", "isic2019", "https://challenge.isic-archive.com/data/#2019",
    tables=(CsvTable("ISIC_2019_Training_GroundTruth.csv", "ISIC_2019_Training_Input"),),
    id_column="image", one_hot_columns=("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"),
    groups_csv="ISIC_2019_Training_Metadata.csv", group_column="lesion_id",
)
IDRID_GRADING = CsvLayout(
    "idrid_grading", "idrid_grading/B. Disease Grading", "https://idrid.grand-challenge.org",
    tables=(
        CsvTable("2. Groundtruths/a. IDRiD_Training Set_Labels.csv",
                 "1. Original Images/a. Training Set", TRAIN),
        CsvTable("2. Groundtruths/b. IDRiD_Testing Set_Labels.csv",
                 "1. Original Images/b. Testing Set", TEST),
    ),
    id_column="Image name", label_column="Retinopathy grade", class_names=("0", "1", "2", "3", "4"),
)
IMAGEFOLDER = ImageFolderLayout("imagefolder", "", "your own data: one folder per class")
CSVFOLDER = CsvLayout("csvfolder", "", "your own data: a labels CSV and an image folder",
                      tables=(CsvTable("labels.csv", "images"),), id_column="image", label_column="label")

DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec("scikit-learn's bundled 8x8 digits, upsampled (offline)",
                          lambda size, root, download: digits_pool(size), cache_from_size=None,
                          source_folder=None, train_image_count=1077),
    "shapes": DatasetSpec("6 procedurally generated shapes on textured, coloured backgrounds (offline)",
                          lambda size, root, download: shapes_pool(size), cache_from_size=96,
                          vertical_flip=True, source_folder=None, train_image_count=1800),
    "cifar10": DatasetSpec("CIFAR-10 via torchvision, official test set", cifar10_pool,
                           on_disk=_exists("cifar10/cifar-10-batches-py"), source_folder="cifar10",
                           train_image_count=45000),
    "ham10000": DatasetSpec("HAM10000 dermoscopy, 7 classes, split grouped by lesion", ham10000_pool,
                            on_disk=_exists("ham10000/HAM10000_metadata.csv"), vertical_flip=True,
                            source_folder="ham10000", train_image_count=6009),
    **{name: _medmnist(name) for name in MEDMNIST_CLASSES},
    "kermany_cxr": DatasetSpec("Kermany pediatric chest X-rays, normal vs pneumonia",
                               partial(imagefolder_pool, KERMANY_CXR),
                               on_disk=_exists(KERMANY_CXR.directory),
                               source_folder=KERMANY_CXR.directory, grayscale=True, train_image_count=5232),
    "covid19_radiography": DatasetSpec("COVID-19 Radiography Database, 4 classes",
                                       partial(imagefolder_pool, COVID19_RADIOGRAPHY),
                                       on_disk=_exists(COVID19_RADIOGRAPHY.directory),
                                       source_folder=COVID19_RADIOGRAPHY.directory, grayscale=True,
                                       train_image_count=12697),
    "isic2019": DatasetSpec("ISIC 2019 dermoscopy, 8 classes", partial(csvfolder_pool, ISIC2019),
                            on_disk=_exists(ISIC2019.directory),
                            source_folder=ISIC2019.directory, vertical_flip=True, train_image_count=15198),
    "idrid_grading": DatasetSpec("IDRiD diabetic retinopathy grades 0-4",
                                 partial(csvfolder_pool, IDRID_GRADING),
                                 on_disk=_exists(IDRID_GRADING.directory),
                                 source_folder=IDRID_GRADING.directory, vertical_flip=True,
                                 train_image_count=330),
    "chestxray14": DatasetSpec("NIH ChestX-ray14 frontal X-rays (finding vs none), grouped by patient",
                               chestxray14_pool, on_disk=_exists("chestxray14/Data_Entry_2017.csv"),
                               source_folder="chestxray14", grayscale=True, train_image_count=67272),
    "imagefolder": DatasetSpec("data_root/<class>/*.png|jpg|dcm", partial(imagefolder_pool, IMAGEFOLDER)),
    "csvfolder": DatasetSpec("data_root/labels.csv + data_root/images/", partial(csvfolder_pool, CSVFOLDER)),
    "unlabeled": DatasetSpec("every image under data_root, recursively, no labels (pretraining only)",
                             unlabeled_pool, labeled=False),
}
# The datasets a trial can evaluate on (all but the pretraining-only ones).
LABELED_DATASETS: tuple[str, ...] = tuple(name for name, spec in DATASETS.items() if spec.labeled)


class EmptyDatasetError(ValueError):
    """A dataset whose files are there but none of whose images could be read."""


def with_stored_channels(pool: DecodedPool, grayscale: bool | None, name: str) -> DecodedPool:
    """The pool as it is stored: one channel when the dataset is gray (`DatasetSpec.grayscale`
    True: colour files reduced to their luma, and counted in a log line) or, when None, when every
    image is gray; else as decoded."""
    if pool.images.shape[1] == 1 or grayscale is False:
        return pool
    coloured = sum(int((chunk[:, :1] != chunk).flatten(1).any(dim=1).sum())
                   for chunk in pool.images.split(4096))
    if coloured and not grayscale:
        return pool
    gray = to_one_channel(pool.images)
    if coloured:
        logger.warning("dataset %r is gray: %d of its %d images were in colour and were reduced to "
                       "their luma", name, coloured, len(gray))
    return dataclasses.replace(pool, images=gray)


def decoded_pool(name: str, image_size: int, data_root: str | Path, *, download: bool = False,
                 cache: bool = True, accept: Callable[[DecodedPool], object] | None = None) -> DecodedPool:
    """The dataset's decoded pool, from the on-disk cache while its source files are unchanged.

    `accept` (e.g. splitting the pool) raises to refuse a pool: a refused or empty pool is never
    written to the cache, so it cannot poison a later run."""
    spec, root = DATASETS[name], Path(data_root)

    def build() -> DecodedPool:
        pool = with_stored_channels(spec.build(image_size, root, download), spec.grayscale, name)
        if len(pool.labels) == 0:
            raise EmptyDatasetError(f"dataset {name!r} at {root}: none of its {pool.skipped_images} "
                                    "images could be read; check the files (the log names each one)")
        if accept is not None:
            accept(pool)
        return pool

    if not (cache and spec.cache_from_size is not None and image_size >= spec.cache_from_size):
        return build()
    path = cache_file(root, name, image_size)
    # Listed before decoding: a file changed while decoding makes the next run rebuild, never lie.
    manifest = source_manifest(None if spec.source_folder is None else root / spec.source_folder)
    pool = read_cached_pool(path, manifest)
    if pool is None:
        pool = build()
        store_pool(path, pool, manifest)
    return pool


# A stratified 60/20/20 split (splits.stratified_split) draws test, then val from the rest, each
# stratified: scikit-learn needs two images of a class in what it splits, so three in all.
MIN_IMAGES_PER_CLASS = 3


def check_splittable(name: str, data_root: str | Path, pool: DecodedPool, split: str) -> None:
    """Two classes at least (a classifier of one is no evaluation), and enough images of each for
    the split; a DatasetLabelError naming the class and the count otherwise."""
    present = np.unique(pool.labels)
    if len(present) < 2:
        only = pool.class_names[int(present[0])] if len(present) else "none"
        raise DatasetLabelError(f"dataset {name!r} at {data_root} has one class ({only}); the evaluation "
                                "needs at least two: add a folder (or rows) for another class")
    if split != "random" and (pool.official_split is not None or pool.groups is not None):
        return  # an official or grouped split: scikit-learn's own word, below, if it cannot draw one
    counts = np.bincount(pool.labels, minlength=len(pool.class_names))
    if (few := [(pool.class_names[index], int(count)) for index, count in enumerate(counts)
                if 0 < count < MIN_IMAGES_PER_CLASS]):
        listed = ", ".join(f"{class_name} ({count})" for class_name, count in few)
        raise DatasetLabelError(f"dataset {name!r} at {data_root}: too few images of {listed} for a "
                                f"train/val/test split; give each class at least {MIN_IMAGES_PER_CLASS}")


def check_split_arguments(name: str, split: str, label_fraction: float) -> None:
    if name not in LABELED_DATASETS:
        raise ValueError(f"unknown labeled dataset {name!r}; valid datasets: {', '.join(LABELED_DATASETS)}")
    if split not in SPLIT_POLICIES:
        raise ValueError(f"unknown split policy {split!r}; valid policies: {', '.join(SPLIT_POLICIES)}")
    if not 0 < label_fraction <= 1:
        raise ValueError(f"bad label_fraction {label_fraction}; it must be in (0, 1]")


def split_indices(name: str, data_root: str | Path, pool: DecodedPool, split: str,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, val and test rows of a dataset's pool for a split policy and seed; DatasetLabelError
    with one line where the pool cannot be split."""
    check_splittable(name, data_root, pool, split)
    try:
        train, val, test = split_pool(pool.labels, pool.official_split, pool.groups, split, seed)
    except ValueError as error:  # scikit-learn's word on a split it cannot draw
        raise DatasetLabelError(f"dataset {name!r} at {data_root} cannot be split ({split} split, "
                                f"{len(pool.labels)} images): {' '.join(str(error).split())}; "
                                "add images") from None
    if np.intersect1d(train, test).size or np.intersect1d(val, test).size or np.intersect1d(train, val).size:
        raise RuntimeError(f"the {split!r} split of {name} overlaps; this is a bug")
    return train, val, test


def split_dataset(name: str, pool: DecodedPool, seed: int, data_root: str | Path = "data", *,
                  split: str = "default", label_fraction: float = 1.0) -> ImageSplits:
    """The train/val/test splits of a dataset's decoded pool, fixed by `seed` (what load_dataset
    returns; a sweep's worker calls it on the pool the driver shared)."""
    check_split_arguments(name, split, label_fraction)
    train, val, test = (torch.as_tensor(indices, dtype=torch.int64)
                        for indices in split_indices(name, data_root, pool, split, seed))
    labels = torch.as_tensor(pool.labels, dtype=torch.int64)
    labeled = stratified_subset(pool.labels[train.numpy()], label_fraction, seed)
    return ImageSplits(
        train_images=pool.images[train], train_labels=labels[train],
        val_images=pool.images[val], val_labels=labels[val],
        test_images=pool.images[test], test_labels=labels[test],
        class_names=pool.class_names, skipped_images=pool.skipped_images,
        label_fraction=label_fraction, labeled_train_indices=torch.as_tensor(labeled, dtype=torch.int64),
        grayscale=pool.images.shape[1] == 1,
    )


def load_dataset(name: str, image_size: int, seed: int, data_root: str | Path = "data", *,
                 split: str = "default", label_fraction: float = 1.0, download: bool = False,
                 cache: bool = True) -> ImageSplits:
    """The train/val/test splits of a registered dataset at `image_size`, fixed by `seed`.

    split: a policy of SPLIT_POLICIES ("default": the dataset's protocol, "random": stratified
    60/20/20); label_fraction: the stratified share of training labels the probe sees;
    download: fetch a missing dataset where the source allows it; cache: reuse the decoded pool.
    """
    check_split_arguments(name, split, label_fraction)
    pool = decoded_pool(name, image_size, data_root, download=download, cache=cache,
                        accept=lambda pool: split_indices(name, data_root, pool, split, seed))
    return split_dataset(name, pool, seed, data_root, split=split, label_fraction=label_fraction)


def load_pretraining_pool(name: str, data_root: str | Path, evaluation: ImageSplits, *,
                          same_files: bool, image_size: int, seed: int, fraction: float = 1.0,
                          download: bool = False, cache: bool = True,
                          source: DecodedPool | None = None) -> PretrainingPool:
    """What SSL pretrains on (trainables.data.pretraining): the evaluation's own train split when
    `same_files`, else the train split of dataset `name` under `data_root` (or every image of an
    `unlabeled` folder) less any image equal to an evaluation val/test image; then a seeded
    `fraction` of it. `source`: that dataset's pool, decoded already (a sweep's driver shares it)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    removed, skipped = 0, evaluation.skipped_images
    if same_files:
        images, grayscale = evaluation.train_images, evaluation.grayscale
    else:
        pool = source or decoded_pool(name, image_size, data_root, download=download, cache=cache)
        skipped = pool.skipped_images
        if name in LABELED_DATASETS:  # its train split only: its own val/test stay unseen too
            train, _, _ = split_pool(pool.labels, pool.official_split, pool.groups, "default", seed)
            images = pool.images[torch.as_tensor(train, dtype=torch.int64)]
        else:
            images = pool.images
        held_out = torch.cat([evaluation.val_images, evaluation.test_images])
        images, removed = without_images_in(images, held_out)
        grayscale = images.shape[1] == 1
    if len(images) == 0:
        raise EmptyDatasetError(f"the pretraining pool {name!r} at {data_root} is empty after removing "
                                f"{removed} images of the evaluation's val/test splits")
    kept = torch.as_tensor(seeded_subset(len(images), fraction, seed), dtype=torch.int64)
    return PretrainingPool(images=images[kept] if fraction < 1 else images, dataset=name,
                           grayscale=grayscale, overlap_removed=removed, skipped_images=skipped,
                           fraction=fraction)
