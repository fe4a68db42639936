"""Grayscale-aware augmentation: single-channel data gets its recipes without the colour operations,
which change nothing on gray pixels, and keeps brightness and contrast."""

import dataclasses
import json

import pytest
import torch

from trainables.augmentations import (
    BYOL_VIEW_1,
    BYOL_VIEW_2,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MOCO_V2_RECIPE,
    SIMCLR_RECIPE,
    SWAV_RECIPE,
    SWAV_SMALL_CROP_RECIPE,
    AugmentationRecipe,
    _blur_selected_,
    augment,
    color_jitter_and_grayscale,
    describe_recipes,
    without_color,
)
from trainables.backbones import build_backbone
from trainables.evaluation.probes import extract_features

PAPER_RECIPES = {"moco_v2": MOCO_V2_RECIPE, "simclr": SIMCLR_RECIPE, "byol_1": BYOL_VIEW_1,
                 "byol_2": BYOL_VIEW_2, "swav": SWAV_RECIPE, "swav_small": SWAV_SMALL_CROP_RECIPE}
COLOR_FIELDS = {"saturation", "hue", "grayscale_probability"}


def gray_images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """uint8 (N, 3, S, S) with one channel replicated: how gray data was stored before it was
    stored as one channel (`one_channel_images`), the reference the one-channel path must match."""
    return one_channel_images(count, size, seed).expand(-1, 3, -1, -1).contiguous()


def one_channel_images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """uint8 (N, 1, S, S), as the data loaders store gray data."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 1, size, size), generator=generator, dtype=torch.uint8)


@pytest.mark.parametrize("name", PAPER_RECIPES)
def test_gray_recipes_drop_hue_saturation_and_grayscale_and_keep_the_rest(name: str) -> None:
    recipe = PAPER_RECIPES[name]
    gray = without_color(recipe)
    assert (gray.saturation, gray.hue, gray.grayscale_probability) == (0.0, 0.0, 0.0)
    for field in dataclasses.fields(AugmentationRecipe):
        if field.name not in COLOR_FIELDS:  # brightness, contrast, crops, blur, solarization
            assert getattr(gray, field.name) == getattr(recipe, field.name), field.name
    assert gray.brightness > 0 and gray.contrast > 0


@pytest.mark.parametrize("name", PAPER_RECIPES)
def test_dropping_the_colour_operations_changes_no_gray_view(name: str) -> None:
    """On gray pixels saturation, hue and grayscale are the identity, so with the same random draws
    the views are the same: the gray recipe is an honest record of what was done, not a change."""
    recipe, images = PAPER_RECIPES[name], gray_images(16, 32)
    full = augment(images, recipe, torch.Generator().manual_seed(1))
    gray = augment(images, without_color(recipe), torch.Generator().manual_seed(1))
    assert torch.allclose(full, gray, atol=1e-4)
    # And the views stay gray: the three channels agree once the normalization is undone.
    pixels = gray * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    assert torch.allclose(pixels[:, 0], pixels[:, 1], atol=1e-5)
    assert torch.allclose(pixels[:, 1], pixels[:, 2], atol=1e-5)


def test_brightness_and_contrast_still_vary_gray_views() -> None:
    images = gray_images(64, 16)
    recipe = dataclasses.replace(without_color(MOCO_V2_RECIPE), crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0),
                                 horizontal_flip_probability=0.0, blur_probability=0.0,
                                 color_jitter_probability=1.0)
    untouched = augment(images, dataclasses.replace(recipe, color_jitter_probability=0.0))
    jittered = augment(images, recipe, torch.Generator().manual_seed(0))
    change = (jittered - untouched).abs().amax(dim=(1, 2, 3))
    assert (change > 0.05).float().mean() > 0.9


def test_the_described_recipes_round_trip_through_json() -> None:
    views = [(32, without_color(BYOL_VIEW_1)), (32, without_color(BYOL_VIEW_2))]
    described = json.loads(describe_recipes(views))
    assert [view["size"] for view in described] == [32, 32]
    for view, (_, recipe) in zip(described, views, strict=True):
        fields = {key: tuple(value) if isinstance(value, list) else value
                  for key, value in view.items() if key != "size"}
        assert AugmentationRecipe(**fields) == recipe


@pytest.mark.parametrize("gray_recipe", [False, True], ids=["paper_recipe", "gray_recipe"])
@pytest.mark.parametrize("name", PAPER_RECIPES)
def test_a_one_channel_batch_gives_the_views_of_its_three_channel_copy(name: str, gray_recipe: bool) -> None:
    """Crop, flips, blur, jitter, solarization and normalization on the one-channel batch, with the
    same random draws, give the views of the batch stored as three equal channels: three
    normalized channels, equal within float rounding (the colour map is summed in another order)."""
    recipe = without_color(PAPER_RECIPES[name]) if gray_recipe else PAPER_RECIPES[name]
    recipe = dataclasses.replace(recipe, vertical_flip_probability=0.5)
    one = augment(one_channel_images(16, 32), recipe, torch.Generator().manual_seed(3), output_size=24)
    three = augment(gray_images(16, 32), recipe, torch.Generator().manual_seed(3), output_size=24)
    assert one.shape == three.shape == (16, 3, 24, 24)
    assert torch.allclose(one, three, atol=1e-5)
    assert (one - three).abs().max() < 1e-5 < three.std()


def test_masked_blur_on_one_channel_is_channel_zero_of_three() -> None:
    sigma, chosen = torch.linspace(7.0, 21.0, 8), torch.tensor([True, False] * 4)  # 1-3 px at 32 px
    one, three = one_channel_images(8, 32).float(), gray_images(8, 32).float()
    for masked in (False, True):
        blurred_one, blurred_three = one.clone(), three.clone()
        _blur_selected_(blurred_one, chosen, sigma, masked=masked)
        _blur_selected_(blurred_three, chosen, sigma, masked=masked)
        assert blurred_one.shape == (8, 1, 32, 32)
        assert torch.allclose(blurred_one[:, 0], blurred_three[:, 0], atol=1e-4)
    assert not torch.allclose(blurred_one[0], one[0], atol=1.0)  # it did blur


@pytest.mark.parametrize("name", ["simclr", "moco_v2"])
def test_colour_jitter_and_grayscale_keep_one_channel_equal_to_channel_zero(name: str) -> None:
    recipe = dataclasses.replace(PAPER_RECIPES[name], color_jitter_probability=1.0, grayscale_probability=0.5)
    one = color_jitter_and_grayscale(one_channel_images(32, 16).float() / 255, recipe,
                                     torch.Generator().manual_seed(5))
    three = color_jitter_and_grayscale(gray_images(32, 16).float() / 255, recipe,
                                       torch.Generator().manual_seed(5))
    assert one.shape == (32, 1, 16, 16)
    assert torch.allclose(one[:, 0], three[:, 0], atol=1e-5)
    assert (three[:, 0] - one_channel_images(32, 16)[:, 0].float() / 255).abs().max() > 0.05  # jittered


@pytest.mark.parametrize("backbone_name", ["resnet18", "resnetv2_50x1_bit"])
def test_a_pretrained_style_backbone_sees_the_same_images_from_one_channel(backbone_name: str) -> None:
    """An ImageNet-style backbone (3-channel first convolution, as pretrained weights have it)
    gives the same features and training-view outputs for gray data stored as one channel as for
    the old three replicated channels: the expansion happens at normalization, nothing else moves."""
    torch.manual_seed(0)
    backbone, _ = build_backbone(backbone_name)
    one, three = one_channel_images(6, 32, seed=1), gray_images(6, 32, seed=1)
    features_one, features_three = extract_features(backbone, one), extract_features(backbone, three)
    assert torch.allclose(features_one, features_three, atol=1e-4, rtol=1e-4)
    assert features_three.std() > 1e-3
    backbone.train()  # a training step: augmented views, BatchNorm on batch statistics
    with torch.no_grad():
        view_one = backbone(augment(one, SIMCLR_RECIPE, torch.Generator().manual_seed(2)))
        view_three = backbone(augment(three, SIMCLR_RECIPE, torch.Generator().manual_seed(2)))
    assert torch.allclose(view_one, view_three, atol=1e-4, rtol=1e-4)
