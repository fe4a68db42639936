"""Batched SSL augmentations: whole uint8 batches in, normalized float views out, on any device.

Every random choice is drawn per image with torch ops, so one call augments a batch without a
per-sample Python loop (the GPU never waits on PIL).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    (default: the input size), maybe flip."""
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


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def color_jitter_and_grayscale(
    images: torch.Tensor, recipe: AugmentationRecipe, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Brightness, contrast and saturation jitter with probability p, then random grayscale."""
    count, device = images.shape[0], images.device

    def factors(strength: float) -> torch.Tensor:
        return _uniform(1 - strength, 1 + strength, count, generator, device).view(-1, 1, 1, 1)

    jittered = images * factors(recipe.brightness)
    mean_gray = _grayscale(jittered).mean(dim=(2, 3), keepdim=True)
    jittered = (jittered - mean_gray) * factors(recipe.contrast) + mean_gray
    gray = _grayscale(jittered)
    jittered = ((jittered - gray) * factors(recipe.saturation) + gray).clamp(0, 1)
    apply_jitter = torch.rand(count, generator=generator, device=device) < recipe.color_jitter_probability
    images = torch.where(apply_jitter.view(-1, 1, 1, 1), jittered, images)
    apply_gray = torch.rand(count, generator=generator, device=device) < recipe.grayscale_probability
    return torch.where(apply_gray.view(-1, 1, 1, 1), _grayscale(images).expand_as(images), images)


def augment(
    images: torch.Tensor, recipe: AugmentationRecipe, generator: torch.Generator | None = None,
    output_size: int | None = None,
) -> torch.Tensor:
    """One augmented, normalized view of a uint8 batch (N, 3, H, W), `output_size` pixels square."""
    views = images.float() / 255
    views = random_resized_crop_and_flip(views, recipe, generator, output_size)
    views = color_jitter_and_grayscale(views, recipe, generator)
    return normalize(views)
