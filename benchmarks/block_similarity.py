"""Cost of the per-block similarity analysis (`block_similarity=true`) at the end of a trial.

Run: python benchmarks/block_similarity.py [--backbone cbr_nano] [--image-size 32] [--probe-images 256]
                                          [--bootstrap 10] [--repeats 3]

The trial it stands for pretrains (SSL) and fine-tunes from random init, so all three comparisons
run: initialization vs pretrained, before vs after fine-tuning, random vs random (four networks'
activations: the rebuilt initialization is also the first random one). The "trained" networks are
perturbed copies; the cost does not depend on the weights. Printed, medians over repeats: the whole
analysis, and side by side its parts (the networks' forward passes over the probe images, one pass
of the measures over every block and comparison, the bootstrap of the depth contrast) and the
ratio of the whole to the forward passes alone.

Smoke scale: the defaults. A realistic scale: --backbone resnet50 --image-size 224 --repeats 1.
"""

import argparse
import copy
import statistics
import time

import torch

from trainables.config import TrialConfig
from trainables.evaluation.block_similarity import (
    block_activations,
    block_similarity_metrics,
    compare,
    initialization,
)


def perturbed(backbone: torch.nn.Module, scale: float, seed: int) -> torch.nn.Module:
    moved = copy.deepcopy(backbone)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in moved.parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.add_(scale * parameter.std().nan_to_num() * noise)
    return moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="cbr_nano")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--probe-images", type=int, default=256)
    parser.add_argument("--bootstrap", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = TrialConfig.from_dict({"backbone": args.backbone, "method": "simclr", "eval": "finetune",
                                    "block_similarity": True})
    count = args.probe_images
    images = torch.randint(0, 256, (count, 3, args.image_size, args.image_size), dtype=torch.uint8)
    initial = initialization(config, None, "random", config.seed)
    second_random = initialization(config, None, "random", config.seed + 1)
    pretrained = perturbed(initial, 0.1, 1).to(device)
    finetuned = perturbed(pretrained.cpu(), 0.1, 2).to(device)
    pairs = [("initial", "pretrained"), ("pretrained", "finetuned"), ("initial", "random")]

    times: dict[str, list[float]] = {"total": [], "forward": [], "measures": [], "bootstrap": []}
    for _ in range(args.repeats):
        started = time.perf_counter()
        block_similarity_metrics(config, pretrained, finetuned, images, device, probe_count=count,
                                 bootstrap_samples=args.bootstrap)
        times["total"].append(time.perf_counter() - started)

        started = time.perf_counter()
        activations = {name: block_activations(network.to(device), images, device)
                       for name, network in (("initial", initial), ("pretrained", pretrained),
                                             ("finetuned", finetuned), ("random", second_random))}
        times["forward"].append(time.perf_counter() - started)

        started = time.perf_counter()
        for first, second in pairs:
            compare(activations[first], activations[second], device)
        times["measures"].append(time.perf_counter() - started)

        started = time.perf_counter()
        for first, second in pairs[:2]:
            for _ in range(args.bootstrap):
                compare(activations[first], activations[second], device, torch.randint(count, (count,)))
        times["bootstrap"].append(time.perf_counter() - started)

    median = {part: statistics.median(values) for part, values in times.items()}
    print(f"{args.backbone}, {args.image_size} px, {count} probe images, bootstrap {args.bootstrap}, "
          f"{device}, {torch.get_num_threads()} threads; medians of {args.repeats}")
    print("| part | seconds |\n|---|---|")
    print(f"| whole analysis (block_similarity_metrics) | {median['total']:.2f} |")
    print(f"| forward passes of 4 networks over the probe images | {median['forward']:.2f} |")
    print(f"| measures, every block x 3 comparisons | {median['measures']:.2f} |")
    print(f"| bootstrap of the depth contrast, 2 comparisons | {median['bootstrap']:.2f} |")
    print(f"whole / forward passes alone: {median['total'] / median['forward']:.1f}x")


if __name__ == "__main__":
    main()
