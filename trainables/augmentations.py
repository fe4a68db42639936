"""Batched SSL augmentations: whole uint8 batches in, normalized float views out, on any device.

Every random choice is drawn per image with torch ops, so one call augments a batch without a
per-sample Python loop (the GPU never waits on PIL). The recipes of the papers are the
constants at the bottom (MoCo v2 / SimSiam, SimCLR, BYOL's two views, SwAV); methods pick theirs
in `SSLMethod.views`.

Colour jitter (brightness, contrast, saturation, hue), grayscale and ImageNet normalization are
all per-image affine maps of each pixel's RGB vector, so they are composed per image into one
3x3 matrix and a 3-vector offset and applied with a single batched matrix product over the
pixels, followed by one clamp. Departures from torchvision's ColorJitter + RandomGrayscale +
GaussianBlur + RandomSolarize, and why:

- No clamp to [0, 1] between the jitter steps (torchvision clamps after each one): the colour
  transform is clamped once, after grayscale and before normalization.
- The jitter steps run in a fixed order, brightness, contrast, saturation, hue; torchvision
  draws a random order per image.
- Hue is a rotation of the chroma around the gray axis in YIQ space (the linear approximation
  NVIDIA DALI uses), not torchvision's shift of the HSV hue: it is linear, so it joins the 3x3
  matrix. Both turn red towards yellow and green for a positive hue factor h, by 360 h degrees
  in their own colour wheel; YIQ keeps each pixel's luma (torchvision keeps the HSV value and
  saturation). The YIQ wheel is not evenly spaced in HSV hue, so the HSV hue of the result is
  off torchvision's by up to ~0.6 of the shift (15 degrees at h = 0.1, i.e. 36 degrees; 0.3 of
  the shift on average). Gray pixels never move.
- Gaussian blur runs on the crop *before* the colour map. Its kernel sums to 1 (also with the
  reflect padding), so it commutes with every per-pixel affine map and the result is torchvision's
  jitter-then-blur, except that the clamp to [0, 1] comes after the blur instead of before it.
  Sigma is drawn in pixels of a 224 px image and scaled by output_size / 224, so 32 px views
  get proportionally less blur; the kernel side is ~10% of the output size (odd, at least 3).
- Solarization (x -> 1 - x where x >= 0.5, after the clamp) is applied in normalized units to
  the finished view, as BYOL's threshold 0.5 on [0, 1] images (128 on uint8).

Gray data comes as one channel (trainables.data stores it so) and stays one channel through
crop, flips and blur; the colour map of a pixel (g, g, g) is a map of g, so the final affine map
makes the three normalized channels from it. Expanding there, not by summing the first
convolution's weights over its input channels (the other common choice for X-rays), keeps every
backbone, saved checkpoint and prior 3-channel and the outputs identical to feeding the
replicated image: with ImageNet's per-channel mean and std and zero padding, summed weights are
not exact at the image border, and they would tie a backbone to gray or colour data.

On a CPU, blur touches only the images drawn for it (p = 0.1 costs ~10% of the work). On a GPU
it blurs the whole batch and keeps the drawn images by a mask, and solarization is always a
mask: selecting a subset would need its size on the host, a sync point every view.
"""

import dataclasses
import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601, what torchvision's rgb_to_grayscale uses
# RGB -> YIQ (NTSC); the Y row is the luma, and the I and Q rows sum to 0, so gray has no chroma.
RGB_TO_YIQ = (LUMA_WEIGHTS, (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
YIQ_TO_RGB = tuple(map(tuple, torch.linalg.inv(torch.tensor(RGB_TO_YIQ, dtype=torch.float64)).tolist()))
BLUR_REFERENCE_SIZE = 224  # recipes give blur sigmas in pixels of an image this size


@dataclass(frozen=True)
class AugmentationRecipe:
    """Probabilities are per image; jitter strengths as torchvision's ColorJitter (factors
    uniform in [1 - s, 1 + s], hue in [-h, h] of a full turn). Defaults: MoCo v2's recipe."""

    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    horizontal_flip_probability: float = 0.5
    vertical_flip_probability: float = 0.0
    color_jitter_probability: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_probability: float = 0.2
    blur_probability: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # pixels at 224 px, scaled with the output size
    solarize_probability: float = 0.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name.endswith("_probability") and not 0 <= value <= 1:
                raise ValueError(f"AugmentationRecipe.{field.name} is {value}; it must be in [0, 1]")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"AugmentationRecipe.hue is {self.hue}; it must be in [0, 0.5]")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"AugmentationRecipe.blur_sigma is {self.blur_sigma}; it needs 0 < low <= high")


@dataclass(frozen=True)
class ColorParameters:
    """Per-image colour draws, each of shape (N,): jitter factors, hue turns (fractions of a full
    turn) and whether jitter, grayscale and solarization apply."""

    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    apply_jitter: torch.Tensor
    apply_gray: torch.Tensor
    apply_solarize: torch.Tensor


@functools.cache
def constant(values: tuple, device: torch.device) -> torch.Tensor:
    """A float tensor of these values on `device`, made once: building it from Python numbers on
    a GPU is a blocking host-to-device copy, a sync point each time. Never modify it in place."""
    return torch.tensor(values, device=device)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float images (N, C, H, W) -> ImageNet-normalized float images (N, 3, H, W);
    a one-channel image is broadcast to the three channels (as if stored as three equal ones)."""
    if images.dtype == torch.uint8:
        images = images.float() / 255
    mean = constant(IMAGENET_MEAN, images.device).view(1, 3, 1, 1)
    std = constant(IMAGENET_STD, images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def _uniform(low: float, high: float, count: int, generator: torch.Generator | None, device) -> torch.Tensor:
    return torch.rand(count, generator=generator, device=device) * (high - low) + low


def _chance(probability: float, count: int, generator: torch.Generator | None, device) -> torch.Tensor:
    return torch.rand(count, generator=generator, device=device) < probability


def random_resized_crop_and_flip(
    images: torch.Tensor, recipe: AugmentationRecipe, generator: torch.Generator | None = None,
    output_size: int | None = None,
) -> torch.Tensor:
    """Crop a random area fraction and aspect ratio of each image, resize to `output_size`
    (default: the input size), maybe flip left-right, maybe flip up-down. Bilinear sampling is
    linear, so any scaling of the input (e.g. 0..255 instead of 0..1) carries through unchanged."""
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
    horizontal = torch.where(_chance(recipe.horizontal_flip_probability, count, generator, device), -1.0, 1.0)
    vertical = torch.where(_chance(recipe.vertical_flip_probability, count, generator, device), -1.0, 1.0)
    theta = torch.zeros(count, 2, 3, device=device)
    theta[:, 0, 0] = width * horizontal
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = height * vertical
    theta[:, 1, 2] = centre_y
    grid = F.affine_grid(theta, [count, images.shape[1], output_size, output_size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def blur_kernel_size(image_size: int) -> int:
    """~10% of the image side, odd, at least 3 (SimCLR: 23 at 224 px)."""
    return max(3, 2 * (int(0.1 * image_size) // 2) + 1)


def draw_blur_parameters(
    count: int, recipe: AugmentationRecipe, generator: torch.Generator | None = None, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) whether each image is blurred (probability p) and its sigma in pixels at 224 px."""
    apply_blur = _chance(recipe.blur_probability, count, generator, device)
    return apply_blur, _uniform(*recipe.blur_sigma, count, generator, device)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Blur image i of (N, C, H, W) with a Gaussian of standard deviation sigma[i] pixels, cut to
    kernel_size (odd) and normalized to sum 1, with reflect padding (torchvision's gaussian_blur,
    batched): two separable passes of a depthwise convolution with one kernel per image-channel."""
    count, channels, height, width = images.shape
    half = (kernel_size - 1) / 2
    offsets = torch.linspace(-half, half, kernel_size, device=images.device)
    kernels = torch.exp(-0.5 * (offsets / sigma.view(-1, 1)).pow(2))
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)
    planes = count * channels
    pad = kernel_size // 2
    padded = F.pad(images.reshape(1, planes, height, width), (pad, pad, pad, pad), mode="reflect")
    rows = F.conv2d(padded, kernels.view(planes, 1, kernel_size, 1), groups=planes)
    return F.conv2d(rows, kernels.view(planes, 1, 1, kernel_size), groups=planes).view_as(images)


def _blur_selected_(images: torch.Tensor, apply_blur: torch.Tensor, sigma: torch.Tensor,
                    masked: bool | None = None) -> None:
    """Blur the selected images in place; sigma in pixels at 224 px, scaled to the image size.

    On a GPU every image is blurred and the selection is a mask: indexing the subset would need
    its size on the host, a sync point every view. On a CPU only the subset is blurred (p = 0.1
    then costs a tenth). `masked` overrides the choice (the tests compare both ways)."""
    size = images.shape[-1]
    sigma, kernel_size = sigma * size / BLUR_REFERENCE_SIZE, blur_kernel_size(size)
    if images.is_cuda if masked is None else masked:
        blurred = gaussian_blur(images, sigma, kernel_size)
        images.copy_(torch.where(apply_blur.view(-1, 1, 1, 1), blurred, images))
        return
    selected = apply_blur.nonzero().squeeze(1)
    if len(selected):
        images[selected] = gaussian_blur(images[selected], sigma[selected], kernel_size)


def random_gaussian_blur(
    images: torch.Tensor, recipe: AugmentationRecipe, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Blur each image with probability p, sigma uniform in recipe.blur_sigma (at 224 px)."""
    apply_blur, sigma = draw_blur_parameters(images.shape[0], recipe, generator, images.device)
    images = images.clone()
    _blur_selected_(images, apply_blur, sigma)
    return images


def draw_color_parameters(
    count: int, recipe: AugmentationRecipe, generator: torch.Generator | None = None, device=None
) -> ColorParameters:
    """Draw the per-image colour choices, in this order: brightness, contrast and saturation
    factors (uniform in [1 - s, 1 + s]), hue turns (uniform in [-h, h]), then the jitter
    (probability p), grayscale and solarization flags."""

    def factors(strength: float) -> torch.Tensor:
        return _uniform(1 - strength, 1 + strength, count, generator, device)

    brightness, contrast, saturation = (
        factors(recipe.brightness), factors(recipe.contrast), factors(recipe.saturation)
    )
    hue = _uniform(-recipe.hue, recipe.hue, count, generator, device)
    apply_jitter = _chance(recipe.color_jitter_probability, count, generator, device)
    apply_gray = _chance(recipe.grayscale_probability, count, generator, device)
    apply_solarize = _chance(recipe.solarize_probability, count, generator, device)
    return ColorParameters(brightness, contrast, saturation, hue, apply_jitter, apply_gray, apply_solarize)


def hue_rotation(hue: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) RGB matrices that turn each pixel's chroma by hue[i] of a full turn around the
    gray axis: RGB -> YIQ, rotate (I, Q) clockwise (red -> yellow -> green, the direction of
    HSV hue), back to RGB. Luma and gray pixels are unchanged; rotations compose additively."""
    device = hue.device
    to_yiq = constant(RGB_TO_YIQ, device)
    from_yiq = constant(YIQ_TO_RGB, device)
    angle = 2 * math.pi * hue
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.zeros(hue.shape[0], 3, 3, device=device)
    rotation[:, 0, 0].fill_(1)  # not `= 1`: a tensor made from a Python number each call
    rotation[:, 1, 1], rotation[:, 1, 2] = cos, sin
    rotation[:, 2, 1], rotation[:, 2, 2] = -sin, cos
    return from_yiq @ rotation @ to_yiq


def color_affine(parameters: ColorParameters, mean_gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image (N, 3, 3) matrix A and (N, 3) offset b such that A x + b is brightness, then
    contrast around the mean gray, then saturation around the pixel's gray, then hue (when jitter
    applies), then grayscale (when it applies), all unclamped. `mean_gray` (N,) is the mean luma
    of each input image; after brightness it is brightness * mean_gray (luma is linear)."""
    device = mean_gray.device
    luma = constant(LUMA_WEIGHTS, device)
    identity = torch.eye(3, device=device)
    ones = torch.ones(3, device=device)
    to_gray = torch.outer(ones, luma)  # every channel <- the pixel's luma
    b, c, s = parameters.brightness, parameters.contrast, parameters.saturation
    # Brightness then contrast: c b x + (1 - c) b mean_gray (the same for all three channels).
    # Saturation: s y + (1 - s) gray(y), i.e. the matrix s I + (1 - s) 1 luma^T; then hue.
    saturation = s.view(-1, 1, 1) * identity + (1 - s).view(-1, 1, 1) * to_gray
    saturation_and_hue = hue_rotation(parameters.hue) @ saturation
    jitter_matrix = saturation_and_hue * (c * b).view(-1, 1, 1)
    jitter_offset = saturation_and_hue @ (((1 - c) * b * mean_gray).view(-1, 1) * ones).unsqueeze(-1)
    jitter = parameters.apply_jitter.view(-1, 1, 1)
    matrix = torch.where(jitter, jitter_matrix, identity)
    offset = torch.where(jitter, jitter_offset, 0.0)
    gray = parameters.apply_gray.view(-1, 1, 1)
    matrix = torch.where(gray, to_gray @ matrix, matrix)
    offset = torch.where(gray, to_gray @ offset, offset)
    return matrix, offset.squeeze(-1)


def _mean_gray(images: torch.Tensor) -> torch.Tensor:
    """(N,) mean luma of each image: per-channel means (one reduction), then the luma weights (a
    one-channel image is its own luma: the weights sum to 1)."""
    if images.shape[1] == 1:
        return images.mean(dim=(1, 2, 3))
    return images.mean(dim=(2, 3)) @ constant(LUMA_WEIGHTS, images.device)


def _apply_affine(
    images: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor, low: torch.Tensor, high: torch.Tensor
) -> torch.Tensor:
    """matrix @ pixel + offset for every pixel (one batched product), then one clamp to [low, high].

    `matrix` (N, K, 3) maps RGB to K output channels. A one-channel image g is the RGB pixel
    (g, g, g), so its map is matrix @ (1, 1, 1): the row sums, (N, K, 1); K = 3 makes the
    three channels of a one-channel image here, in the same pass."""
    count, channels, height, width = images.shape
    if channels == 1:
        matrix = matrix.sum(dim=2, keepdim=True)
    pixels = images.reshape(count, channels, height * width)
    out = torch.baddbmm(offset.unsqueeze(-1), matrix, pixels)
    return out.clamp_(low.view(1, -1, 1), high.view(1, -1, 1)).view(count, matrix.shape[1], height, width)


def color_jitter_and_grayscale(
    images: torch.Tensor, recipe: AugmentationRecipe, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter with probability p, then random grayscale,
    on [0, 1] float images (N, C, H, W), composed into one affine map per image and clamped once
    to [0, 1] at the end (torchvision clamps after each jitter step; here there are no
    intermediate clamps). No solarization: `augment` applies it to the normalized view. A
    one-channel image stays one channel: a gray pixel stays gray under every step, so its map is
    the first row's (channel 0 of the same image stored as three equal channels)."""
    parameters = draw_color_parameters(images.shape[0], recipe, generator, images.device)
    matrix, offset = color_affine(parameters, _mean_gray(images))
    channels = images.shape[1]
    matrix, offset = matrix[:, :channels], offset[:, :channels]
    zeros, ones = torch.zeros(channels, device=images.device), torch.ones(channels, device=images.device)
    return _apply_affine(images, matrix, offset, zeros, ones)


def _solarize_selected_(views: torch.Tensor, apply_solarize: torch.Tensor, mean: torch.Tensor,
                        std: torch.Tensor) -> None:
    """x -> 1 - x where x >= 0.5, in place on the selected normalized views: with x = (p - mean) / std,
    that is x -> (1 - 2 mean) / std - x where x >= (0.5 - mean) / std. One masked pass over the
    batch: no subset indexing, so no sync point on a GPU."""
    threshold, reflection = ((0.5 - mean) / std).view(1, 3, 1, 1), ((1 - 2 * mean) / std).view(1, 3, 1, 1)
    flip = apply_solarize.view(-1, 1, 1, 1) & (views >= threshold)
    views.copy_(torch.where(flip, reflection - views, views))


def augment(
    images: torch.Tensor, recipe: AugmentationRecipe, generator: torch.Generator | None = None,
    output_size: int | None = None,
) -> torch.Tensor:
    """One augmented, normalized view (N, 3, S, S) of a uint8 batch (N, C, H, W), `output_size` =
    S pixels square. A gray batch (C = 1) is cropped, flipped and blurred as one channel (a third
    of the work) and becomes three channels only in the final affine map, where the per-channel
    ImageNet normalization makes them differ: the view equals that of the same images stored as
    three equal channels, with the same random draws.

    Crop and flips sample the 0..255 values (converted to float once) at the output size; the
    selected crops are blurred; the 1/255 scaling, colour jitter, grayscale and normalization are
    one affine map per image, applied in one pass with one clamp (to [0, 1] before normalization,
    expressed per channel in normalized units); the selected views are solarized. Random draws,
    in order: crop and flips, blur, colour (see the module docstring for the departures from
    torchvision)."""
    crops = random_resized_crop_and_flip(images.float(), recipe, generator, output_size)
    count, device = crops.shape[0], crops.device
    # Contrast centres on the mean gray of the unblurred crop, as torchvision's jitter-then-blur.
    mean_gray = _mean_gray(crops) / 255
    apply_blur, sigma = draw_blur_parameters(count, recipe, generator, device)
    if recipe.blur_probability > 0:
        _blur_selected_(crops, apply_blur, sigma)
    parameters = draw_color_parameters(count, recipe, generator, device)
    matrix, offset = color_affine(parameters, mean_gray)
    mean = constant(IMAGENET_MEAN, device)
    std = constant(IMAGENET_STD, device)
    # normalize(clamp(A x / 255 + b)) = clamp(A' x + b', (0 - mean) / std, (1 - mean) / std).
    matrix = matrix / (255 * std.view(1, 3, 1))
    offset = (offset - mean) / std
    views = _apply_affine(crops, matrix, offset, -mean / std, (1 - mean) / std)
    if recipe.solarize_probability > 0:
        _solarize_selected_(views, parameters.apply_solarize, mean, std)
    return views


def without_color(recipe: AugmentationRecipe) -> AugmentationRecipe:
    """The recipe for single-channel (grayscale) images: no saturation, hue or grayscale
    conversion, which leave a gray pixel where it is anyway; crops, flips, brightness, contrast,
    blur and solarization as they were."""
    return dataclasses.replace(recipe, saturation=0.0, hue=0.0, grayscale_probability=0.0)


def describe_recipes(views: Sequence[tuple[int, AugmentationRecipe]]) -> str:
    """(output size, recipe) of each view (a method's ViewSpecs) as JSON, one object per view with
    its size and every recipe field: what a run records of the augmentations it actually used."""
    return json.dumps([{"size": size, **dataclasses.asdict(recipe)} for size, recipe in views])


# The papers' recipes. Jitter strengths are torchvision's ColorJitter arguments; every recipe
# flips left-right with probability 0.5 and never up-down (the training loop adds vertical flips
# on datasets without an up/down orientation).

# MoCo v2 (Chen et al. 2020, https://arxiv.org/abs/2003.04297, and its main_moco.py --aug-plus),
# which SimSiam (Chen & He 2021, https://arxiv.org/abs/2011.10566) reuses: jitter 0.4/0.4/0.4/0.1
# with probability 0.8, grayscale 0.2, blur (sigma 0.1-2) with probability 0.5.
MOCO_V2_RECIPE = AugmentationRecipe()

# SimCLR (Chen et al. 2020, appendix A): colour distortion strength 1.0 -> 0.8/0.8/0.8/0.2,
# crops from 8% of the area, blur with probability 0.5.
SIMCLR_RECIPE = AugmentationRecipe(crop_scale=(0.08, 1.0), brightness=0.8, contrast=0.8, saturation=0.8,
                                   hue=0.2)

# BYOL (Grill et al. 2020, appendix B, table 6): asymmetric views, jitter 0.4/0.4/0.2/0.1; the
# first view is always blurred and never solarized, the second rarely blurred, sometimes solarized.
# Barlow Twins ("the same augmentation parameters as BYOL") and VICReg reuse it.
BYOL_VIEW_1 = AugmentationRecipe(crop_scale=(0.08, 1.0), brightness=0.4, contrast=0.4, saturation=0.2,
                                 hue=0.1, blur_probability=1.0, solarize_probability=0.0)
BYOL_VIEW_2 = dataclasses.replace(BYOL_VIEW_1, blur_probability=0.1, solarize_probability=0.2)

# SwAV (Caron et al. 2020, appendix A and main_swav.py): SimCLR's colour distortion and blur on
# every crop; global crops from 14% of the area up, small crops 5-14%.
SWAV_RECIPE = dataclasses.replace(SIMCLR_RECIPE, crop_scale=(0.14, 1.0))
SWAV_SMALL_CROP_RECIPE = dataclasses.replace(SWAV_RECIPE, crop_scale=(0.05, 0.14))
