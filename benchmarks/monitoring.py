"""What the per-epoch kNN monitor costs, as a fraction of training time, before and after bounding it.

Run: python benchmarks/monitoring.py [--setting smoke|larger|both] [--repeats 5]

Before: the monitor embedded the whole training split and the validation split at epoch 0 and
after every epoch. After: a reference subset of at most KNN_REFERENCE_IMAGES training images,
every `knn_every` epochs (TrialConfig's default) plus epoch 0 and the last (trainables.monitoring).

Measured, with the loop's own functions, on the settings' model, image size, batch and method:
the median seconds of a training step (trainables.loop.train_step on TrainingBatches' batches)
and of the monitor's feature extraction per image (trainables.evaluation.extract_features, as
monitor_knn runs it). The fractions then follow from the settings' split sizes and epochs:

    overhead = monitored epochs x (reference + validation images) x seconds per image
               / (epochs x steps per epoch x seconds per step)

The kNN vote itself (a reference x validation matrix product) is left out: it is small next to
the forward passes (under 1% of them at these sizes).

Settings: `smoke` is the smoke sweep's trial (digits' split sizes, cbr_nano, 32 px, batch 128,
3 epochs, SimCLR); `larger` is a DermaMNIST-sized trial (7,007 training and 1,003 validation
images) with ResNet-18 at 64 px, batch 256, 50 epochs (hpo_simclr's size, as a grid trial).
"""

import argparse
import statistics
import time
from pathlib import Path
from typing import NamedTuple

import torch

from trainables.config import TrialConfig
from trainables.evaluation import extract_features
from trainables.monitoring import KNN_REFERENCE_IMAGES, is_monitored_epoch

try:
    from train_step import TrialSteps, random_images, seconds_per_step
except ImportError:  # imported as benchmarks.monitoring
    from benchmarks.train_step import TrialSteps, random_images, seconds_per_step


class Setting(NamedTuple):
    backbone: str
    image_size: int
    batch_size: int
    epochs: int
    train_images: int
    val_images: int


SETTINGS = {
    "smoke": Setting("cbr_nano", 32, 128, 3, 1077, 360),
    "larger": Setting("resnet18", 64, 256, 50, 7007, 1003),
}
FEATURE_PROBE_IMAGES = 512  # images whose feature extraction is timed


def measure(setting: Setting, repeats: int, device: torch.device) -> tuple[float, float]:
    """Median seconds per training step and per image of monitor feature extraction."""
    config = TrialConfig.from_dict({"backbone": setting.backbone, "image_size": setting.image_size,
                                    "batch_size": setting.batch_size, "method": "simclr",
                                    "dataset": "shapes"})
    trial = TrialSteps(config, random_images(2 * setting.batch_size, setting.image_size), device, 1)
    trial.step()
    step_seconds = statistics.median(seconds_per_step(trial.step, 1, device) for _ in range(repeats))
    probe = random_images(FEATURE_PROBE_IMAGES, setting.image_size)
    backbone = trial.state.method.backbone
    extract_features(backbone, probe[:64], device=device)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        extract_features(backbone, probe, device=device)
        timings.append((time.perf_counter() - started) / len(probe))
    return step_seconds, statistics.median(timings)


def overhead(setting: Setting, step_seconds: float, image_seconds: float, knn_every: int | None) -> float:
    """Monitor time / training time; knn_every None: the old monitor (whole split, every epoch)."""
    training = setting.epochs * (setting.train_images // setting.batch_size) * step_seconds
    if knn_every is None:
        monitors, reference = setting.epochs + 1, setting.train_images
    else:
        monitors = sum(is_monitored_epoch(epoch, setting.epochs, knn_every)
                       for epoch in range(setting.epochs + 1))
        reference = min(setting.train_images, KNN_REFERENCE_IMAGES)
    return monitors * (reference + setting.val_images) * image_seconds / training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=[*SETTINGS, "both"], default="both")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    print(f"device {device}, load average {load}, knn_every default {TrialConfig.knn_every}, "
          f"reference set at most {KNN_REFERENCE_IMAGES} images")
    for name in SETTINGS if args.setting == "both" else [args.setting]:
        setting = SETTINGS[name]
        step_seconds, image_seconds = measure(setting, args.repeats, device)
        before = overhead(setting, step_seconds, image_seconds, None)
        after = overhead(setting, step_seconds, image_seconds, TrialConfig.knn_every)
        every_epoch = overhead(setting, step_seconds, image_seconds, 1)
        print(f"{name}: {setting.backbone} {setting.image_size} px, batch {setting.batch_size}, "
              f"{setting.epochs} epochs, {setting.train_images}/{setting.val_images} train/val images; "
              f"step {step_seconds:.3f} s, feature extraction {1e3 * image_seconds:.2f} ms/image")
        print(f"  monitor / training time: before {100 * before:.1f}%  after {100 * after:.1f}% "
              f"(knn_every={TrialConfig.knn_every}); "
              f"every epoch with the bounded set {100 * every_epoch:.1f}%")


if __name__ == "__main__":
    main()
