"""File datasets built in a temporary folder and read through load_dataset, as a user would."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainables.data import DatasetLabelError, ImageSplits, load_dataset
from trainables.data.files import HAM10000_CLASSES

HAM_ROWS = 1000
# Roughly HAM10000's class shares (nv dominates, df and vasc are about 1%).
HAM_SHARES = {"akiec": 0.03, "bcc": 0.05, "bkl": 0.11, "df": 0.012, "mel": 0.11, "nv": 0.67, "vasc": 0.018}


def write_image(path: Path, identity: int, size: int = 8, lossless: bool = True) -> None:
    """An image whose pixels encode `identity`; lossless ones are stored as PNG whatever the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.full((size, size, 3), identity % 256, dtype=np.uint8)
    rgb[0, 0] = identity // 256
    Image.fromarray(rgb).save(path, format="PNG" if lossless else None)


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


def make_ham10000(root: Path, rows: int = HAM_ROWS, seed: int = 0) -> list[tuple[str, str, str]]:
    """A fake HAM10000: `rows` 8x8 JPEGs, 1-4 images per lesion, HAM-like class shares."""
    generator = np.random.default_rng(seed)
    classes, shares = list(HAM_SHARES), np.array(list(HAM_SHARES.values()))
    records, lesion = [], 0
    while len(records) < rows:
        dx = classes[generator.choice(len(classes), p=shares / shares.sum())]
        for _ in range(min(int(generator.integers(1, 5)), rows - len(records))):
            records.append((f"HAM_{lesion:07d}", f"ISIC_{len(records):07d}", dx))
        lesion += 1
    folder = root / "ham10000"
    write_csv(folder / "HAM10000_metadata.csv", ["lesion_id", "image_id", "dx", "dx_type", "age"],
              [[lesion_id, image_id, dx, "histo", 50] for lesion_id, image_id, dx in records])
    for position, (_, image_id, _) in enumerate(records):
        part = "HAM10000_images_part_1" if position % 2 else "HAM10000_images_part_2"
        write_image(folder / part / f"{image_id}.jpg", position)
    return records


@pytest.fixture(scope="module")
def ham_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, str, str]]]:
    root = tmp_path_factory.mktemp("ham")
    return root, make_ham10000(root)


def test_ham10000_default_split_keeps_each_lesion_in_one_split(ham_root) -> None:
    root, records = ham_root
    splits = load_dataset("ham10000", 8, seed=0, data_root=root, cache=False)
    assert splits.class_names == HAM10000_CLASSES
    sizes = [len(splits.train_labels), len(splits.val_labels), len(splits.test_labels)]
    assert sum(sizes) == HAM_ROWS and splits.skipped_images == 0
    for size, fraction in zip(sizes, (0.6, 0.2, 0.2), strict=True):
        assert abs(size / HAM_ROWS - fraction) < 0.03
    # Map each image back to its lesion through the metadata order: labels and image ids agree.
    image_lesion = {image_id: lesion for lesion, image_id, _ in records}
    lesion_sets = _split_lesions(root, splits, image_lesion)
    assert not lesion_sets[0] & lesion_sets[1] and not lesion_sets[0] & lesion_sets[2]
    assert not lesion_sets[1] & lesion_sets[2]
    overall = np.bincount([HAM10000_CLASSES.index(dx) for _, _, dx in records], minlength=7) / HAM_ROWS
    for labels in (splits.train_labels, splits.val_labels, splits.test_labels):
        assert np.abs(np.bincount(labels.numpy(), minlength=7) / len(labels) - overall).max() < 0.02


def _split_lesions(root: Path, splits: ImageSplits, image_lesion: dict[str, str]) -> list[set[str]]:
    """Lesions per split, matching images by content (every fake image is unique per position)."""
    folder = root / "ham10000"
    by_bytes: dict[bytes, set[str]] = {}
    gray = splits.train_images.shape[1] == 1  # the fake images are gray: stored as one channel
    for image_id, lesion in image_lesion.items():
        part = next(p for p in ("HAM10000_images_part_1", "HAM10000_images_part_2")
                    if (folder / p / f"{image_id}.jpg").exists())
        decoded = np.asarray(Image.open(folder / part / f"{image_id}.jpg").convert("L" if gray else "RGB"))
        by_bytes.setdefault((decoded if gray else decoded.transpose(2, 0, 1)).tobytes(), set()).add(lesion)
    return [set().union(*(by_bytes[image.numpy().tobytes()] for image in images))
            for images in (splits.train_images, splits.val_images, splits.test_images)]


def test_ham10000_split_is_identical_for_the_same_seed(ham_root) -> None:
    root, _ = ham_root
    first = load_dataset("ham10000", 8, seed=3, data_root=root)
    again = load_dataset("ham10000", 8, seed=3, data_root=root)
    other = load_dataset("ham10000", 8, seed=4, data_root=root)
    assert first.split_hash() == again.split_hash() != other.split_hash()


def test_ham10000_random_split_mixes_lesions_but_keeps_class_shares(ham_root) -> None:
    root, records = ham_root
    grouped = load_dataset("ham10000", 8, seed=0, data_root=root)
    random = load_dataset("ham10000", 8, seed=0, data_root=root, split="random")
    assert random.split_hash() != grouped.split_hash()
    assert [len(random.train_labels), len(random.val_labels), len(random.test_labels)] == [600, 200, 200]
    image_lesion = {image_id: lesion for lesion, image_id, _ in records}
    train, _, test = _split_lesions(root, random, image_lesion)
    assert train & test  # a plain random split puts images of one lesion on both sides


def test_ham10000_unknown_dx_is_an_error_naming_the_value(tmp_path: Path) -> None:
    make_ham10000(tmp_path, rows=40)
    metadata = tmp_path / "ham10000" / "HAM10000_metadata.csv"
    metadata.write_text(metadata.read_text().replace(",nv,", ",melanoma_typo,", 1))
    with pytest.raises(DatasetLabelError, match="melanoma_typo"):
        load_dataset("ham10000", 8, seed=0, data_root=tmp_path)


@pytest.mark.filterwarnings("ignore:The least populated class")
def test_unreadable_and_missing_images_are_skipped_and_counted(tmp_path: Path) -> None:
    records = make_ham10000(tmp_path, rows=200)
    folder = tmp_path / "ham10000"
    broken = next(folder.glob("HAM10000_images_part_1/*.jpg"))
    broken.write_bytes(b"not a jpeg at all")
    next(folder.glob("HAM10000_images_part_2/*.jpg")).unlink()
    splits = load_dataset("ham10000", 8, seed=0, data_root=tmp_path)
    assert splits.skipped_images == 2
    assert len(splits.train_labels) + len(splits.val_labels) + len(splits.test_labels) == len(records) - 2


def make_kermany(root: Path) -> None:
    base = root / "kermany_cxr" / "chest_xray"
    for part, count in (("train", 20), ("val", 2), ("test", 6)):
        for class_index, class_name in enumerate(("NORMAL", "PNEUMONIA")):
            for i in range(count):
                write_image(base / part / class_name / f"{part}_{i}.jpeg", 10 * i + class_index)


def test_kermany_keeps_the_official_test_set_and_merges_val_into_train(tmp_path: Path) -> None:
    make_kermany(tmp_path)
    splits = load_dataset("kermany_cxr", 16, seed=0, data_root=tmp_path)
    assert splits.class_names == ("NORMAL", "PNEUMONIA")
    assert len(splits.test_labels) == 12 and splits.test_labels.bincount().tolist() == [6, 6]
    assert len(splits.train_labels) + len(splits.val_labels) == 44
    assert splits.train_images.shape[1:] == (1, 16, 16) and splits.grayscale  # X-rays: one channel


def test_an_unexpected_class_folder_is_an_error(tmp_path: Path) -> None:
    make_kermany(tmp_path)
    write_image(tmp_path / "kermany_cxr" / "chest_xray" / "train" / "COVID" / "x.png", 1)
    with pytest.raises(DatasetLabelError, match="COVID"):
        load_dataset("kermany_cxr", 16, seed=0, data_root=tmp_path)


def test_covid19_radiography_reads_images_and_ignores_masks(tmp_path: Path) -> None:
    base = tmp_path / "covid19_radiography" / "COVID-19_Radiography_Dataset"
    classes = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
    for class_name in classes:
        for i in range(10):
            write_image(base / class_name / "images" / f"{class_name}-{i}.png", i)
            write_image(base / class_name / "masks" / f"{class_name}-{i}.png", 255)  # never read
    splits = load_dataset("covid19_radiography", 8, seed=0, data_root=tmp_path)
    assert splits.class_names == classes
    assert [len(splits.train_labels), len(splits.val_labels), len(splits.test_labels)] == [24, 8, 8]
    assert not (splits.train_images[:, :, 1:, 1:] == 255).all(dim=(1, 2, 3)).any()


def test_generic_imagefolder_uses_data_root_as_the_dataset_folder(tmp_path: Path) -> None:
    for class_name in ("benign", "malignant"):
        for i in range(10):
            write_image(tmp_path / class_name / f"{i}.png", i)
    splits = load_dataset("imagefolder", 8, seed=0, data_root=tmp_path)
    assert splits.class_names == ("benign", "malignant")
    assert (tmp_path / ".cache").is_dir()  # the cache folder is hidden, not taken for a class
    assert load_dataset("imagefolder", 8, seed=0, data_root=tmp_path).class_names == ("benign", "malignant")


def test_isic2019_one_hot_labels_and_lesion_groups(tmp_path: Path) -> None:
    folder = tmp_path / "isic2019"
    columns = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    rows, metadata = [], []
    for i in range(80):
        one_hot = [0.0] * len(columns)
        one_hot[i % 8] = 1.0
        rows.append([f"ISIC_{i:07d}", *one_hot])
        metadata.append([f"ISIC_{i:07d}", 50, f"IL_{i // 2:07d}" if i < 40 else ""])
        write_image(folder / "ISIC_2019_Training_Input" / f"ISIC_{i:07d}.jpg", i)
    write_csv(folder / "ISIC_2019_Training_GroundTruth.csv", ["image", *columns], rows)
    write_csv(folder / "ISIC_2019_Training_Metadata.csv", ["image", "age_approx", "lesion_id"], metadata)
    splits = load_dataset("isic2019", 8, seed=0, data_root=tmp_path)
    assert splits.class_names == tuple(columns[:8])
    all_labels = torch.cat([splits.train_labels, splits.val_labels, splits.test_labels])
    assert all_labels.bincount().tolist() == [10] * 8
    rows[3][1:] = [0.0] * 8 + [1.0]  # an UNK image: none of the eight classes
    write_csv(folder / "ISIC_2019_Training_GroundTruth.csv", ["image", *columns], rows)
    with pytest.raises(DatasetLabelError, match="ISIC_0000003"):
        load_dataset("isic2019", 8, seed=0, data_root=tmp_path, cache=False)


def test_idrid_grading_keeps_the_official_test_set(tmp_path: Path) -> None:
    folder = tmp_path / "idrid_grading" / "B. Disease Grading"
    for part, prefix, count in (("a. Training Set", "a. IDRiD_Training Set", 60),
                                ("b. Testing Set", "b. IDRiD_Testing Set", 10)):
        names = [f"IDRiD_{part[0]}{i:03d}" for i in range(count)]
        for i, name in enumerate(names):
            write_image(folder / "1. Original Images" / part / f"{name}.jpg", i)
        write_csv(folder / "2. Groundtruths" / f"{prefix}_Labels.csv",
                  ["Image name", "Retinopathy grade", "Risk of macular edema ", ""],
                  [[name, i % 5, 0, ""] for i, name in enumerate(names)])
    splits = load_dataset("idrid_grading", 8, seed=0, data_root=tmp_path)
    assert splits.class_names == ("0", "1", "2", "3", "4")
    assert len(splits.test_labels) == 10 and len(splits.train_labels) == 54 and len(splits.val_labels) == 6


def test_generic_csvfolder_with_class_name_labels(tmp_path: Path) -> None:
    rows = []
    for i in range(30):
        name = f"img{i}.png" if i % 2 else f"img{i}"  # ids with or without an extension
        write_image(tmp_path / "images" / (name if i % 2 else name + ".jpg"), i)
        rows.append([name, ("cyst", "tumour", "normal")[i % 3]])
    write_csv(tmp_path / "labels.csv", ["image", "label"], rows)
    splits = load_dataset("csvfolder", 8, seed=0, data_root=tmp_path)
    assert splits.class_names == ("cyst", "normal", "tumour") and splits.skipped_images == 0
    assert len(splits.train_labels) + len(splits.val_labels) + len(splits.test_labels) == 30
