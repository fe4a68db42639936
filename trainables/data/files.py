"""Datasets stored as image files: HAM10000, class-per-folder layouts and CSV-labelled layouts.

Each reader lists the files and their labels, checks the labels against the expected classes
(a DatasetLabelError before any decoding), and hands the paths to `pool_from_files`, which
decodes them once and skips (and counts) the unreadable ones. The layouts themselves are
documented in `trainables.data`.
"""

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainables.data.dicom import is_dicom_file
from trainables.data.pool import (
    IMAGE_EXTENSIONS,
    TEST,
    TRAIN,
    VAL,
    DatasetLabelError,
    DatasetNotFoundError,
    DecodedPool,
    integer_ids,
    label_indices,
    pool_from_files,
)


def read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV as dicts keyed by the stripped header; a ValueError names missing columns."""
    with open(path, newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file)
        header = [name.strip() for name in next(reader, [])]
        rows = [dict(zip(header, (value.strip() for value in row), strict=False)) for row in reader if row]
    missing = [name for name in required if name not in header]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}; it has {header}")
    return rows


# HAM10000 (Tschandl et al., 2018): 10,015 dermatoscopic images of 7,470 lesions.
HAM10000_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
HAM10000_IMAGE_FOLDERS = ("HAM10000_images_part_1", "HAM10000_images_part_2")
HAM10000_SOURCE = "https://doi.org/10.7910/DVN/DBW86T (Harvard Dataverse; also the ISIC 2018 task 3 data)"


def ham10000_pool(image_size: int, data_root: Path, download: bool = False) -> DecodedPool:
    folder = data_root / "ham10000"
    metadata = folder / "HAM10000_metadata.csv"
    image_folders = [folder / name for name in HAM10000_IMAGE_FOLDERS]
    if not metadata.is_file() or not any(image_folder.is_dir() for image_folder in image_folders):
        raise DatasetNotFoundError(
            "ham10000", folder,
            "HAM10000_metadata.csv (lesion_id,image_id,dx,...) and folders "
            f"{' and '.join(HAM10000_IMAGE_FOLDERS)} holding <image_id>.jpg",
            HAM10000_SOURCE,
        )
    rows = read_csv(metadata, required=("lesion_id", "image_id", "dx"))
    labels = label_indices([row["dx"] for row in rows], HAM10000_CLASSES, f"{metadata} (column dx)")
    located = {path.stem: path for image_folder in image_folders if image_folder.is_dir()
               for path in image_folder.iterdir()}
    # An image listed but absent is handed on as a path that fails to open: skipped and counted.
    paths = [located.get(row["image_id"], image_folders[0] / f"{row['image_id']}.jpg") for row in rows]
    groups = integer_ids([row["lesion_id"] for row in rows])
    return pool_from_files(paths, labels, HAM10000_CLASSES, image_size, groups=groups)


@dataclass(frozen=True)
class ImageFolderLayout:
    """`<data_root>/<directory>/[train|val|test/]<class>/[<image_subfolder>/]<image>`.

    With train/ (and test/, val/) subfolders their split is kept; class_names None takes every
    non-hidden folder as a class, in sorted order.
    """

    name: str
    directory: str
    source: str
    class_names: tuple[str, ...] | None = None
    image_subfolder: str = ""
    merge_val_into_train: bool = False  # e.g. Kermany's 16-image val/ folder is too small to select on


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir()
                  if path.suffix.lower() in IMAGE_EXTENSIONS or is_dicom_file(path))


def _subfolders(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir() if path.is_dir() and not path.name.startswith(".")}


def imagefolder_pool(layout: ImageFolderLayout, image_size: int, data_root: Path,
                     download: bool = False) -> DecodedPool:
    root = data_root / layout.directory
    classes = "{" + ",".join(layout.class_names) + "}" if layout.class_names else "<class>"
    expected = f"{classes}/{layout.image_subfolder + '/' if layout.image_subfolder else ''}*.png|jpg|dcm"
    if not root.is_dir():
        raise DatasetNotFoundError(layout.name, root, f"[train|test/]{expected}", layout.source)
    val_part = TRAIN if layout.merge_val_into_train else VAL
    parts = [(root / name, part) for name, part in (("train", TRAIN), ("val", val_part), ("test", TEST))
             if (root / name).is_dir()] or [(root, TRAIN)]
    found = set().union(*(_subfolders(part_root) for part_root, _ in parts))
    class_names = layout.class_names or tuple(sorted(found))
    if unexpected := sorted(found - set(class_names)):
        raise DatasetLabelError(
            f"unexpected class folders {unexpected} in {root}; expected {list(class_names)}"
        )
    paths, labels, official = [], [], []
    for part_root, part in parts:
        for label, class_name in enumerate(class_names):
            files = _images_in(part_root / class_name / layout.image_subfolder)
            paths += files
            labels += [label] * len(files)
            official += [part] * len(files)
    if not paths:
        raise DatasetNotFoundError(layout.name, root, f"[train|test/]{expected}", layout.source)
    if empty := [name for index, name in enumerate(class_names) if index not in set(labels)]:
        raise DatasetLabelError(f"classes {empty} have no images under {root}")
    split = np.array(official, dtype=np.int8) if len(parts) > 1 or parts[0][0] != root else None
    return pool_from_files(paths, np.array(labels, dtype=np.int64), class_names, image_size,
                           official_split=split)


@dataclass(frozen=True)
class CsvTable:
    """One labels CSV and the folder of the images it names; `part` is its official split, if any."""

    csv: str
    image_folder: str
    part: int | None = None


@dataclass(frozen=True)
class CsvLayout:
    """Images named by a CSV: a label column holding class names, or one 0/1 column per class."""

    name: str
    directory: str
    source: str
    tables: tuple[CsvTable, ...]
    id_column: str
    label_column: str | None = None
    one_hot_columns: tuple[str, ...] | None = None
    class_names: tuple[str, ...] | None = None  # None: the sorted label values (label_column only)
    image_extension: str = ".jpg"  # appended to ids that have no image extension
    groups_csv: str | None = None  # optional CSV mapping id_column to group_column (same-lesion ids)
    group_column: str = "lesion_id"


def _labels_of(layout: CsvLayout, rows: list[dict[str, str]],
               where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    if layout.one_hot_columns is not None:
        class_names = layout.class_names or layout.one_hot_columns
        flags = np.array([[float(row[column] or 0) for column in layout.one_hot_columns] for row in rows])
        if bad := [rows[i][layout.id_column] for i in np.flatnonzero((flags > 0.5).sum(axis=1) != 1)]:
            raise DatasetLabelError(
                f"rows {bad[:5]} in {where} do not mark exactly one of {list(class_names)}"
            )
        return flags.argmax(axis=1).astype(np.int64), class_names
    values = [row[layout.label_column] for row in rows]
    class_names = layout.class_names or tuple(sorted(set(values)))
    return label_indices(values, class_names, f"{where} (column {layout.label_column})"), class_names


def _groups_of(layout: CsvLayout, folder: Path, ids: list[str]) -> np.ndarray | None:
    if layout.groups_csv is None or not (folder / layout.groups_csv).is_file():
        return None
    rows = read_csv(folder / layout.groups_csv, required=(layout.id_column, layout.group_column))
    group_of = {row[layout.id_column]: row[layout.group_column] for row in rows if row[layout.group_column]}
    return integer_ids([group_of.get(image_id, f"image:{image_id}") for image_id in ids])


def csvfolder_pool(layout: CsvLayout, image_size: int, data_root: Path,
                   download: bool = False) -> DecodedPool:
    folder = data_root / layout.directory
    label_columns = layout.one_hot_columns or (layout.label_column,)
    for table in layout.tables:
        if not (folder / table.csv).is_file() or not (folder / table.image_folder).is_dir():
            raise DatasetNotFoundError(
                layout.name, folder / table.csv,
                f"{table.csv} with columns {layout.id_column},{','.join(label_columns)} and the folder "
                f"{table.image_folder}/ holding <{layout.id_column}>{layout.image_extension}",
                layout.source,
            )
    rows, paths, official = [], [], []
    for table in layout.tables:
        table_rows = read_csv(folder / table.csv, required=(layout.id_column, *label_columns))
        for row in table_rows:
            image_id = row[layout.id_column]
            if Path(image_id).is_absolute() or ".." in Path(image_id).parts:
                raise DatasetLabelError(
                    f"{folder / table.csv} names {image_id!r}, outside {folder / table.image_folder}; "
                    f"give file names relative to {table.image_folder}/ (no '..', no absolute paths)")
            if Path(image_id).suffix.lower() not in IMAGE_EXTENSIONS:
                image_id += layout.image_extension
            paths.append(folder / table.image_folder / image_id)
        rows += table_rows
        official += [table.part] * len(table_rows)
    if not rows:
        raise DatasetLabelError(f"no rows in {[table.csv for table in layout.tables]} under {folder}")
    labels, class_names = _labels_of(layout, rows, str(folder / layout.tables[0].csv))
    split = np.array(official, dtype=np.int8) if all(part is not None for part in official) else None
    groups = _groups_of(layout, folder, [row[layout.id_column] for row in rows])
    return pool_from_files(paths, labels, class_names, image_size, official_split=split, groups=groups)


UNLABELED_CLASS = ("unlabeled",)


def unlabeled_pool(image_size: int, data_root: Path, download: bool = False) -> DecodedPool:
    """Every image, DICOM or 16-bit PNG/TIFF under data_root, recursively (hidden folders such as
    .cache left out), with no labels: a pretraining pool only (every label 0, one class)."""
    root = Path(data_root)
    paths = sorted(
        path for path in root.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
        and (path.suffix.lower() in IMAGE_EXTENSIONS or is_dicom_file(path))
    ) if root.is_dir() else []
    if not paths:
        raise DatasetNotFoundError("unlabeled", root, "images (png, jpg, tif, dcm) anywhere below it",
                                   "your own data")
    return pool_from_files(paths, np.zeros(len(paths), dtype=np.int64), UNLABELED_CLASS, image_size)


# NIH ChestX-ray14 (Wang et al., 2017; ChestX-ray8 is its first release): 112,120 frontal X-rays
# of 30,805 patients, 14 findings mined from reports ("A|B" in one column, or "No Finding").
CHESTXRAY14_CLASSES = ("No Finding", "Finding")  # the 14 findings as one class: a probe target only
CHESTXRAY14_SOURCE = "https://nihcc.app.box.com/v/ChestXray-NIHCC"


def chestxray14_pool(image_size: int, data_root: Path, download: bool = False) -> DecodedPool:
    """`chestxray14/Data_Entry_2017.csv` (Image Index, Finding Labels, Patient ID, ...) and the
    images in `chestxray14/images*/` (the archives unpack to images_001/images/ ...); split
    grouped by patient. Mostly a pretraining pool: its labels are reduced to finding / none."""
    folder = data_root / "chestxray14"
    metadata = folder / "Data_Entry_2017.csv"
    image_folders = sorted(folder.glob("images*")) if folder.is_dir() else []
    if not metadata.is_file() or not image_folders:
        raise DatasetNotFoundError("chestxray14", folder,
                                   "Data_Entry_2017.csv and folders images*/ holding the <Image Index> PNGs",
                                   CHESTXRAY14_SOURCE)
    rows = read_csv(metadata, required=("Image Index", "Finding Labels", "Patient ID"))
    located = {path.name: path for image_folder in image_folders for path in image_folder.rglob("*.png")}
    paths = [located.get(row["Image Index"], image_folders[0] / row["Image Index"]) for row in rows]
    labels = np.array([int(row["Finding Labels"] != "No Finding") for row in rows], dtype=np.int64)
    groups = integer_ids([row["Patient ID"] for row in rows])
    return pool_from_files(paths, labels, CHESTXRAY14_CLASSES, image_size, groups=groups)
