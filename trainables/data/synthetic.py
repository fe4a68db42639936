"""Offline datasets that need no files: scikit-learn's digits and procedurally generated shapes.

`shapes` is the test bed for "does SSL help?": the class is the shape's outline, while colour,
position, scale, rotation and a textured background are nuisances of the kind SimCLR's
augmentations (crop, colour jitter, grayscale) teach a network to ignore. Colour and texture
dominate the pixel statistics, so random-init CNN features are weak on it (unlike digits, where
they already reach ~0.97). The images are one fixed dataset (drawn from SHAPES_DATASET_SEED,
rendered at any size); the trial seed only changes the split, as for a real dataset.
"""

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from trainables.data.pool import DecodedPool, resize_to_uint8

SHAPES_COUNT = 3000
SHAPES_DATASET_SEED = 20240617
RENDER_CHUNK = 256


def digits_pool(image_size: int) -> DecodedPool:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), upsampled.

    Real and offline, but easy: random features already reach ~0.97 linear accuracy, so it shows
    that the plumbing works, not whether SSL helps.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = resize_to_uint8(digits.images, image_size, max_value=16.0)
    return DecodedPool(images, digits.target.astype(np.int64), tuple(str(d) for d in range(10)))


def _triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Equilateral triangle with its corners on the unit circle (edges 0.5 from the centre)."""
    normals = (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
    return torch.stack([u * math.cos(a) + v * math.sin(a) for a in normals]).amax(dim=0) - 0.5


def _cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    upright_bar = torch.maximum(u.abs() - 0.3, v.abs() - 1.0)
    level_bar = torch.maximum(v.abs() - 0.3, u.abs() - 1.0)
    return torch.minimum(upright_bar, level_bar)


def _star(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    radius = torch.sqrt(u**2 + v**2)
    return (radius - (0.62 + 0.38 * torch.cos(5 * torch.atan2(v, u)))) * 0.6


# Approximate signed distance (negative inside), in units of the shape's radius, in its own frame.
SHAPE_DISTANCES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "circle": lambda u, v: torch.sqrt(u**2 + v**2) - 1.0,
    "ring": lambda u, v: (torch.sqrt(u**2 + v**2) - 0.72).abs() - 0.28,
    "square": lambda u, v: torch.maximum(u.abs(), v.abs()) - 0.8,
    "triangle": _triangle,
    "cross": _cross,
    "star": _star,
}
SHAPE_NAMES = tuple(SHAPE_DISTANCES)


def _signed_distance(shape: np.ndarray, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Each image's distance to its own shape; shape: int (B,), u, v: (B, H, W)."""
    distance = torch.empty_like(u)
    for index, shape_distance in enumerate(SHAPE_DISTANCES.values()):
        members = torch.as_tensor(np.flatnonzero(shape == index))
        distance[members] = shape_distance(u[members], v[members])
    return distance


def _render(parameters: dict[str, np.ndarray], image_size: int, seed: int) -> torch.Tensor:
    """Float images (B, 3, S, S) in [0, 1] for one chunk of drawn parameters."""
    count = len(parameters["shape"])
    p = {name: torch.as_tensor(value, dtype=torch.float32) for name, value in parameters.items()}
    generator = torch.Generator().manual_seed(seed)
    axis = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size * 2 - 1
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    x, y = x.expand(count, -1, -1), y.expand(count, -1, -1)

    # Background: two colours mixed by low-frequency noise, a grating, and pixel noise.
    blend = F.interpolate(p["noise"], size=(image_size, image_size), mode="bicubic", align_corners=False)
    background_a, background_b = p["background_a"].view(-1, 3, 1, 1), p["background_b"].view(-1, 3, 1, 1)
    background = background_a * blend + background_b * (1 - blend)
    phase = (x * p["grating_angle"].cos().view(-1, 1, 1) + y * p["grating_angle"].sin().view(-1, 1, 1))
    grating = torch.sin(phase * p["grating_frequency"].view(-1, 1, 1) * math.pi)
    background = background + (p["grating_amplitude"].view(-1, 1, 1) * grating).unsqueeze(1)
    background = background + 0.05 * torch.randn(count, 1, image_size, image_size, generator=generator)

    # Foreground: the shape, moved, rotated and scaled, with a one-pixel soft edge.
    dx, dy = x - p["centre_x"].view(-1, 1, 1), y - p["centre_y"].view(-1, 1, 1)
    cos, sin = p["rotation"].cos().view(-1, 1, 1), p["rotation"].sin().view(-1, 1, 1)
    scale = p["scale"].view(-1, 1, 1)
    u, v = (dx * cos + dy * sin) / scale, (-dx * sin + dy * cos) / scale
    distance = _signed_distance(parameters["shape"], u, v)
    alpha = (0.5 - distance * scale * image_size / 2).clamp(0, 1).unsqueeze(1)
    images = alpha * p["foreground"].view(-1, 3, 1, 1) + (1 - alpha) * background
    return images.clamp(0, 1)


def _draw_parameters(count: int, seed: int) -> dict[str, np.ndarray]:
    generator = np.random.default_rng(seed)
    shape = generator.permutation(np.arange(count) % len(SHAPE_NAMES))
    foreground = generator.uniform(0, 1, (count, 3))
    # Each background colour differs from the shape's by at least 0.3 in every channel.
    offsets = generator.uniform(0.3, 0.7, (2, count, 3))
    return {
        "shape": shape,
        "centre_x": generator.uniform(-0.4, 0.4, count),
        "centre_y": generator.uniform(-0.4, 0.4, count),
        "scale": generator.uniform(0.3, 0.55, count),
        "rotation": generator.uniform(0, 2 * math.pi, count),
        "foreground": foreground,
        "background_a": (foreground + offsets[0]) % 1,
        "background_b": (foreground + offsets[1]) % 1,
        "noise": generator.uniform(0, 1, (count, 1, 4, 4)),
        "grating_angle": generator.uniform(0, math.pi, count),
        "grating_frequency": generator.uniform(2, 8, count),
        "grating_amplitude": generator.uniform(0, 0.25, count),
    }


def render_shapes(count: int, image_size: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """`count` shape images as uint8 (count, 3, S, S) and their int64 labels, fixed by seed."""
    parameters = _draw_parameters(count, seed)
    chunks = []
    for start in range(0, count, RENDER_CHUNK):
        chunk = {name: value[start:start + RENDER_CHUNK] for name, value in parameters.items()}
        images = _render(chunk, image_size, seed + start)
        chunks.append((images * 255).round().to(torch.uint8))
    return torch.cat(chunks), parameters["shape"].astype(np.int64)


def shapes_pool(image_size: int) -> DecodedPool:
    images, labels = render_shapes(SHAPES_COUNT, image_size, SHAPES_DATASET_SEED)
    return DecodedPool(images, labels, SHAPE_NAMES)
