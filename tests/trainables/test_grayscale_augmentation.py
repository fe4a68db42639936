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
    augment,
    describe_recipes,
    without_color,
)

PAPER_RECIPES = {"moco_v2": MOCO_V2_RECIPE, "simclr": SIMCLR_RECIPE, "byol_1": BYOL_VIEW_1,
                 "byol_2": BYOL_VIEW_2, "swav": SWAV_RECIPE, "swav_small": SWAV_SMALL_CROP_RECIPE}
COLOR_FIELDS = {"saturation", "hue", "grayscale_probability"}


def gray_images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """uint8 (N, 3, S, S) with the one channel replicated, as the data loaders store gray data."""
    generator = torch.Generator().manual_seed(seed)
    gray = torch.randint(0, 256, (count, 1, size, size), generator=generator, dtype=torch.uint8)
    return gray.expand(-1, 3, -1, -1).contiguous()


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
