"""Two-view SSL augmentation throughput: the cached-uint8 + batched pipeline vs per-sample PIL.

Run: python benchmarks/data_pipeline.py [--images 256] [--sizes 96 224] [--repeats 5]

Both pipelines apply the same full recipe, BYOL's two asymmetric views (RandomResizedCrop scale
0.08-1, horizontal flip, colour jitter 0.4/0.4/0.2 and hue 0.1 with p 0.8, grayscale p 0.2,
Gaussian blur with sigma 0.1-2 at 224 px scaled to the image size and a kernel ~10% of it, with
p 1.0 on view 1 and 0.1 on view 2, solarization at 0.5 (128 on uint8) with p 0 and 0.2, normalize),
and produce the two views of each image, on the CPU:

- cached + batched: the images are decoded and resized once into a uint8 tensor (what
  trainables.data.cache stores; its one-off cost is printed apart), then
  trainables.augmentations.augment runs on whole batches, once per view;
- per-sample PIL: a torchvision DataLoader whose Dataset opens each JPEG, decodes it and applies
  torchvision transforms image by image (ColorJitter with hue, RandomGrayscale, GaussianBlur in
  RandomApply, RandomSolarize), every epoch (with 0 workers, and with one per core).

The batched pipeline departs from torchvision only where trainables.augmentations says (YIQ hue
rotation, fixed jitter order, one clamp), so the work per image is comparable.

The source is a few hundred synthetic 600x450 JPEGs (HAM10000's size) in a temporary folder.
Printed: the median over repeats of two-view images per second, and the ratio.
"""

import argparse
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from trainables.augmentations import (
    BLUR_REFERENCE_SIZE,
    BYOL_VIEW_1,
    BYOL_VIEW_2,
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentationRecipe,
    augment,
    blur_kernel_size,
)
from trainables.data.pool import decode_image_files


def write_synthetic_jpegs(folder: Path, count: int, width: int = 600, height: int = 450) -> list[Path]:
    """Smooth random colour fields with noise, saved as quality-90 JPEGs (decode cost like photos)."""
    generator = torch.Generator().manual_seed(0)
    paths = []
    for index in range(count):
        field = F.interpolate(torch.rand(1, 3, 6, 8, generator=generator), size=(height, width),
                              mode="bicubic", align_corners=False)
        field = field + 0.08 * torch.randn(1, 3, height, width, generator=generator)
        pixels = (field[0].clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
        path = folder / f"{index:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


Views = tuple[AugmentationRecipe, AugmentationRecipe]


def torchvision_transform(image_size: int, recipe: AugmentationRecipe) -> transforms.Compose:
    """The recipe as torchvision transforms on PIL images, in the papers' order."""
    sigma = tuple(bound * image_size / BLUR_REFERENCE_SIZE for bound in recipe.blur_sigma)
    return transforms.Compose([
        transforms.RandomResizedCrop(image_size, scale=recipe.crop_scale, ratio=recipe.crop_ratio),
        transforms.RandomHorizontalFlip(recipe.horizontal_flip_probability),
        transforms.RandomVerticalFlip(recipe.vertical_flip_probability),
        transforms.RandomApply(
            [transforms.ColorJitter(recipe.brightness, recipe.contrast, recipe.saturation, recipe.hue)],
            p=recipe.color_jitter_probability,
        ),
        transforms.RandomGrayscale(recipe.grayscale_probability),
        transforms.RandomApply([transforms.GaussianBlur(blur_kernel_size(image_size), sigma)],
                               p=recipe.blur_probability),
        transforms.RandomSolarize(128, p=recipe.solarize_probability),  # 0.5 on [0, 1]
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class TwoViewJpegs(Dataset):
    """The per-sample pipeline: decode one JPEG, transform it once per view."""

    def __init__(self, paths: list[Path], image_size: int, views: Views) -> None:
        self.paths = paths
        self.transforms = [torchvision_transform(image_size, recipe) for recipe in views]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        with Image.open(self.paths[index]) as image:
            image = image.convert("RGB")
        first, second = (transform(image) for transform in self.transforms)
        return first, second


def per_sample_rate(paths: list[Path], image_size: int, views: Views, batch_size: int,
                    workers: int) -> float:
    loader = DataLoader(TwoViewJpegs(paths, image_size, views), batch_size=batch_size,
                        num_workers=workers, shuffle=True, persistent_workers=False)
    start = time.perf_counter()
    for first, second in loader:
        assert first.shape[-1] == second.shape[-1] == image_size
    return len(paths) / (time.perf_counter() - start)


def batched_rate(cached: torch.Tensor, views: Views, batch_size: int) -> float:
    """Two-view images per second of the batched pipeline on `cached`'s device (on a GPU the uint8
    images are already there, as trainables.batches keeps a split that fits)."""
    device = cached.device
    generator = torch.Generator(device=device).manual_seed(0)
    start = time.perf_counter()
    order = torch.randperm(len(cached), generator=generator, device=device)
    for begin in range(0, len(cached), batch_size):
        batch = cached[order[begin:begin + batch_size]]
        first, second = (augment(batch, recipe, generator) for recipe in views)
        assert first.shape == second.shape == batch.shape
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return len(cached) / (time.perf_counter() - start)


def median_rate(measure, repeats: int) -> float:
    measure()  # warm-up: thread pools, worker start-up paths, page cache
    return statistics.median(measure() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 224])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch intra-op threads for the batched pipeline")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the batched pipeline runs (the PIL pipeline always uses the CPUs)")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    device = torch.device(arguments.device)
    views = (BYOL_VIEW_1, BYOL_VIEW_2)
    load = open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"
    print(f"batched on {device}; PIL on the CPU with {arguments.workers} workers ({os.cpu_count()} cores), "
          f"torch threads {torch.get_num_threads()}, load average {load} at the start, "
          f"{arguments.images} JPEGs 600x450, two views per image, median of {arguments.repeats}")
    header = f"{'size':>5} {'decode once (s)':>16} {'cached+batched':>15} {'PIL 0 workers':>14} " \
             f"{f'PIL {arguments.workers} workers':>15} {'ratio vs best PIL':>18}"
    with tempfile.TemporaryDirectory() as folder:
        paths = write_synthetic_jpegs(Path(folder), arguments.images)
        print(header)
        for size in arguments.sizes:
            start = time.perf_counter()
            cached, readable = decode_image_files(paths, size)
            decode_seconds = time.perf_counter() - start
            assert readable.all()
            batch_size, repeats = arguments.batch_size, arguments.repeats
            batched = median_rate(partial(batched_rate, cached.to(device), views, batch_size), repeats)
            rates = [median_rate(partial(per_sample_rate, paths, size, views, batch_size, workers), repeats)
                     for workers in (0, arguments.workers)]
            print(f"{size:>5} {decode_seconds:>16.2f} {batched:>13.0f}/s {rates[0]:>12.0f}/s "
                  f"{rates[1]:>13.0f}/s {batched / max(rates):>17.1f}x", flush=True)



if __name__ == "__main__":
    main()
