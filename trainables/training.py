"""One trial's training in plain torch: its initialized backbone, its state, its step.

Nothing here knows Ray: `trainables.loop` wraps these in Ray Train (process group, DDP, reports,
checkpoints), and benchmarks and the GPU check call them directly. A step takes a uint8 batch
already on the device, augments each view there, and runs forward and backward under bf16
autocast on a GPU; it never waits for the device.
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from trainables.activation_checkpointing import enable_activation_checkpointing
from trainables.augmentations import AugmentationRecipe, augment, without_color
from trainables.config import TrialConfig
from trainables.data import DATASETS
from trainables.devices import (
    compile_forward_and_loss,
    enable_fast_cuda_kernels,
    memory_format,
    mixed_precision,
)
from trainables.distributed import convert_batchnorm_for_distributed
from trainables.initializations import build_initialized_backbone
from trainables.methods import RunShape, SSLMethod, build_method
from trainables.methods.base import StepOutput, ViewSpec
from trainables.optimization import build_optimizer


@dataclass
class TrainingState:
    method: SSLMethod  # the unwrapped module: its state dict has no "module." prefix
    model: nn.Module  # what the loop calls: the method (compiled in place), in DDP on several workers
    optimizer: torch.optim.Optimizer
    epoch: int = 0  # the last finished epoch
    step: int = 0
    collapse_std: float = float("nan")  # of the last finished epoch
    embedding_dim: int = 1
    epoch_metrics: dict = dataclasses.field(default_factory=dict)  # the last finished epoch's report


def build_trial_backbone(config: TrialConfig) -> tuple[nn.Module, int, str]:
    """The trial's backbone initialized as its config says: (backbone, feature dim, a one-line
    report of what was loaded). The one place a config becomes an initialized network: the loop
    and block similarity's rebuilt initializations both come from here. weights_path must name
    a local file by now (the loop hands in the config with shipped weights written out)."""
    return build_initialized_backbone(
        config.backbone, config.init, norm=config.norm, weight_standardization=config.weight_standardization,
        weight_scaling=config.weight_scaling, dead_filters=config.dead_filters,
        weights_dir=config.weights_dir, weights_path=config.resolved_weights_path,
        cifar_stem=config.cifar_stem, seed=config.seed, method=config.method,
        weights_sha256=config.weights_sha256,
    )


def build_training_state(config: TrialConfig, world_size: int, device: torch.device,
                         data_parallel: Callable[[nn.Module], nn.Module] | None = None,
                         announce: bool = True) -> TrainingState:
    """Backbone, method, optimizer on `device`. With several workers the BatchNorm layers are
    converted to span them, and `data_parallel` wraps the method (Ray Train's DDP in the loop).
    With `compile`, the method's forward and loss are torch.compile'd in place, before DDP wraps
    it; the first step then compiles (seconds to minutes)."""
    enable_fast_cuda_kernels(device)
    backbone, feature_dim, report = build_trial_backbone(config)
    if announce:
        print(f"[{config.init} {config.backbone}] {report}", flush=True)
    method = build_method(config.method, backbone, feature_dim, config.method_params,
                          RunShape(config.batch_size, config.epochs, config.image_size))
    if world_size > 1:
        # BatchNorm statistics must be those of the global batch, as on one worker.
        method = convert_batchnorm_for_distributed(method, device)
    method = method.to(device, memory_format=memory_format(device))
    if config.activation_checkpointing:  # after the BatchNorm conversion: its hooks go on the new layers
        enable_activation_checkpointing(method.backbone)
    if config.compile:
        compile_forward_and_loss(method, config.compile_backend)
        if announce:
            print(f"[{config.method}] forward and loss torch.compile'd ({config.compile_backend}): "
                  "the first step compiles them", flush=True)
    model = method if data_parallel is None or world_size == 1 else data_parallel(method)
    optimizer = build_optimizer(method, config.resolved_optimizer, config.momentum,
                                config.resolved_weight_decay)
    return TrainingState(method=method, model=model, optimizer=optimizer)


def training_view_specs(method: SSLMethod, config: TrialConfig, grayscale: bool) -> list[ViewSpec]:
    """Each view's recipe: the method's paper recipe, with vertical flips where the dataset allows,
    and no colour operations on one-channel images (hue, saturation and grayscale mean nothing)."""
    view_specs = [spec._replace(recipe=with_dataset_flips(spec.recipe, config.resolved_pretrain_dataset))
                  for spec in method.views(config.image_size)]
    if grayscale:
        view_specs = [spec._replace(recipe=without_color(spec.recipe)) for spec in view_specs]
    return view_specs


def train_step(state: TrainingState, images: torch.Tensor, view_specs: list[ViewSpec],
               generator: torch.Generator, epoch: int, total_steps: int) -> StepOutput:
    """One optimizer step on a uint8 batch already on the device: augment each view, forward,
    backward, step. No host-device sync: the loss stays on the device."""
    device = images.device
    views = [augment(images, spec.recipe, generator, output_size=spec.size)
             .to(memory_format=memory_format(device)) for spec in view_specs]
    with mixed_precision(device):
        output = state.model(views)
    state.optimizer.zero_grad(set_to_none=True)
    output.loss.backward()
    state.method.before_optimizer_step(epoch)
    state.optimizer.step()
    state.step += 1
    state.method.after_optimizer_step(state.step / total_steps)
    return output


def with_dataset_flips(recipe: AugmentationRecipe, dataset: str) -> AugmentationRecipe:
    """The recipe, flipping up-down with probability 0.5 when the dataset's images have no up/down
    orientation (dermoscopy, pathology, fundus: DatasetSpec.vertical_flip)."""
    if DATASETS[dataset].vertical_flip:
        return dataclasses.replace(recipe, vertical_flip_probability=0.5)
    return recipe
