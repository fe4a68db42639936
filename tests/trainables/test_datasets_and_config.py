"""Datasets (splits, determinism), the trial config's validation, and every registered backbone."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from trainables.backbones import BACKBONES, build_backbone
from trainables.config import ConfigError, TrialConfig, coerce_method_param
from trainables.data import ImageSplits, load_dataset, stratified_split
from trainables.methods import METHODS

DIGITS_COUNT = 1797


@pytest.fixture(scope="module")
def digits_splits() -> ImageSplits:
    return load_dataset("digits", 32, seed=0)


def test_digits_splits_are_uint8_gray_at_the_requested_size(digits_splits: ImageSplits) -> None:
    for images, labels in (
        (digits_splits.train_images, digits_splits.train_labels),
        (digits_splits.val_images, digits_splits.val_labels),
        (digits_splits.test_images, digits_splits.test_labels),
    ):
        assert images.dtype == torch.uint8
        assert images.shape[1:] == (1, 32, 32)  # gray: stored as one channel
        assert labels.dtype == torch.int64 and labels.shape == (images.shape[0],)
    assert digits_splits.num_classes == 10 and digits_splits.grayscale


def test_digits_split_sizes_are_60_20_20(digits_splits: ImageSplits) -> None:
    sizes = [
        len(digits_splits.train_labels),
        len(digits_splits.val_labels),
        len(digits_splits.test_labels),
    ]
    assert sum(sizes) == DIGITS_COUNT
    for size, fraction in zip(sizes, (0.6, 0.2, 0.2), strict=True):
        assert abs(size - fraction * DIGITS_COUNT) <= 2


def test_stratified_split_is_a_disjoint_cover_with_matching_labels(
    digits_splits: ImageSplits,
) -> None:
    labels = load_digits().target
    train, val, test = stratified_split(labels, seed=0)
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(DIGITS_COUNT))
    # load_dataset uses exactly these indices.
    assert digits_splits.train_labels.tolist() == labels[train].tolist()
    assert digits_splits.val_labels.tolist() == labels[val].tolist()
    assert digits_splits.test_labels.tolist() == labels[test].tolist()


def test_class_proportions_agree_across_splits(digits_splits: ImageSplits) -> None:
    proportions = [
        np.bincount(labels.numpy(), minlength=10) / len(labels)
        for labels in (
            digits_splits.train_labels,
            digits_splits.val_labels,
            digits_splits.test_labels,
        )
    ]
    overall = np.bincount(load_digits().target, minlength=10) / DIGITS_COUNT
    for proportion in proportions:
        assert np.abs(proportion - overall).max() < 0.02


def test_split_hash_depends_on_the_seed_only(digits_splits: ImageSplits) -> None:
    assert load_dataset("digits", 32, seed=0).split_hash() == digits_splits.split_hash()
    assert load_dataset("digits", 32, seed=1).split_hash() != digits_splits.split_hash()


def test_unknown_dataset_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="digits"):
        load_dataset("imagenet_typo", 32, seed=0)


def test_config_defaults_are_valid() -> None:
    assert TrialConfig.from_dict({}) == TrialConfig()


def test_config_rejects_an_unknown_key_by_name() -> None:
    with pytest.raises(ConfigError, match="bach_size"):
        TrialConfig.from_dict({"bach_size": 64})
    assert issubclass(ConfigError, ValueError)


def test_config_bad_method_lists_the_valid_methods() -> None:
    with pytest.raises(ConfigError) as raised:
        TrialConfig.from_dict({"method": "byol_typo"})
    message = str(raised.value)
    assert "byol_typo" in message and "method" in message
    for name in METHODS:
        assert name in message


def test_config_coerces_command_line_strings() -> None:
    config = TrialConfig.from_dict(
        {
            "batch_size": "64",
            "learning_rate": "none",
            "momentum": "0.5",
            "weight_decay": "1e-4",
            "epochs": 3.0,
        }
    )
    assert config.batch_size == 64 and isinstance(config.batch_size, int)
    assert config.learning_rate is None
    assert config.momentum == 0.5
    assert config.weight_decay == pytest.approx(1e-4)
    assert config.epochs == 3 and isinstance(config.epochs, int)
    assert TrialConfig.from_dict({"learning_rate": "0.1"}).learning_rate == pytest.approx(0.1)
    assert TrialConfig.from_dict({"learning_rate": "None"}).learning_rate is None


@pytest.mark.parametrize(
    ("key", "value"), [("batch_size", "sixty-four"), ("epochs", 2.5), ("momentum", "fast")]
)
def test_config_rejects_uncoercible_values(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        TrialConfig.from_dict({key: value})


def test_config_rejects_zero_epochs() -> None:
    with pytest.raises(ConfigError, match="epochs"):
        TrialConfig.from_dict({"epochs": 0})


def test_config_rejects_warmup_not_shorter_than_training() -> None:
    with pytest.raises(ConfigError, match="warmup_epochs"):
        TrialConfig.from_dict({"epochs": 3, "warmup_epochs": 3})


def test_config_rejects_an_unknown_method_param() -> None:
    with pytest.raises(ConfigError, match="momentum_typo"):
        TrialConfig.from_dict({"method": "simclr", "method_params": {"momentum_typo": 0.99}})
    assert TrialConfig.from_dict(
        {"method": "simclr", "method_params": {"temperature": 0.2}}
    ).method_params == {"temperature": 0.2}


def test_coerce_method_param_converts_to_the_default_type() -> None:
    assert coerce_method_param("simclr", "projection_hidden_dim", "64") == 64
    assert isinstance(coerce_method_param("simclr", "projection_hidden_dim", "64"), int)
    assert coerce_method_param("simclr", "temperature", "0.2") == pytest.approx(0.2)
    assert isinstance(coerce_method_param("simclr", "temperature", 1), float)
    with pytest.raises(ConfigError, match="projection_hidden_dim"):
        coerce_method_param("simclr", "projection_hidden_dim", "sixty-four")
    with pytest.raises(ConfigError, match="momentum_typo"):
        coerce_method_param("simclr", "momentum_typo", 0.99)


def test_coerce_method_param_rejects_a_non_integer_float_for_an_int_param() -> None:
    with pytest.raises(ConfigError, match="projection_hidden_dim"):
        coerce_method_param("simclr", "projection_hidden_dim", 64.5)


def test_booleans_are_not_numbers_and_method_params_are_typed() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        TrialConfig.from_dict({"batch_size": True})
    config = TrialConfig.from_dict({"method": "simclr", "method_params": {"temperature": "0.2"}})
    assert config.method_params == {"temperature": 0.2}


@pytest.mark.parametrize("backbone_name", sorted(BACKBONES))
def test_every_backbone_maps_images_to_its_feature_dimension(backbone_name: str) -> None:
    torch.manual_seed(0)
    backbone, feature_dim = build_backbone(backbone_name)
    assert isinstance(feature_dim, int) and feature_dim > 0
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, feature_dim)
    assert torch.isfinite(features).all()


def test_unknown_backbone_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as raised:
        build_backbone("vit_typo")
    for name in BACKBONES:
        assert name in str(raised.value)


PAPER_OPTIMIZERS = {"none": "sgd", "simclr": "lars", "simsiam": "sgd", "byol": "lars", "barlowtwins": "lars",
                    "vicreg": "lars", "mocov2": "sgd", "swav": "lars"}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_trains_with_its_papers_optimizer_unless_the_config_says(method: str) -> None:
    assert method in PAPER_OPTIMIZERS, f"add {method}'s paper optimizer to PAPER_OPTIMIZERS"
    assert TrialConfig.from_dict({"method": method}).resolved_optimizer == PAPER_OPTIMIZERS[method]
    assert TrialConfig.from_dict({"method": method, "optimizer": "sgd"}).resolved_optimizer == "sgd"
    from_command_line = TrialConfig.from_dict({"method": method, "optimizer": "None"})
    assert from_command_line.resolved_optimizer == PAPER_OPTIMIZERS[method]


def test_config_rejects_an_unknown_optimizer_listing_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="bad value 'adam' for optimizer; valid values: sgd, lars"):
        TrialConfig.from_dict({"optimizer": "adam"})
