"""load_dataset across the registry: missing-data errors, split policies and the labelled subset."""

from pathlib import Path

import numpy as np
import pytest
import torch

from trainables.data import DATASETS, DatasetNotFoundError, ImageSplits, decoded_pool, load_dataset

OFFLINE = {"digits", "shapes"}  # need no files
USERS_OWN = {"imagefolder", "csvfolder", "unlabeled"}  # layouts of the user's own folder


@pytest.mark.parametrize("name", sorted(set(DATASETS) - OFFLINE))
def test_a_missing_dataset_is_one_line_naming_it_the_path_and_the_source(name: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as raised:
        if DATASETS[name].labeled:
            load_dataset(name, 32, seed=0, data_root=tmp_path)
        else:  # a pretraining pool only (the unlabeled layout)
            decoded_pool(name, 32, tmp_path)
    message = str(raised.value)
    assert isinstance(raised.value, FileNotFoundError)
    assert "\n" not in message and repr(name) in message and str(tmp_path) in message
    assert "expected" in message and "get it from" in message
    assert not (tmp_path / ".cache").exists()


@pytest.mark.parametrize("name", sorted(OFFLINE))
def test_offline_datasets_load_without_files(name: str, tmp_path: Path) -> None:
    splits = load_dataset(name, 16, 0, str(tmp_path))  # the loop's positional call
    channels = 1 if name == "digits" else 3  # gray digits are stored as one channel
    assert splits.train_images.dtype == torch.uint8 and splits.train_images.shape[1:] == (channels, 16, 16)
    assert splits.grayscale == (channels == 1)
    assert splits.skipped_images == 0 and splits.label_fraction == 1.0


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_published_dataset_states_its_training_split_size(name: str, tmp_path: Path) -> None:
    """The dry run's GPU-hour estimate (orchestrator/estimates.py) reads it; a user's own folder has
    no size until it is read, and its estimate says unknown."""
    count = DATASETS[name].train_image_count
    if name in USERS_OWN:
        assert count is None
        return
    assert isinstance(count, int) and count > 0
    if name in OFFLINE:  # the one size that can be checked here
        assert len(load_dataset(name, 8, seed=0, data_root=tmp_path).train_images) == count


def _rows(images: torch.Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


def test_pretraining_images_never_include_test_or_val_images() -> None:
    splits = load_dataset("shapes", 24, seed=0)
    assert len(_rows(splits.train_images)) == len(splits.train_images)  # every shape image is unique
    assert not _rows(splits.train_images) & _rows(splits.test_images)
    assert not _rows(splits.train_images) & _rows(splits.val_images)


@pytest.fixture(scope="module")
def digits() -> ImageSplits:
    return load_dataset("digits", 16, seed=0)


def test_label_fraction_is_a_stratified_subset_of_the_training_labels(digits: ImageSplits) -> None:
    subset = load_dataset("digits", 16, seed=0, label_fraction=0.1)
    assert torch.equal(subset.train_images, digits.train_images)  # pretraining keeps every image
    assert torch.equal(subset.test_labels, digits.test_labels)
    indices = subset.labeled_train_indices
    assert len(indices.unique()) == len(indices) and indices.max() < len(subset.train_labels)
    per_class = np.bincount(subset.train_labels.numpy(), minlength=10)
    assert subset.labeled_train_labels.bincount(minlength=10).tolist() == [round(0.1 * n) for n in per_class]
    assert torch.equal(subset.labeled_train_images, subset.train_images[indices])


def test_label_fraction_is_deterministic_and_covered_by_the_split_hash(digits: ImageSplits) -> None:
    subset = load_dataset("digits", 16, seed=0, label_fraction=0.1)
    assert torch.equal(load_dataset("digits", 16, seed=0, label_fraction=0.1).labeled_train_indices,
                       subset.labeled_train_indices)
    assert subset.split_hash() != digits.split_hash()
    assert load_dataset("digits", 16, seed=0, label_fraction=0.1).split_hash() == subset.split_hash()
    assert torch.equal(digits.labeled_train_indices, torch.arange(len(digits.train_labels)))


def test_a_tiny_label_fraction_keeps_one_label_per_class() -> None:
    subset = load_dataset("digits", 16, seed=0, label_fraction=0.001)
    assert subset.labeled_train_labels.sort().values.tolist() == list(range(10))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_a_bad_label_fraction_is_rejected(fraction: float) -> None:
    with pytest.raises(ValueError, match="label_fraction"):
        load_dataset("digits", 16, seed=0, label_fraction=fraction)


def test_an_unknown_split_policy_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="default.*random"):
        load_dataset("digits", 16, seed=0, split="grouped_typo")


def test_random_equals_default_for_a_dataset_without_groups_or_official_split(digits: ImageSplits) -> None:
    assert load_dataset("digits", 16, seed=0, split="random").split_hash() == digits.split_hash()


def test_image_splits_built_by_hand_label_every_training_image() -> None:
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 0, 1])
    splits = ImageSplits(images, labels, images, labels, images, labels, ("a", "b"))
    assert splits.labeled_train_indices.tolist() == [0, 1, 2, 3] and splits.skipped_images == 0
