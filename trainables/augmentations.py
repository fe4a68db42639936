"""Batched SSL augmentations: whole uint8 batches in, normalized float views out, on any device.

Every random choice is drawn per image with torch ops, so one call augments a batch without a
per-sample Python loop (the GPU never waits on PIL).

Colour jitter (brightness, contrast, saturation), grayscale and ImageNet normalization are all
per-image affine maps of each pixel's RGB vector, so they are composed per image into one 3x3
matrix and a 3-vector offset and applied with a single batched matrix product over the pixels,
followed by one clamp. The only departure from torchvision's ColorJitter + RandomGrayscale is
that there is no clamp to [0, 1] between the jitter steps (torchvision clamps after each one):
the colour transform is clamped once, after grayscale and before normalization.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601, what torchvision's rgb_to_grayscale uses


@dataclass(frozen=True)
class AugmentationRecipe:
    """SimCLR's recipe (Chen et al., 2020, appendix A) without hue jitter and blur."""

    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    horizontal_flip_probability: float = 0.5
    color_jitter_probability: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    grayscale_probability: float = 0.2


@dataclass(frozen=True)
class ColorParameters:
    """Per-image colour draws, each of shape (N,): jitter factors and whether jitter/grayscale apply."""

    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    apply_jitter: torch.Tensor
    apply_gray: torch.Tensor


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float images -> ImageNet-normalized float images."""
    if images.dtype == torch.uint8:
        images = images.float() / 255
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def _uniform(low: float, high: float, count: int, generator: torch.Generator | None, device) -> torch.Tensor:
    return torch.rand(count, generator=generator, device=device) * (high - low) + low


def random_resized_crop_and_flip(
    images: torch.Tensor, recipe: AugmentationRecipe, generator: torch.Generator | None = None,
    output_size: int | None = None,
) -> torch.Tensor:
    """Crop a random area fraction and aspect ratio of each image, resize to `output_size`
    (default: the input size), maybe flip. Bilinear sampling is linear, so any scaling of the
    input (e.g. 0..255 instead of 0..1) carries through unchanged."""
    count, device = images.shape[0], images.device
    output_size = output_size or images.shape[-1]
    area = _uniform(*recipe.crop_scale, count, generator, device)
    low, high = (math.log(bound) for bound in recipe.crop_ratio)
    ratio = _uniform(low, high, count, generator, device).exp()
    width = (area * ratio).sqrt().clamp(max=1.0)
    height = (area / ratio).sqrt().clamp(max=1.0)
    # Crop centres in normalized coordinates [-1, 1], keeping the crop inside the image.
    centre_x = (torch.rand(count, generator=generator, device=device) * 2 - 1) * (1 - width)
    centre_y = (torch.rand(count, generator=generator, device=device) * 2 - 1) * (1 - height)
    flip = torch.rand(count, generator=generator, device=device) < recipe.horizontal_flip_probability
    sign = torch.where(flip, -1.0, 1.0)
    theta = torch.zeros(count, 2, 3, device=device)
    theta[:, 0, 0] = width * sign
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = height
    theta[:, 1, 2] = centre_y
    grid = F.affine_grid(theta, [count, images.shape[1], output_size, output_size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def draw_color_parameters(
    count: int, recipe: AugmentationRecipe, generator: torch.Generator | None = None, device=None
) -> ColorParameters:
    """Draw the per-image colour choices, in this order: brightness, contrast and saturation
    factors (uniform in [1 - s, 1 + s]), then jitter (probability p) and grayscale flags."""

    def factors(strength: float) -> torch.Tensor:
        return _uniform(1 - strength, 1 + strength, count, generator, device)

    brightness, contrast, saturation = (
        factors(recipe.brightness), factors(recipe.contrast), factors(recipe.saturation)
    )
    apply_jitter = torch.rand(count, generator=generator, device=device) < recipe.color_jitter_probability
    apply_gray = torch.rand(count, generator=generator, device=device) < recipe.grayscale_probability
    return ColorParameters(brightness, contrast, saturation, apply_jitter, apply_gray)


def color_affine(parameters: ColorParameters, mean_gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image (N, 3, 3) matrix A and (N, 3) offset b such that A x + b is brightness, then
    contrast around the mean gray, then saturation around the pixel's gray (when jitter applies),
    then grayscale (when it applies), all unclamped. `mean_gray` (N,) is the mean luma of each
    input image; after brightness it is brightness * mean_gray (luma is linear)."""
    device = mean_gray.device
    luma = torch.tensor(LUMA_WEIGHTS, device=device)
    identity = torch.eye(3, device=device)
    ones = torch.ones(3, device=device)
    to_gray = torch.outer(ones, luma)  # every channel <- the pixel's luma
    b, c, s = parameters.brightness, parameters.contrast, parameters.saturation
    # Brightness then contrast: c b x + (1 - c) b mean_gray (the same for all three channels).
    # Saturation: s y + (1 - s) gray(y), i.e. the matrix s I + (1 - s) 1 luma^T.
    saturation = s.view(-1, 1, 1) * identity + (1 - s).view(-1, 1, 1) * to_gray
    jitter_matrix = saturation * (c * b).view(-1, 1, 1)
    jitter_offset = saturation @ (((1 - c) * b * mean_gray).view(-1, 1) * ones).unsqueeze(-1)
    jitter = parameters.apply_jitter.view(-1, 1, 1)
    matrix = torch.where(jitter, jitter_matrix, identity)
    offset = torch.where(jitter, jitter_offset, 0.0)
    gray = parameters.apply_gray.view(-1, 1, 1)
    matrix = torch.where(gray, to_gray @ matrix, matrix)
    offset = torch.where(gray, to_gray @ offset, offset)
    return matrix, offset.squeeze(-1)


def _mean_gray(images: torch.Tensor) -> torch.Tensor:
    """(N,) mean luma of each image: per-channel means (one reduction), then the luma weights."""
    return images.mean(dim=(2, 3)) @ torch.tensor(LUMA_WEIGHTS, device=images.device)


def _apply_affine(
    images: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor, low: torch.Tensor, high: torch.Tensor
) -> torch.Tensor:
    """matrix @ pixel + offset for every pixel (one batched product), then one clamp to [low, high]."""
    count, channels, height, width = images.shape
    pixels = images.reshape(count, channels, height * width)
    out = torch.baddbmm(offset.unsqueeze(-1), matrix, pixels)
    return out.clamp_(low.view(1, -1, 1), high.view(1, -1, 1)).view(count, channels, height, width)


def color_jitter_and_grayscale(
    images: torch.Tensor, recipe: AugmentationRecipe, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Brightness, contrast and saturation jitter with probability p, then random grayscale, on
    [0, 1] float images, composed into one affine map per image and clamped once to [0, 1] at the
    end (torchvision clamps after each jitter step; here there are no intermediate clamps)."""
    parameters = draw_color_parameters(images.shape[0], recipe, generator, images.device)
    matrix, offset = color_affine(parameters, _mean_gray(images))
    zeros, ones = torch.zeros(3, device=images.device), torch.ones(3, device=images.device)
    return _apply_affine(images, matrix, offset, zeros, ones)


def augment(
    images: torch.Tensor, recipe: AugmentationRecipe, generator: torch.Generator | None = None,
    output_size: int | None = None,
) -> torch.Tensor:
    """One augmented, normalized view of a uint8 batch (N, 3, H, W), `output_size` pixels square.

    Crop and flip sample the 0..255 values (converted to float once) at the output size; the
    1/255 scaling, colour jitter, grayscale and normalization are one affine map per image,
    applied in one pass with one clamp (to [0, 1] before normalization, expressed per channel in
    normalized units). Unlike torchvision there are no clamps between the jitter steps."""
    crops = random_resized_crop_and_flip(images.float(), recipe, generator, output_size)
    device = crops.device
    parameters = draw_color_parameters(crops.shape[0], recipe, generator, device)
    matrix, offset = color_affine(parameters, _mean_gray(crops) / 255)
    mean = torch.tensor(IMAGENET_MEAN, device=device)
    std = torch.tensor(IMAGENET_STD, device=device)
    # normalize(clamp(A x / 255 + b)) = clamp(A' x + b', (0 - mean) / std, (1 - mean) / std).
    matrix = matrix / (255 * std.view(1, 3, 1))
    offset = (offset - mean) / std
    return _apply_affine(crops, matrix, offset, -mean / std, (1 - mean) / std)
