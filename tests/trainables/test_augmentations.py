"""Batched augmentations: shapes, exact identity and flips, crop geometry, colour against unfused
references, hue rotation properties, blur against torchvision, solarization, seeding."""

import colorsys
import dataclasses
import math

import pytest
import torch
from torchvision.transforms import functional as TF

from trainables.augmentations import (
    BYOL_VIEW_2,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LUMA_WEIGHTS,
    AugmentationRecipe,
    ColorParameters,
    _blur_selected_,
    augment,
    blur_kernel_size,
    color_jitter_and_grayscale,
    draw_blur_parameters,
    draw_color_parameters,
    hue_rotation,
    normalize,
    random_gaussian_blur,
    random_resized_crop_and_flip,
)

IDENTITY = AugmentationRecipe(
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    horizontal_flip_probability=0.0,
    color_jitter_probability=0.0,
    grayscale_probability=0.0,
    blur_probability=0.0,
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
@pytest.mark.parametrize("recipe", [AugmentationRecipe(), BYOL_VIEW_2], ids=["moco_v2", "byol_view_2"])
def test_augment_keeps_shape_and_gives_float32(size: int, recipe: AugmentationRecipe) -> None:
    images = random_images(6, size)
    views = augment(images, recipe, torch.Generator().manual_seed(0))
    assert views.shape == (6, 3, size, size)
    assert views.dtype == torch.float32
    # Crops, blur, jitter (clamped), grayscale and solarization stay within [0, 1] before normalizing.
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
@pytest.mark.parametrize(
    ("horizontal", "vertical", "flipped_dims"),
    [(1.0, 0.0, [3]), (0.0, 1.0, [2]), (1.0, 1.0, [2, 3])],
    ids=["left_right", "up_down", "both"],
)
def test_certain_flip_with_identity_crop_mirrors_the_image(
    size: int, horizontal: float, vertical: float, flipped_dims: list[int]
) -> None:
    images = random_images(4, size)
    recipe = dataclasses.replace(
        IDENTITY, horizontal_flip_probability=horizontal, vertical_flip_probability=vertical
    )
    views = augment(images, recipe, torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        views, reference_normalize(images.flip(dims=flipped_dims)), atol=IDENTITY_TOLERANCE, rtol=0
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


def yiq_hue_reference(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Pixel by pixel: RGB -> YIQ (NTSC), turn (I, Q) clockwise by 2 pi turns, back to RGB."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    y, i, q = torch.einsum("kc,nchw->knhw", to_yiq, images)
    angle = (2 * math.pi * turns).view(-1, 1, 1)
    i, q = i * angle.cos() + q * angle.sin(), -i * angle.sin() + q * angle.cos()
    return torch.einsum("kc,cnhw->nkhw", torch.linalg.inv(to_yiq), torch.stack([y, i, q]))


def unfused_color_reference(
    images: torch.Tensor, parameters: ColorParameters, clamp: bool = True
) -> torch.Tensor:
    """Brightness, contrast (around the mean luma), saturation (around the pixel luma), hue (YIQ
    rotation), grayscale, each as its own step with no intermediate clamps, and one clamp to
    [0, 1] at the end (unless clamp=False)."""

    def luma(x: torch.Tensor) -> torch.Tensor:
        return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]

    def per_image(values: torch.Tensor) -> torch.Tensor:
        return values.view(-1, 1, 1, 1)

    jittered = images * per_image(parameters.brightness)
    mean_gray = luma(jittered).mean(dim=(2, 3), keepdim=True)
    jittered = (jittered - mean_gray) * per_image(parameters.contrast) + mean_gray
    gray = luma(jittered)
    jittered = (jittered - gray) * per_image(parameters.saturation) + gray
    jittered = yiq_hue_reference(jittered, parameters.hue)
    out = torch.where(per_image(parameters.apply_jitter), jittered, images)
    out = torch.where(per_image(parameters.apply_gray), luma(out).expand_as(out), out)
    return out.clamp(0, 1) if clamp else out


@pytest.mark.parametrize("probability", [1.0, 0.5])
def test_fused_colour_transform_matches_the_unfused_reference(probability: float) -> None:
    images = random_images(16, 24, seed=3).float() / 255
    recipe = AugmentationRecipe(color_jitter_probability=probability, grayscale_probability=probability,
                                hue=0.3)
    fused = color_jitter_and_grayscale(images, recipe, torch.Generator().manual_seed(7))
    # The same seed reproduces the factors the fused path drew (it draws only colour parameters).
    parameters = draw_color_parameters(len(images), recipe, torch.Generator().manual_seed(7))
    if probability == 0.5:  # the mix is exercised: some images with and some without each step
        for flags in (parameters.apply_jitter, parameters.apply_gray):
            assert flags.any() and not flags.all()
    torch.testing.assert_close(fused, unfused_color_reference(images, parameters), atol=1e-5, rtol=0)


def torchvision_blur(images: torch.Tensor, apply_blur: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """torchvision's gaussian_blur image by image on the selected ones; sigma in 224 px pixels."""
    size = images.shape[-1]
    kernel = blur_kernel_size(size)
    return torch.stack([
        TF.gaussian_blur(image, [kernel, kernel], [float(s) * size / 224] * 2) if blur else image
        for image, blur, s in zip(images, apply_blur, sigma, strict=True)
    ])


@pytest.mark.parametrize(("blur_probability", "solarize_probability"), [(0.0, 0.0), (1.0, 1.0), (0.5, 0.5)])
def test_augment_matches_the_unfused_steps(blur_probability: float, solarize_probability: float) -> None:
    """augment (crop, blur, fused colour + normalization, solarize in normalized units) against
    torchvision's order done naively: crop, colour, blur, clamp, solarize (x >= 0.5 -> 1 - x),
    normalize. Equal up to rounding because the blur commutes with the per-pixel colour map."""
    size = 64
    images = random_images(8, size, seed=4)
    recipe = AugmentationRecipe(color_jitter_probability=0.5, grayscale_probability=0.5,
                                blur_probability=blur_probability, blur_sigma=(2.0, 6.0),
                                solarize_probability=solarize_probability)
    views = augment(images, recipe, torch.Generator().manual_seed(9))
    generator = torch.Generator().manual_seed(9)  # the same draws, in augment's order
    crops = random_resized_crop_and_flip(images.float() / 255, recipe, generator)
    apply_blur, sigma = draw_blur_parameters(len(images), recipe, generator)
    parameters = draw_color_parameters(len(images), recipe, generator)
    if blur_probability == 0.5:
        for flags in (apply_blur, parameters.apply_solarize):
            assert flags.any() and not flags.all()
    colour = torchvision_blur(unfused_color_reference(crops, parameters, clamp=False), apply_blur, sigma)
    colour = colour.clamp(0, 1)
    solarize = parameters.apply_solarize.view(-1, 1, 1, 1) & (colour >= 0.5)
    expected = normalize(torch.where(solarize, 1 - colour, colour))
    torch.testing.assert_close(views, expected, atol=1e-4, rtol=0)


def test_solarization_changes_only_the_bright_pixels_of_certain_views() -> None:
    """Guards the previous test against solarization that never happens."""
    images = random_images(4, 32, seed=5)
    plain = dataclasses.replace(IDENTITY, solarize_probability=0.0)
    solarized = augment(images, dataclasses.replace(plain, solarize_probability=1.0))
    expected = images.float() / 255
    expected = torch.where(expected >= 0.5, 1 - expected, expected)
    tolerance = {"atol": IDENTITY_TOLERANCE, "rtol": 0}
    torch.testing.assert_close(solarized, reference_normalize(expected * 255), **tolerance)
    torch.testing.assert_close(augment(images, plain), reference_normalize(images), **tolerance)


@pytest.mark.parametrize(("size", "kernel"), [(8, 3), (32, 3), (64, 7), (96, 9), (224, 23)])
def test_blur_kernel_is_a_tenth_of_the_image_odd_and_at_least_3(size: int, kernel: int) -> None:
    assert blur_kernel_size(size) == kernel


@pytest.mark.parametrize(("size", "sigma"), [(64, 3.0), (224, 1.5)])
def test_certain_blur_with_fixed_sigma_matches_torchvision(size: int, sigma: float) -> None:
    """Same kernel side and sigma (scaled to the image: sigma * size / 224), reflect padding."""
    images = random_images(3, size).float() / 255
    recipe = AugmentationRecipe(blur_probability=1.0, blur_sigma=(sigma, sigma))
    blurred = random_gaussian_blur(images, recipe, torch.Generator().manual_seed(0))
    kernel, scaled_sigma = blur_kernel_size(size), sigma * size / 224
    for image, out in zip(images, blurred, strict=True):
        expected = TF.gaussian_blur(image, [kernel, kernel], [scaled_sigma, scaled_sigma])
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert (blurred - images).abs().amax(dim=(1, 2, 3)).min() > 0.1  # every noise image got smoother


def test_blur_touches_only_the_selected_images_and_keeps_constants() -> None:
    images = random_images(16, 32).float() / 255
    recipe = AugmentationRecipe(blur_probability=0.5)
    blurred = random_gaussian_blur(images, recipe, torch.Generator().manual_seed(1))
    apply_blur, _ = draw_blur_parameters(len(images), recipe, torch.Generator().manual_seed(1))
    assert apply_blur.any() and not apply_blur.all()
    assert torch.equal(blurred[~apply_blur], images[~apply_blur])
    assert (blurred[apply_blur] - images[apply_blur]).abs().amax(dim=(1, 2, 3)).min() > 0
    never = random_gaussian_blur(images, AugmentationRecipe(blur_probability=0.0), torch.Generator())
    assert torch.equal(never, images)
    constant = torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1).expand(4, 3, 64, 64)
    always = AugmentationRecipe(blur_probability=1.0, blur_sigma=(2.0, 8.0))
    torch.testing.assert_close(random_gaussian_blur(constant, always), constant, atol=1e-6, rtol=0)


def test_masked_blur_of_the_gpu_path_equals_blurring_the_subset() -> None:
    """The GPU path blurs every image and keeps the drawn ones by a mask (no sync point); it must
    give exactly what blurring only the drawn subset gives."""
    images = random_images(12, 32).float()
    recipe = AugmentationRecipe(blur_probability=0.5)
    apply_blur, sigma = draw_blur_parameters(len(images), recipe, torch.Generator().manual_seed(3))
    assert apply_blur.any() and not apply_blur.all()
    subset, masked = images.clone(), images.clone()
    _blur_selected_(subset, apply_blur, sigma, masked=False)
    _blur_selected_(masked, apply_blur, sigma, masked=True)
    torch.testing.assert_close(masked, subset, atol=1e-4, rtol=0)
    assert torch.equal(masked[~apply_blur], images[~apply_blur])


TURNS = torch.tensor([-0.5, -0.23, -0.1, 0.0, 0.05, 0.1, 0.37, 0.5])


def test_hue_rotation_by_zero_is_the_identity() -> None:
    torch.testing.assert_close(hue_rotation(torch.zeros(1))[0], torch.eye(3), atol=1e-6, rtol=0)


def test_hue_rotation_keeps_gray_pixels_and_luma() -> None:
    matrices = hue_rotation(TURNS)
    gray = torch.ones(3)
    torch.testing.assert_close(matrices @ gray, gray.expand(len(TURNS), 3), atol=1e-6, rtol=0)
    luma = torch.tensor(LUMA_WEIGHTS)
    torch.testing.assert_close(luma @ matrices, luma.expand(len(TURNS), 3), atol=1e-6, rtol=0)
    # ... and it is not the identity on colours: a half turn moves pure red far.
    assert (hue_rotation(torch.tensor([0.5]))[0, :, 0] - torch.tensor([1.0, 0, 0])).abs().max() > 0.5


def test_hue_rotations_compose_by_adding_turns() -> None:
    first, second = TURNS, TURNS.flip(0) * 0.7
    torch.testing.assert_close(hue_rotation(first) @ hue_rotation(second), hue_rotation(first + second),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(hue_rotation(torch.ones(1)), hue_rotation(torch.zeros(1)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("hue", [0.02, 0.1, -0.1, 0.2])
def test_hue_rotation_turns_hsv_hue_like_torchvision_roughly(hue: float) -> None:
    """What the YIQ rotation shares with torchvision's HSV hue shift: the direction and roughly the
    angle, not the RGB values. On 512 colours with HSV saturation 0.05-0.5 and value 0.3-0.8, the
    HSV hue of our output is within 0.65 x the shift of torchvision's, 0.3 x on average (measured
    at these shifts: 0.62 worst, 0.29 on average; the YIQ wheel is not evenly spaced in HSV hue,
    e.g. 15 degrees worst at 36 degrees). A rotation the wrong way is off by 1.6-2.1 x the shift."""
    generator = torch.Generator().manual_seed(0)
    low, span = torch.tensor([0.0, 0.05, 0.3]), torch.tensor([1.0, 0.45, 0.5])
    hsv = torch.rand(512, 3, generator=generator) * span + low
    rgb = torch.tensor([colorsys.hsv_to_rgb(*colour) for colour in hsv.tolist()])  # (512, 3)
    ours = (rgb @ hue_rotation(torch.tensor([hue]))[0].T).clamp(0, 1)
    theirs = TF.adjust_hue(rgb.T.reshape(3, 512, 1), hue).reshape(3, 512).T

    def hsv_hue(colours: torch.Tensor) -> torch.Tensor:
        return torch.tensor([colorsys.rgb_to_hsv(*colour)[0] for colour in colours.tolist()])

    difference = (hsv_hue(ours) - hsv_hue(theirs) + 0.5) % 1 - 0.5  # in turns, wrapped to [-0.5, 0.5)
    assert difference.abs().max() <= 0.65 * abs(hue)
    assert difference.abs().mean() <= 0.3 * abs(hue)
    torch.testing.assert_close(hsv_hue(theirs), (hsv[:, 0] + hue) % 1, atol=1e-3, rtol=0)


def test_recipe_rejects_a_probability_outside_0_1_naming_the_field() -> None:
    with pytest.raises(ValueError, match="solarize_probability"):
        AugmentationRecipe(solarize_probability=1.5)
    with pytest.raises(ValueError, match="hue"):
        AugmentationRecipe(hue=0.7)
