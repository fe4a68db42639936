"""Where training changed the network: per-block similarity of each block's output to its start.

The representational analysis of Transfusion (Raghu, Zhang, Kleinberg, Bengio 2019, Section 5):
SVCCA between a block's representations before and after training, per block, with the
similarity of two random initializations as the baseline; linear CKA (Kornblith et al. 2019)
beside it. Measures are in `similarity`; this module picks the blocks, runs the probe images and
compares, on the worker at the end of a trial:

- pretraining: the initialization (rebuilt from the config with the trial's seed, so this also
  holds after a resume from a checkpoint) vs the pretrained backbone; only when the method
  pretrains;
- finetuning: the backbone fine-tuning started from vs the fine-tuned one (eval=finetune);
- random_baseline: two random initializations of the architecture, seeds s and s + 1 (the
  trial's own initialization at "epoch 0" when it is random).

Blocks: the output of every stage timm's `feature_info` names for the resnets (the stem, then
four stages) and of the four CBR blocks (trainables.backbones). Probe set: DEFAULT_PROBE_IMAGES
validation images, the same fixed subset (seed PROBE_SEED) for every trial of a split. Conv maps
(N, C, H, W) become data points x channels as in the SVCCA paper's conv treatment: every channel
is a neuron, and each image contributes POSITIONS_PER_IMAGE spatial positions (all of them when
the map is smaller), sampled once per block with a fixed seed, the same for both networks; CKA
sees the same matrix. Everything is float64.

Cost (`python benchmarks/block_similarity.py`, README "Per-block similarity"): about 40 s at
smoke scale (cbr_nano, 32 px) on one loaded CPU core, most of it the bootstrap; for resnet50 at
224 px the float64 SVDs of 8,192 x 2,048 matrices make it hours on a CPU: a GPU-worker setting.
"""

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from trainables import metrics
from trainables.augmentations import normalize
from trainables.backbones import CBRNetwork
from trainables.config import TrialConfig
from trainables.evaluation.similarity import MEASURES
from trainables.methods import METHODS
from trainables.training import build_trial_backbone

DEFAULT_PROBE_IMAGES = 256
POSITIONS_PER_IMAGE = 32
PROBE_SEED = 0  # fixed: every trial on the same split sees the same probe images and positions
BASELINE_SEED_OFFSET = 1  # the baseline's second random initialization has seed s + 1
BOOTSTRAP_SAMPLES = 10  # resamples of the probe images for the depth contrast's std
BATCH_SIZE = 64
FIGURE_FILE = "similarity_by_depth.png"

Activations = dict[str, torch.Tensor]  # block -> (images, positions, channels), float32 on the CPU


def block_modules(backbone: nn.Module) -> dict[str, str]:
    """Block name (metrics.SIMILARITY_BLOCKS, in depth order) -> the module whose output it is."""
    if isinstance(backbone, CBRNetwork):
        modules = [f"blocks.{index}" for index in range(len(backbone.blocks))]
        names = [f"block{index}" for index in range(1, len(modules) + 1)]
    elif getattr(backbone, "feature_info", None):  # timm: the stem, then one entry per stage
        modules = [entry["module"] for entry in backbone.feature_info]
        names = ["stem", *(f"block{index}" for index in range(1, len(modules)))]
    else:
        raise ValueError(f"do not know the blocks of {type(backbone).__name__}; per-block similarity needs "
                         "timm's feature_info or a CBRNetwork")
    unnamed = [name for name in names if name not in metrics.SIMILARITY_BLOCKS]
    if unnamed:
        raise ValueError(f"{type(backbone).__name__} has more blocks than trainables.metrics."
                         f"SIMILARITY_BLOCKS names ({', '.join(unnamed)} missing); add them there")
    return dict(zip(names, modules, strict=True))


def probe_images(images: torch.Tensor, count: int = DEFAULT_PROBE_IMAGES,
                 seed: int = PROBE_SEED) -> torch.Tensor:
    """A fixed, seeded subset of `count` images (all of them when there are fewer), in split order."""
    chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:count]
    return images[chosen.sort().values]


@torch.no_grad()
def block_activations(backbone: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu",
                      positions_per_image: int = POSITIONS_PER_IMAGE, seed: int = PROBE_SEED,
                      batch_size: int = BATCH_SIZE) -> Activations:
    """Each block's output on uint8 images (N, C, H, W), C = 1 or 3, in eval mode, via forward hooks: block ->
    (N, positions, channels). A block's positions depend only on `seed`, its depth and its map
    size, so two networks of the same architecture are sampled at the same places."""
    modules = block_modules(backbone)
    named = dict(backbone.named_modules())
    collected: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    positions: dict[str, torch.Tensor] = {}
    batch_start = [0]

    def hook_for(name: str, depth: int) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            flat = output.detach().float().flatten(2)  # (B, C, H x W)
            if name not in positions:
                generator = torch.Generator().manual_seed(seed * 1_000 + depth)
                order = torch.rand(len(images), flat.shape[2], generator=generator).argsort(dim=1)
                positions[name] = order[:, :positions_per_image]
            chosen = positions[name][batch_start[0]:batch_start[0] + len(flat)].to(flat.device)
            sampled = flat.gather(2, chosen[:, None, :].expand(-1, flat.shape[1], -1))
            collected[name].append(sampled.transpose(1, 2).cpu())
        return hook

    handles = [named[module].register_forward_hook(hook_for(name, depth))
               for depth, (name, module) in enumerate(modules.items())]
    was_training = backbone.training
    backbone.eval()
    try:
        for start in range(0, len(images), batch_size):
            batch_start[0] = start
            backbone(normalize(images[start:start + batch_size].to(device)))
    finally:
        for handle in handles:
            handle.remove()
        backbone.train(was_training)
    return {name: torch.cat(parts) for name, parts in collected.items()}


def data_points(activations: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
    """(images, positions, channels) -> (images x positions, channels), optionally of some images."""
    if images is not None:
        activations = activations[images]
    return activations.flatten(0, 1)


def compare(first: Activations, second: Activations, device: torch.device | str = "cpu",
            images: torch.Tensor | None = None) -> dict[tuple[str, str], float]:
    """(measure, block) -> similarity of the two networks' activations of that block."""
    return {(measure, block): function(data_points(first[block], images).to(device),
                                       data_points(second[block], images).to(device))
            for block in first for measure, function in MEASURES.items()}


def depth_contrast(similarities: dict[tuple[str, str], float], measure: str, blocks: list[str]) -> float:
    """Mean similarity of the lower half of the blocks minus that of the upper half (the middle
    block of an odd count left out): positive when the lower blocks stayed closer to the start."""
    half = len(blocks) // 2
    lower = [similarities[measure, block] for block in blocks[:half]]
    upper = [similarities[measure, block] for block in blocks[-half:]]
    return sum(lower) / half - sum(upper) / half


def bootstrap_depth_contrast_std(first: Activations, second: Activations, device: torch.device | str,
                                 samples: int = BOOTSTRAP_SAMPLES,
                                 seed: int = PROBE_SEED) -> dict[str, float]:
    """measure -> std of the depth contrast over `samples` resamples of the probe images (with
    replacement): the spread the report's single-seed verdict needs."""
    blocks = list(first)
    count = len(next(iter(first.values())))
    generator = torch.Generator().manual_seed(seed)
    contrasts: dict[str, list[float]] = {measure: [] for measure in MEASURES}
    for _ in range(samples):
        resampled = compare(first, second, device, torch.randint(count, (count,), generator=generator))
        for measure in MEASURES:
            contrasts[measure].append(depth_contrast(resampled, measure, blocks))
    return {measure: float(torch.tensor(values, dtype=torch.float64).std())
            for measure, values in contrasts.items()}


def comparison_metrics(comparison: str, first: Activations, second: Activations, device: torch.device | str,
                       bootstrap_samples: int) -> dict[str, float]:
    """The comparison's per-block metrics, and (but for the baseline) its depth contrast and std."""
    similarities = compare(first, second, device)
    flat = {metrics.similarity_metric(comparison, measure, block): value
            for (measure, block), value in similarities.items()}
    if comparison == metrics.SIMILARITY_RANDOM_BASELINE or len(first) < 2:
        return flat
    spreads = {}  # fewer than 2 resamples: no std
    if bootstrap_samples > 1:
        spreads = bootstrap_depth_contrast_std(first, second, device, bootstrap_samples)
    for measure in MEASURES:
        name = metrics.similarity_metric(comparison, measure, metrics.SIMILARITY_DEPTH_CONTRAST)
        flat[name] = depth_contrast(similarities, measure, list(first))
        if measure in spreads:
            flat[name + metrics.STD_SUFFIX] = spreads[measure]
    return flat


def initialization(config: TrialConfig, init: str, seed: int) -> nn.Module:
    """The trial's architecture initialized as `init` with `seed`, built as the loop builds it."""
    backbone, _, _ = build_trial_backbone(dataclasses.replace(config, init=init, seed=seed))
    return backbone


def block_similarity_metrics(config: TrialConfig, trained: nn.Module,
                             finetuned: nn.Module | None, images: torch.Tensor, device: torch.device | str,
                             artifacts: Path | None = None,
                             probe_count: int = DEFAULT_PROBE_IMAGES,
                             bootstrap_samples: int = BOOTSTRAP_SAMPLES) -> dict[str, float]:
    """Every comparison that applies to the trial (see the module docstring) as flat metrics, and
    the by-depth figure in `artifacts`. `trained` is the backbone after pretraining (the
    initialization itself for method none), `finetuned` fine-tuning's copy or None, `images` the
    validation split (uint8)."""
    started = time.perf_counter()
    probe = probe_images(images, probe_count)

    def activations_of(backbone: nn.Module) -> Activations:
        return block_activations(backbone.to(device), probe, device)

    initial = activations_of(initialization(config, config.init, config.seed))
    pairs: dict[str, tuple[Activations, Activations]] = {}
    start_of_finetuning = initial
    if METHODS[config.method].pretrains:
        start_of_finetuning = activations_of(trained)
        pairs[metrics.SIMILARITY_PRETRAINING] = (initial, start_of_finetuning)
    if finetuned is not None:
        pairs[metrics.SIMILARITY_FINETUNING] = (start_of_finetuning, activations_of(finetuned))
    random_first = (initial if config.init == "random"
                    else activations_of(initialization(config, "random", config.seed)))
    random_second = activations_of(initialization(config, "random",
                                                  config.seed + BASELINE_SEED_OFFSET))
    pairs[metrics.SIMILARITY_RANDOM_BASELINE] = (random_first, random_second)

    flat: dict[str, float] = {}
    for comparison, (first, second) in pairs.items():
        flat.update(comparison_metrics(comparison, first, second, device, bootstrap_samples))
    if artifacts is not None:
        title = f"{config.method} / {config.init} / {config.backbone} / {config.dataset}"
        plot_similarity_by_depth(flat, artifacts / FIGURE_FILE, title)
    flat[metrics.SIMILARITY_SECONDS] = time.perf_counter() - started
    return flat


COMPARISON_LABELS = {
    metrics.SIMILARITY_PRETRAINING: "initialization vs pretrained",
    metrics.SIMILARITY_FINETUNING: "before vs after fine-tuning",
    metrics.SIMILARITY_RANDOM_BASELINE: "random init vs random init (baseline)",
}


def plot_similarity_by_depth(flat: dict[str, float], path: Path, title: str = "") -> Path:
    """One panel per measure, block on the x axis, one line per comparison present in `flat`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(9, 4), layout="constrained")
    FigureCanvasAgg(figure)
    for index, measure in enumerate(metrics.SIMILARITY_MEASURES):
        axes = figure.add_subplot(1, len(metrics.SIMILARITY_MEASURES), index + 1)
        for comparison, label in COMPARISON_LABELS.items():
            points = [(block, flat[name]) for block in metrics.SIMILARITY_BLOCKS
                      if (name := metrics.similarity_metric(comparison, measure, block)) in flat]
            if points:
                blocks, values = zip(*points, strict=True)
                style = ":" if comparison == metrics.SIMILARITY_RANDOM_BASELINE else "-"
                axes.plot(blocks, values, linestyle=style, marker="o", label=label)
        axes.set_ylim(0, 1.05)
        axes.set_xlabel("block (input side on the left)")
        axes.set_ylabel(f"{measure} similarity")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small", loc="lower left")
    figure.suptitle(f"similarity by depth: {title}" if title else "similarity by depth")
    figure.savefig(path, dpi=110)
    return path
