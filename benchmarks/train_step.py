"""The trial's training step as the loop runs it vs a bare PyTorch loop, side by side in one run.

Run: python benchmarks/train_step.py [--backbone resnet18] [--image-size 64] [--batch-size 64]
     [--method simclr] [--steps 3] [--repeats 5] [--max-batch]

- trial step: trainables.loop's own functions, as train_loop_per_worker calls them each step:
  TrainingBatches (the split resident on the GPU, or gathered on the CPU), set_learning_rates,
  train_step (the method's views, augment, bf16 autocast and channels-last on a GPU, backward,
  the method's hooks, optimizer step) and the epoch's on-device loss and collapse sums.
- bare loop: the same model (a copy with the same weights), batch, views and recipe, optimizer
  and precision, written the obvious way: index a random batch, `.to(device)`, augment each view,
  forward under autocast, backward, step.

Both run in turns, `--steps` steps per turn, `--repeats` turns each after one warm-up turn;
printed: images per second (median over turns) for both and the ratio (trial / bare). Also the
fraction of the trial step's time spent on its input (against the same step fed one fixed batch
already on the device). On a GPU also: model FLOP utilisation against a measured bf16 matmul peak
(FLOPs of one step counted by torch's FlopCounterMode), and the host-device syncs inside one
trial step (torch.cuda.set_sync_debug_mode). `--max-batch` first finds the largest batch (a power
of two) whose step fits the device's memory and benchmarks at that batch.
"""

import argparse
import copy
import statistics
import time
import warnings
from collections.abc import Callable, Iterator

import torch

from trainables.augmentations import augment
from trainables.batches import TrainingBatches
from trainables.config import TrialConfig
from trainables.evaluation import embedding_std
from trainables.optimization import build_optimizer, set_learning_rates
from trainables.training import (
    TrainingState,
    build_training_state,
    train_step,
    with_dataset_flips,
)

MATMUL_SIDE = 8192  # square bf16 matmul whose throughput is the device's peak


def build_state(config: TrialConfig, device: torch.device) -> TrainingState:
    """What the loop builds for one worker (no Ray context needed)."""
    return build_training_state(config, 1, device, announce=False)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cycle_epochs(batches: TrainingBatches) -> Iterator[torch.Tensor]:
    epoch = 0
    while True:
        yield from batches.epoch(epoch)
        epoch += 1


class TrialSteps:
    """The loop's per-step work (trainables.loop.train_loop_per_worker), step after step."""

    def __init__(self, config: TrialConfig, images: torch.Tensor, device: torch.device, steps: int) -> None:
        self.config, self.device = config, device
        self.state = build_state(config, device)
        self.view_specs = [spec._replace(recipe=with_dataset_flips(spec.recipe, config.dataset))
                           for spec in self.state.method.views(config.image_size)]
        self.feeder = TrainingBatches(images, device, config.batch_size)
        self.batches = cycle_epochs(self.feeder)
        self.generator = torch.Generator(device=device).manual_seed(0)
        self.total_steps = 1_000_000
        self.loss_sum = torch.zeros((), device=device)
        self.collapse_sum = torch.zeros((), device=device)

    def step(self, images: torch.Tensor | None = None) -> None:
        images = next(self.batches) if images is None else images
        set_learning_rates(self.state.optimizer, self.state.step, self.total_steps, 0, 0.05)
        output = train_step(self.state, images, self.view_specs, self.generator, 1, self.total_steps)
        self.loss_sum += output.loss.detach()
        self.collapse_sum += embedding_std(output.embedding)


class BareSteps:
    """The obvious PyTorch loop over the same model, data, views and precision."""

    def __init__(self, trial: TrialSteps, images: torch.Tensor) -> None:
        self.device, self.images = trial.device, images
        self.model = copy.deepcopy(trial.state.method)
        self.optimizer = build_optimizer(self.model, trial.config.resolved_optimizer, trial.config.momentum,
                                         trial.config.resolved_weight_decay)
        for group in self.optimizer.param_groups:
            group["lr"] = 0.05
        self.view_specs, self.batch_size = trial.view_specs, trial.config.batch_size
        self.generator = torch.Generator(device=self.device).manual_seed(0)

    def step(self) -> None:
        indices = torch.randint(len(self.images), (self.batch_size,))
        batch = self.images[indices].to(self.device, non_blocking=True)
        views = [augment(batch, spec.recipe, self.generator, output_size=spec.size)
                 for spec in self.view_specs]
        if self.device.type == "cuda":
            views = [view.to(memory_format=torch.channels_last) for view in views]
            with torch.autocast("cuda", dtype=torch.bfloat16):
                output = self.model(views)
        else:
            output = self.model(views)
        self.optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        self.optimizer.step()


def seconds_per_step(step: Callable[[], None], steps: int, device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - started) / steps


def bf16_matmul_peak(device: torch.device, repeats: int = 20) -> float:
    """Measured bf16 matmul FLOP/s of the device (dense square product, median of repeats)."""
    a = torch.randn(MATMUL_SIDE, MATMUL_SIDE, device=device, dtype=torch.bfloat16)
    b = torch.randn(MATMUL_SIDE, MATMUL_SIDE, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    timings = [seconds_per_step(lambda: a @ b, 10, device) for _ in range(repeats)]
    return 2 * MATMUL_SIDE**3 / statistics.median(timings)


def step_flops(trial: TrialSteps, images: torch.Tensor) -> int:
    """FLOPs of one training step (forward and backward of every view), as torch counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        trial.step(images)
    return counter.get_total_flops()


def syncs_in_one_step(trial: TrialSteps) -> int:
    """Host-device synchronizations torch reports inside one trial step (CUDA only)."""
    trial.step()
    synchronize(trial.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trial.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    synchronize(trial.device)
    syncs = [str(warning.message).splitlines()[0] for warning in caught
             if "synchroniz" in str(warning.message)]
    for line in sorted(set(syncs)):
        print(f"  sync in the trial step: {line}")
    return len(syncs)


def largest_batch(config_values: dict, device: torch.device, start: int = 64, limit: int = 8192) -> int:
    """The largest power-of-two batch whose trial step runs without running out of device memory."""
    fits, batch_size = 0, start
    while batch_size <= limit:
        config = TrialConfig.from_dict({**config_values, "batch_size": batch_size})
        try:
            TrialSteps(config, random_images(batch_size, config.image_size), device, 1).step()
            synchronize(device)
            fits = batch_size
        except torch.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
        print(f"  batch {batch_size} fits", flush=True)
        batch_size *= 2
    if not fits:
        raise SystemExit(f"error: even batch {start} does not fit the device; use a smaller --image-size")
    return fits


def random_images(count: int, image_size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (count, 3, image_size, image_size), dtype=torch.uint8, generator=generator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-batch", action="store_true", help="benchmark at the largest batch that fits")
    parser.add_argument("--images", type=int, default=0, help="training images (default: 4 batches)")
    parser.add_argument("--steps", type=int, default=3, help="steps per timed turn")
    parser.add_argument("--repeats", type=int, default=5, help="timed turns of each loop")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    values = {"backbone": args.backbone, "method": args.method, "image_size": args.image_size,
              "dataset": "shapes", "batch_size": args.batch_size}
    if args.max_batch:
        if device.type != "cuda":
            raise SystemExit("error: --max-batch needs a GPU (it searches the batch that fits its memory)")
        values["batch_size"] = largest_batch(values, device)
    config = TrialConfig.from_dict(values)
    images = random_images(args.images or 4 * config.batch_size, config.image_size)
    trial = TrialSteps(config, images, device, args.steps)
    bare = BareSteps(trial, images)
    precision = "bf16 autocast, channels-last" if device.type == "cuda" else "fp32"
    print(f"{config.method} {config.backbone} {config.image_size} px, batch {config.batch_size}, "
          f"{len(trial.view_specs)} views, {precision}, {device} (training images: {trial.feeder.placement})",
          flush=True)

    fixed = next(trial.batches)
    for _ in range(2):  # warm-up: allocator, cudnn autotuning, lazy initialization
        trial.step()
        bare.step()
    trial_times, bare_times, fed_times = [], [], []
    for turn in range(args.repeats):
        order = [(trial_times, trial.step), (bare_times, bare.step)]
        for timings, step in order if turn % 2 == 0 else order[::-1]:
            timings.append(seconds_per_step(step, args.steps, device))
        fed_times.append(seconds_per_step(lambda: trial.step(fixed), args.steps, device))
    trial_rate = config.batch_size / statistics.median(trial_times)
    bare_rate = config.batch_size / statistics.median(bare_times)
    input_fraction = max(0.0, 1 - statistics.median(fed_times) / statistics.median(trial_times))
    print(f"trial step: {trial_rate:.1f} images/s  bare loop: {bare_rate:.1f} images/s  "
          f"ratio {trial_rate / bare_rate:.3f}  (median of {args.repeats} turns of {args.steps} steps)")
    print(f"input: {100 * input_fraction:.1f}% of the trial step's time "
          "(vs the same step fed one batch already on the device)")
    if device.type == "cuda":
        peak = bf16_matmul_peak(device)
        flops = step_flops(trial, fixed)
        achieved = flops / statistics.median(trial_times)
        print(f"model FLOP utilisation: {100 * achieved / peak:.1f}% ({achieved / 1e12:.1f} TFLOP/s of a "
              f"measured bf16 matmul peak of {peak / 1e12:.1f} TFLOP/s; {flops / 1e9:.1f} GFLOP per step)")
        print(f"host-device syncs inside one trial step: {syncs_in_one_step(trial)}")
        print(f"peak device memory: {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
