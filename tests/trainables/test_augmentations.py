"""Batched augmentations: shapes, exact identity and flip, crop geometry, grayscale, seeding."""

import pytest
import torch

from trainables.augmentations import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentationRecipe,
    ColorParameters,
    augment,
    color_jitter_and_grayscale,
    draw_color_parameters,
    normalize,
    random_resized_crop_and_flip,
)

IDENTITY = AugmentationRecipe(
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    horizontal_flip_probability=0.0,
    color_jitter_probability=0.0,
    grayscale_probability=0.0,
)
# At 96 px the float32 sampling grid ((2j + 1) / W - 1) is not exactly on the pixel centres, so
# bilinear sampling blends in ~1e-5 of a neighbour: measured 3.2e-5 after normalization (~0.002
# of one uint8 grey level). At 32 px it is exact. 1e-4 is far below any real crop or flip error
# (>1e-2).
IDENTITY_TOLERANCE = 1e-4


def random_images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, size, size), generator=generator, dtype=torch.uint8)


def reference_normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def unnormalize(views: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return views * std + mean


@pytest.mark.parametrize("size", [32, 96])
def test_augment_keeps_shape_and_gives_float32(size: int) -> None:
    images = random_images(6, size)
    views = augment(images, AugmentationRecipe(), torch.Generator().manual_seed(0))
    assert views.shape == (6, 3, size, size)
    assert views.dtype == torch.float32
    # Crops, jitter (clamped) and grayscale (convex weights) stay within [0, 1] before normalizing.
    pixels = unnormalize(views)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_normalize_matches_imagenet_statistics() -> None:
    images = random_images(3, 8)
    torch.testing.assert_close(normalize(images), reference_normalize(images))
    torch.testing.assert_close(normalize(images.float() / 255), reference_normalize(images))


@pytest.mark.parametrize("size", [32, 96])
def test_identity_recipe_returns_the_normalized_image(size: int) -> None:
    images = random_images(4, size)
    views = augment(images, IDENTITY, torch.Generator().manual_seed(0))
    torch.testing.assert_close(views, reference_normalize(images), atol=IDENTITY_TOLERANCE, rtol=0)


@pytest.mark.parametrize("size", [32, 96])
def test_certain_flip_with_identity_crop_mirrors_the_image(size: int) -> None:
    images = random_images(4, size)
    recipe = AugmentationRecipe(
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        horizontal_flip_probability=1.0,
        color_jitter_probability=0.0,
        grayscale_probability=0.0,
    )
    views = augment(images, recipe, torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        views, reference_normalize(images.flip(dims=[3])), atol=IDENTITY_TOLERANCE, rtol=0
    )


def ramp_images(count: int, size: int) -> torch.Tensor:
    """Channel 0 rises 0..1 left to right, channel 1 top to bottom: pixel steps measure the zoom."""
    ramp = torch.arange(size, dtype=torch.float32) / (size - 1)
    image = torch.stack(
        [
            ramp.view(1, -1).expand(size, size),
            ramp.view(-1, 1).expand(size, size),
            torch.zeros(size, size),
        ]
    )
    return image.unsqueeze(0).repeat(count, 1, 1, 1)


@pytest.mark.parametrize(
    ("area", "ratio", "width_fraction", "height_fraction"),
    [(0.25, 1.0, 0.5, 0.5), (0.25, 4.0, 1.0, 0.25), (0.5, 0.5, 0.5, 1.0)],
)
def test_crop_covers_the_requested_area_and_aspect_ratio(
    area: float, ratio: float, width_fraction: float, height_fraction: float
) -> None:
    """Area a and ratio r = w/h (torchvision's convention) give sides sqrt(a r) and sqrt(a / r)."""
    size = 32
    recipe = AugmentationRecipe(
        crop_scale=(area, area), crop_ratio=(ratio, ratio), horizontal_flip_probability=0.0
    )
    crops = random_resized_crop_and_flip(
        ramp_images(5, size), recipe, torch.Generator().manual_seed(0)
    )
    input_step = 1 / (size - 1)
    horizontal_steps = crops[:, 0, :, 1:] - crops[:, 0, :, :-1]
    vertical_steps = crops[:, 1, 1:, :] - crops[:, 1, :-1, :]
    torch.testing.assert_close(
        horizontal_steps, torch.full_like(horizontal_steps, input_step * width_fraction)
    )
    torch.testing.assert_close(
        vertical_steps, torch.full_like(vertical_steps, input_step * height_fraction)
    )
    # The crop lies inside the image: the ramp values it shows stay within [0, 1].
    assert crops.min() >= -1e-6 and crops.max() <= 1 + 1e-6


@pytest.mark.parametrize("jitter_probability", [0.0, 1.0])
def test_certain_grayscale_gives_equal_luma_channels(jitter_probability: float) -> None:
    images = random_images(5, 16).float() / 255
    recipe = AugmentationRecipe(
        color_jitter_probability=jitter_probability, grayscale_probability=1.0
    )
    gray = color_jitter_and_grayscale(images, recipe, torch.Generator().manual_seed(0))
    assert gray.shape == images.shape
    torch.testing.assert_close(gray[:, 0], gray[:, 1], atol=0, rtol=0)
    torch.testing.assert_close(gray[:, 0], gray[:, 2], atol=0, rtol=0)
    if jitter_probability == 0.0:
        luma = 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]  # ITU-R 601
        torch.testing.assert_close(gray[:, 0], luma, atol=1e-6, rtol=0)


def test_no_jitter_and_no_grayscale_is_the_identity() -> None:
    images = random_images(5, 16).float() / 255
    recipe = AugmentationRecipe(color_jitter_probability=0.0, grayscale_probability=0.0)
    assert torch.equal(
        color_jitter_and_grayscale(images, recipe, torch.Generator().manual_seed(0)), images
    )


def test_certain_jitter_changes_colours_within_range() -> None:
    images = random_images(8, 16).float() / 255
    recipe = AugmentationRecipe(color_jitter_probability=1.0, grayscale_probability=0.0)
    jittered = color_jitter_and_grayscale(images, recipe, torch.Generator().manual_seed(0))
    assert (jittered - images).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every image changed
    assert jittered.min() >= 0 and jittered.max() <= 1


def test_same_seed_same_views_and_different_seed_different_views() -> None:
    images = random_images(8, 32)
    recipe = AugmentationRecipe()
    first = augment(images, recipe, torch.Generator().manual_seed(123))
    again = augment(images, recipe, torch.Generator().manual_seed(123))
    other = augment(images, recipe, torch.Generator().manual_seed(124))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    # One generator drawn twice gives two different views (what the loop does for its two views).
    generator = torch.Generator().manual_seed(5)
    assert not torch.allclose(
        augment(images, recipe, generator), augment(images, recipe, generator)
    )


def unfused_color_reference(images: torch.Tensor, parameters: ColorParameters) -> torch.Tensor:
    """Brightness, contrast (around the mean luma), saturation (around the pixel luma), grayscale,
    each as its own step with no intermediate clamps, and one clamp to [0, 1] at the end."""

    def luma(x: torch.Tensor) -> torch.Tensor:
        return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]

    def per_image(values: torch.Tensor) -> torch.Tensor:
        return values.view(-1, 1, 1, 1)

    jittered = images * per_image(parameters.brightness)
    mean_gray = luma(jittered).mean(dim=(2, 3), keepdim=True)
    jittered = (jittered - mean_gray) * per_image(parameters.contrast) + mean_gray
    gray = luma(jittered)
    jittered = (jittered - gray) * per_image(parameters.saturation) + gray
    out = torch.where(per_image(parameters.apply_jitter), jittered, images)
    out = torch.where(per_image(parameters.apply_gray), luma(out).expand_as(out), out)
    return out.clamp(0, 1)


@pytest.mark.parametrize("probability", [1.0, 0.5])
def test_fused_colour_transform_matches_the_unfused_reference(probability: float) -> None:
    images = random_images(16, 24, seed=3).float() / 255
    recipe = AugmentationRecipe(color_jitter_probability=probability, grayscale_probability=probability)
    fused = color_jitter_and_grayscale(images, recipe, torch.Generator().manual_seed(7))
    # The same seed reproduces the factors the fused path drew (it draws only colour parameters).
    parameters = draw_color_parameters(len(images), recipe, torch.Generator().manual_seed(7))
    if probability == 0.5:  # the mix is exercised: some images with and some without each step
        for flags in (parameters.apply_jitter, parameters.apply_gray):
            assert flags.any() and not flags.all()
    torch.testing.assert_close(fused, unfused_color_reference(images, parameters), atol=1e-5, rtol=0)


def test_augment_is_crop_then_fused_colour_then_normalize() -> None:
    """augment folds 1/255 and normalization into the colour affine; check against the steps."""
    images = random_images(8, 32, seed=4)
    recipe = AugmentationRecipe(color_jitter_probability=0.5, grayscale_probability=0.5)
    views = augment(images, recipe, torch.Generator().manual_seed(9))
    generator = torch.Generator().manual_seed(9)
    crops = random_resized_crop_and_flip(images.float() / 255, recipe, generator)
    parameters = draw_color_parameters(len(images), recipe, generator)
    expected = normalize(unfused_color_reference(crops, parameters))
    torch.testing.assert_close(views, expected, atol=1e-4, rtol=0)
