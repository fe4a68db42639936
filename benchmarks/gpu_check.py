"""The GPU check in one process, on the Ray-free core only: one summary file of every figure.

    bash benchmarks/gpu_check.sh           # on a GPU machine: ResNet-50, 224 px, bf16, channels-last
    bash benchmarks/gpu_check.sh --quick   # the same code paths at toy sizes, on a CPU, in about a minute

Needs torch, torchvision, timm, numpy, scikit-learn and pydicom (imported by the data package);
never Ray, MLflow or Optuna (`--quick` runs with them blocked). What it measures, each with the
benchmark functions that benchmarks/train_step.py and memory_check.py use:

1. the trial's step (trainables.training.train_step, as the loop calls it) vs a bare PyTorch loop
   over the same model: images/s and their ratio; model FLOP utilisation against a measured bf16
   matmul peak; the fraction of the step spent on its input; host-device syncs in one step
   (torch.cuda.set_sync_debug_mode); eager and with the method's forward + loss torch.compile'd
   as the loop compiles it with the trial setting compile=true;
2. the memory planner's estimate vs torch.cuda.max_memory_allocated for ResNet-50 (BatchNorm) and
   BiT (GroupNorm) at two batch sizes each;
3. the largest power-of-two batch whose trial step fits;
4. the on-device augmentation rate (two views, SimCLR's recipe, images/s).
"""

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_check import measure_pretraining  # noqa: E402
from train_step import (  # noqa: E402
    BareSteps,
    TrialSteps,
    bf16_matmul_peak,
    largest_batch,
    random_images,
    seconds_per_step,
    step_flops,
    synchronize,
    syncs_in_one_step,
)

from orchestrator.memory import GIB, estimate_memory  # noqa: E402
from trainables.augmentations import SIMCLR_RECIPE, augment  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402

SUMMARY_FILE = "gpu_check_summary.json"
CLUSTER_PACKAGES = ("ray", "mlflow", "optuna")  # absent on the GPU machine
FULL = {"backbone": "resnet50", "image_size": 224, "batch_size": 256, "steps": 10, "repeats": 5,
        "memory": [("resnet50", 64), ("resnet50", 128), ("resnetv2_50x1_bit", 32), ("resnetv2_50x1_bit", 64)],
        "memory_image_size": 224, "largest_batch": (256, 4096), "compile_backend": "inductor",
        "augment_images": 1024}
QUICK = {"backbone": "cbr_nano", "image_size": 32, "batch_size": 16, "steps": 2, "repeats": 2,
         "memory": [("cbr_nano", 8), ("cbr_nano", 16)], "memory_image_size": 32,
         "largest_batch": (8, 16), "compile_backend": "eager", "augment_images": 64}


def step_comparison(settings: dict, device: torch.device, compiled: bool) -> dict:
    """Trial step vs bare loop, input fraction, MFU and syncs, as benchmarks/train_step.py measures them."""
    # compile: the loop's own (trainables.training.build_training_state) on the method's forward
    # and loss; the optimizer step stays eager, and so does the bare loop (its copy is uncompiled).
    config = TrialConfig.from_dict({"method": "simclr", "dataset": "shapes", "backbone": settings["backbone"],
                                    "image_size": settings["image_size"],
                                    "batch_size": settings["batch_size"], "compile": compiled,
                                    "compile_backend": settings["compile_backend"]})
    images = random_images(4 * config.batch_size, config.image_size)
    trial = TrialSteps(config, images, device, settings["steps"])
    bare = BareSteps(trial, images)
    started = time.perf_counter()
    fixed = next(trial.batches)
    for _ in range(2):  # warm-up: compilation, allocator, cudnn autotuning
        trial.step()
        bare.step()
    synchronize(device)
    warmup_seconds = time.perf_counter() - started
    trial_times, bare_times, fed_times = [], [], []
    for turn in range(settings["repeats"]):
        order = [(trial_times, trial.step), (bare_times, bare.step)]
        for timings, step in order if turn % 2 == 0 else order[::-1]:
            timings.append(seconds_per_step(step, settings["steps"], device))
        fed_times.append(seconds_per_step(lambda: trial.step(fixed), settings["steps"], device))
    trial_seconds, bare_seconds = statistics.median(trial_times), statistics.median(bare_times)
    result = {"compiled": compiled, "warmup_seconds": warmup_seconds,
              "trial_images_per_second": config.batch_size / trial_seconds,
              "bare_images_per_second": config.batch_size / bare_seconds,
              "trial_vs_bare": bare_seconds / trial_seconds,
              "input_wait_fraction": max(0.0, 1 - statistics.median(fed_times) / trial_seconds),
              "placement": trial.feeder.placement}
    if device.type == "cuda":
        flops = step_flops(trial, fixed)
        result["gflop_per_step"] = flops / 1e9
        result["achieved_tflops"] = flops / trial_seconds / 1e12
        result["host_syncs_per_step"] = syncs_in_one_step(trial)
    return result


def memory_rows(settings: dict, device: torch.device) -> list[dict]:
    """The planner's pretraining estimate (what the allocator hands out) beside the measured peak."""
    rows = []
    for backbone, batch_size in settings["memory"]:
        config = TrialConfig.from_dict({"method": "simsiam" if "bit" in backbone else "simclr",
                                        "backbone": backbone, "image_size": settings["memory_image_size"],
                                        "batch_size": batch_size})
        estimate = estimate_memory(config, 1, False).pretraining
        row = {"method": config.method, "backbone": backbone, "batch_size": batch_size,
               "estimate_gib": estimate / GIB}
        if device.type == "cuda":
            torch.cuda.empty_cache()
            measured = measure_pretraining(config)
            row |= {"measured_gib": measured / GIB, "measured_over_estimate": measured / estimate}
            torch.cuda.empty_cache()
        rows.append(row)
    return rows


def augmentation_rate(settings: dict, device: torch.device) -> float:
    """Images per second through two SimCLR views on the device (uint8 in, normalized floats out)."""
    images = random_images(settings["augment_images"], settings["image_size"]).to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    batch = min(256, len(images))

    def two_views() -> None:
        for start in range(0, len(images), batch):
            for _ in range(2):
                augment(images[start:start + batch], SIMCLR_RECIPE, generator)

    two_views()
    return len(images) / statistics.median(seconds_per_step(two_views, 1, device) for _ in range(3))


def importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes on the CPU: a check of the check")
    parser.add_argument("--out", type=Path, required=True, help="folder for the summary file")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    device = torch.device("cpu" if args.quick or not torch.cuda.is_available() else "cuda")
    if not args.quick and device.type != "cuda":
        raise SystemExit("error: no CUDA GPU here; run `bash benchmarks/gpu_check.sh --quick` "
                         "for the CPU check")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    started = time.perf_counter()
    summary: dict = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                                 "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                                 "quick": args.quick},
                     "settings": {key: value for key, value in settings.items() if key != "memory"}}
    if device.type == "cuda":
        summary["bf16_matmul_peak_tflops"] = bf16_matmul_peak(device) / 1e12
    summary["step"] = [step_comparison(settings, device, compiled) for compiled in (False, True)]
    if "bf16_matmul_peak_tflops" in summary:
        for row in summary["step"]:
            row["mfu"] = row["achieved_tflops"] / summary["bf16_matmul_peak_tflops"]
    summary["memory"] = memory_rows(settings, device)
    low, high = settings["largest_batch"]
    summary["largest_batch"] = largest_batch(
        {"backbone": settings["backbone"], "method": "simclr", "image_size": settings["image_size"],
         "dataset": "shapes"}, device, start=low, limit=high)
    summary["augmentation_images_per_second"] = augmentation_rate(settings, device)
    summary["seconds"] = time.perf_counter() - started
    summary["cluster_packages_loaded"] = sorted(name for name in CLUSTER_PACKAGES if name in sys.modules)
    if args.quick:
        summary["cluster_packages_blocked"] = not any(importable(name) for name in CLUSTER_PACKAGES)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
