"""The pretraining pool: an unlabeled folder or another dataset, never the evaluation's val/test images."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainables.data import EmptyDatasetError, load_dataset, load_pretraining_pool
from trainables.data.pretraining import seeded_subset, without_images_in


def make_imagefolder(root: Path, per_class: int = 10, seed: int = 0) -> None:
    generator = np.random.default_rng(seed)
    for class_name in ("a", "b"):
        (root / class_name).mkdir(parents=True)
        for index in range(per_class):
            pixels = generator.integers(0, 256, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / class_name / f"{index}.png")


def test_an_unlabeled_folder_pretrains_without_the_evaluation_test_images(tmp_path: Path) -> None:
    labeled, unlabeled = tmp_path / "labeled", tmp_path / "unlabeled"
    make_imagefolder(labeled)
    make_imagefolder(unlabeled / "nested" / "deeper", per_class=7, seed=5)  # any depth, no classes
    evaluation = load_dataset("imagefolder", 16, seed=0, data_root=labeled, split="random")
    # One file of the evaluation's test split, copied into the pretraining folder: it must go.
    test_rows = {image.numpy().tobytes() for image in evaluation.test_images}
    copied = next(path for path in sorted(labeled.rglob("*.png")) if _decoded(path) in test_rows)
    shutil.copy(copied, unlabeled / "copied.png")
    pool = load_pretraining_pool("unlabeled", unlabeled, evaluation, same_files=False, image_size=16, seed=0)
    assert pool.overlap_removed == 1 and len(pool.images) == 14  # 15 files, the copy removed
    assert not {image.numpy().tobytes() for image in pool.images} & test_rows
    half = load_pretraining_pool("unlabeled", unlabeled, evaluation, same_files=False, image_size=16,
                                 seed=0, fraction=0.5)
    assert len(half.images) == 7 and half.content_hash() != pool.content_hash()


def _decoded(path: Path) -> bytes:
    from trainables.data.pool import decode_image
    return np.ascontiguousarray(decode_image(path, 16).transpose(2, 0, 1)).tobytes()


def test_the_same_files_pretrain_on_the_train_split_only(tmp_path: Path) -> None:
    make_imagefolder(tmp_path)
    evaluation = load_dataset("imagefolder", 16, seed=0, data_root=tmp_path, split="random")
    pool = load_pretraining_pool("imagefolder", tmp_path, evaluation, same_files=True, image_size=16, seed=0)
    assert torch.equal(pool.images, evaluation.train_images) and pool.overlap_removed == 0


def test_a_pool_made_only_of_evaluation_images_is_refused(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "labeled")
    evaluation = load_dataset("imagefolder", 16, seed=0, data_root=tmp_path / "labeled", split="random")
    (tmp_path / "unlabeled").mkdir()
    for index, image in enumerate(evaluation.test_images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / "unlabeled" / f"{index}.png")
    with pytest.raises(EmptyDatasetError, match="empty after removing 4"):
        load_pretraining_pool("unlabeled", tmp_path / "unlabeled", evaluation, same_files=False,
                              image_size=16, seed=0)


def test_overlap_removal_and_the_seeded_subset_against_a_naive_reference() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (20, 3, 4, 4), dtype=torch.uint8, generator=generator)
    excluded = torch.cat([images[[2, 5, 5]], torch.zeros(1, 3, 4, 4, dtype=torch.uint8)])
    kept, removed = without_images_in(images, excluded)
    reference = [image for image in images if not any(torch.equal(image, other) for other in excluded)]
    assert removed == 2 and torch.equal(kept, torch.stack(reference))
    subset = seeded_subset(20, 0.25, seed=3)
    assert len(subset) == 5 and np.array_equal(subset, seeded_subset(20, 0.25, seed=3))
    assert not np.array_equal(subset, seeded_subset(20, 0.25, seed=4))


def test_a_gray_image_is_found_whether_stored_as_one_channel_or_three() -> None:
    """A one-channel pool against a colour evaluation set (or the other way round) is compared by
    pixels: a gray evaluation image stored as three equal channels removes its one-channel copy."""
    generator = torch.Generator().manual_seed(1)
    gray = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8, generator=generator)
    colour = torch.randint(0, 256, (3, 3, 4, 4), dtype=torch.uint8, generator=generator)
    evaluation = torch.cat([colour, gray[[4, 7]].expand(-1, 3, -1, -1)])
    kept, removed = without_images_in(gray, evaluation)
    assert removed == 2 and torch.equal(kept, gray[[0, 1, 2, 3, 5, 6, 8, 9]])
    kept, removed = without_images_in(evaluation, gray[[7]])  # and the other way round
    assert removed == 1 and torch.equal(kept, evaluation[:4])


def test_chestxray14_reads_its_csv_and_image_folders_grouped_by_patient(tmp_path: Path) -> None:
    folder = tmp_path / "chestxray14"
    rows = ["Image Index,Finding Labels,Follow-up #,Patient ID"]
    generator = np.random.default_rng(2)
    for index in range(20):
        subfolder = folder / f"images_00{1 + index % 2}" / "images"
        subfolder.mkdir(parents=True, exist_ok=True)
        name = f"{index:08d}_000.png"
        Image.fromarray(generator.integers(0, 256, (24, 24), dtype=np.uint8)).save(subfolder / name)
        rows.append(f"{name},{'No Finding' if index % 2 else 'Effusion|Mass'},0,{index // 2}")
    (folder / "Data_Entry_2017.csv").write_text("\n".join(rows) + "\n")
    splits = load_dataset("chestxray14", 16, seed=0, data_root=tmp_path, split="default")
    assert splits.class_names == ("No Finding", "Finding") and splits.grayscale
    assert len(splits.train_labels) + len(splits.val_labels) + len(splits.test_labels) == 20
    evaluation = load_dataset("shapes", 16, seed=0)
    pool = load_pretraining_pool("chestxray14", tmp_path, evaluation, same_files=False, image_size=16, seed=0)
    assert len(pool.images) == len(splits.train_images) and pool.grayscale
