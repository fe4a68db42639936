"""The Ray Train loop that runs on every worker of a trial.

Build data, model and optimizer; for each epoch train, monitor, checkpoint and report; then
evaluate with a linear probe on frozen features. Only rank 0's metrics reach Ray Tune.
"""

import contextlib
import dataclasses
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.train
import ray.train.torch
import timm.optim
import torch
from torch import nn

from trainables import metrics
from trainables.augmentations import AugmentationRecipe, augment, describe_recipes, without_color
from trainables.batches import TrainingBatches
from trainables.checkpointing import enable_activation_checkpointing
from trainables.config import TrialConfig
from trainables.data import DATASETS, ImageSplits, load_dataset
from trainables.distributed import convert_batchnorm_for_distributed
from trainables.evaluation import (
    EvaluationResult,
    embedding_std,
    evaluation_metrics_to_flat_dict,
    extract_features,
    finetune,
    is_collapsed,
    knn_accuracy,
    plot_confusion_matrix,
    plot_tsne,
    probe_knn,
    probe_linear,
)
from trainables.evaluation.block_similarity import block_similarity_metrics
from trainables.initializations import build_initialized_backbone
from trainables.methods import RunShape, SSLMethod, build_method
from trainables.methods.base import StepOutput, ViewSpec
from trainables.monitoring import KNN_REFERENCE_IMAGES, is_monitored_epoch, knn_reference_indices
from trainables.resource_usage import images_per_second, peak_memory
from trainables.schedules import scaled_learning_rate, warmup_cosine
from trainables.shipped_weights import local_weights_file

CHECKPOINT_FILE = "state.pt"
BACKBONE_FILE = "backbone.pt"  # the final checkpoint's backbone alone, a pickled module (the MLflow model)
ARTIFACTS_FOLDER = "evaluation"  # inside the final checkpoint; the MLflow logger uploads it
CONFUSION_MATRIX_FIGURE = "confusion_matrix.png"
CONSTANT_LEARNING_RATE = "constant_learning_rate"  # a param-group flag: no decay after warmup
LEARNING_RATE_RATIO = "learning_rate_ratio"  # a param-group factor on the schedule's rate


@dataclass
class TrainingState:
    method: SSLMethod  # the unwrapped module: its state dict has no "module." prefix
    model: nn.Module  # what the loop calls: the method, wrapped in DDP on several workers
    optimizer: torch.optim.Optimizer
    epoch: int = 0  # the last finished epoch
    step: int = 0
    collapse_std: float = float("nan")  # of the last finished epoch
    embedding_dim: int = 1
    epoch_metrics: dict = dataclasses.field(default_factory=dict)  # the last finished epoch's report


def train_loop_per_worker(config_dict: dict, shared_data: ray.ObjectRef | None = None,
                          shared_weights: ray.ObjectRef | None = None) -> None:
    """One worker's whole trial. `shared_data` holds the trial's splits in Ray's object store
    (ImageSplits.to_arrays), decoded once by the sweep's driver; without it the worker loads the
    dataset from `data_root` itself. `shared_weights`: the bytes of the weights an MLflow URI in
    weights_path names, resolved by the driver (trainables.shipped_weights)."""
    config = TrialConfig.from_dict(config_dict)
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    torch.manual_seed(config.seed)

    if shared_data is not None:
        data = ImageSplits.from_arrays(ray.get(shared_data))
    else:
        data = load_dataset(config.dataset, config.image_size, config.seed, config.data_root,
                            split=config.split, download=config.download)
    with local_weights_file(config, None if shared_weights is None else ray.get(shared_weights)) as built:
        state = build_training_state(built, world_size, device)
    if restore_latest_checkpoint(state) and state.epoch_metrics:
        # The restored epoch's report may never have reached Tune (the driver or a worker died
        # between the checkpoint and the report): report it again. The MLflow logger keeps each
        # epoch once, so the history has every epoch exactly once either way.
        ray.train.report(state.epoch_metrics)

    steps_per_epoch = len(data.train_images) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"batch_size {config.batch_size} is larger than the {len(data.train_images)} training "
            f"images of {config.dataset}; use a smaller batch_size"
        )
    total_steps = steps_per_epoch * config.epochs
    peak_learning_rate = scaled_learning_rate(
        config.resolved_learning_rate, config.batch_size, config.learning_rate_scaling,
    )
    # Each view's recipe is the method's paper recipe, with vertical flips where the dataset allows.
    view_specs = [spec._replace(recipe=with_dataset_flips(spec.recipe, config.dataset))
                  for spec in state.method.views(config.image_size)]
    if data.grayscale:  # hue, saturation and grayscale conversion mean nothing on one channel
        view_specs = [spec._replace(recipe=without_color(spec.recipe)) for spec in view_specs]
    epochs = range(state.epoch + 1, config.epochs + 1) if state.method.pretrains else range(0)
    batches = TrainingBatches(data.train_images, device, config.batch_size, world_size, rank)

    if state.epoch == 0:
        # Epoch 0 is the initialization itself: where each prior starts on the kNN curve.
        # With the data's fingerprint: two runs with equal split hashes used the same images.
        initial_metrics = {metrics.EPOCH: 0, metrics.SPLIT_HASH: data.split_hash(),
                           metrics.SKIPPED_IMAGES: data.skipped_images}
        # The recipes actually used (after the dataset's flips and grayscale): MLflow keeps them.
        initial_metrics[metrics.AUGMENTATION_RECIPES] = describe_recipes(view_specs)
        initial_metrics[metrics.GRAYSCALE] = data.grayscale
        if rank == 0:
            backbone = state.method.backbone
            initial_metrics.update(timed_monitor(backbone, data, config, device))
        ray.train.report(initial_metrics)

    for epoch in epochs:
        started = time.perf_counter()
        state.model.train()
        # Same permutation on every worker, each takes its own slice: one global batch per step.
        epoch_seed = config.seed * 10_007 + epoch
        augmentation_generator = torch.Generator(device=device).manual_seed(epoch_seed * 1_000 + rank)
        loss_sum, collapse_sum = torch.zeros((), device=device), torch.zeros((), device=device)
        for images in batches.epoch(epoch_seed):
            learning_rate = set_learning_rates(state.optimizer, state.step, total_steps,
                                               config.warmup_epochs * steps_per_epoch, peak_learning_rate)
            output = train_step(state, images, view_specs, augmentation_generator, epoch, total_steps)
            loss_sum += output.loss.detach()  # no .item(): that would be a sync point every step
            collapse_sum += embedding_std(output.embedding)
        epoch_loss = (loss_sum / steps_per_epoch).item()
        if not math.isfinite(epoch_loss):
            raise FloatingPointError(
                f"{config.method} diverged: the pretraining loss is {epoch_loss} in epoch {epoch} at peak "
                f"learning rate {peak_learning_rate:.3g}; lower learning_rate or use optimizer=lars"
            )
        state.epoch = epoch
        state.collapse_std = (collapse_sum / steps_per_epoch).item()
        state.embedding_dim = output.embedding.shape[1]

        epoch_metrics = {
            metrics.EPOCH: epoch,
            metrics.PRETRAIN_LOSS: epoch_loss,
            metrics.PRETRAIN_COLLAPSE_STD: state.collapse_std,
            metrics.PRETRAIN_LEARNING_RATE: learning_rate,
            metrics.PRETRAIN_EPOCH_SECONDS: time.perf_counter() - started,
        }
        epoch_metrics[metrics.PRETRAIN_IMAGES_PER_SECOND] = images_per_second(
            steps_per_epoch * config.batch_size, epoch_metrics[metrics.PRETRAIN_EPOCH_SECONDS])
        epoch_metrics.update(peak_memory(device))
        if rank == 0:
            if is_monitored_epoch(epoch, config.epochs, config.knn_every):  # else no kNN value this epoch
                epoch_metrics.update(timed_monitor(state.method.backbone, data, config, device))
            print(f"[{config.method} batch {config.batch_size}] epoch {epoch}/{config.epochs} "
                  + " ".join(f"{k}={v:.4g}" for k, v in epoch_metrics.items() if k != metrics.EPOCH),
                  flush=True)
        state.epoch_metrics = epoch_metrics
        report_with_checkpoint(epoch_metrics, state, rank)

    final_metrics = {metrics.EPOCH: state.epoch}
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            final_metrics.update(evaluate(state.method.backbone, data, config, device,
                                          Path(directory) / ARTIFACTS_FOLDER))
            if state.method.pretrains:
                collapsed = is_collapsed(state.collapse_std, state.embedding_dim)
                final_metrics[metrics.COLLAPSED] = float(collapsed)
            save_state(state, Path(directory))
            torch.save(state.method.backbone, Path(directory) / BACKBONE_FILE)  # for the MLflow model
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(final_metrics, checkpoint=checkpoint)


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


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on GPUs, where convolutions in that layout are faster."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def mixed_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPUs (each loss upcasts itself to fp32); plain fp32 on CPUs."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_training_state(config: TrialConfig, world_size: int, device: torch.device) -> TrainingState:
    backbone, feature_dim, report = build_initialized_backbone(
        config.backbone, config.init, norm=config.norm, weight_standardization=config.weight_standardization,
        weight_scaling=config.weight_scaling, dead_filters=config.dead_filters,
        weights_dir=config.weights_dir, weights_path=resolved_weights_path(config),
        cifar_stem=config.cifar_stem, seed=config.seed, method=config.method,
    )
    if ray.train.get_context().get_world_rank() == 0:
        print(f"[{config.init} {config.backbone}] {report}", flush=True)
    method = build_method(config.method, backbone, feature_dim, config.method_params,
                          RunShape(config.batch_size, config.epochs, config.image_size))
    if world_size > 1:
        # BatchNorm statistics must be those of the global batch, as on one worker.
        method = convert_batchnorm_for_distributed(method, device)
    method = method.to(device, memory_format=memory_format(device))
    if config.activation_checkpointing:  # after the BatchNorm conversion: its hooks go on the new layers
        enable_activation_checkpointing(method.backbone)
    model = method
    if world_size > 1:
        # Buffers are not broadcast from rank 0: SyncBatchNorm already agrees, and per-process
        # state (SwAV's queue) must stay each process's own.
        model = ray.train.torch.prepare_model(
            method, move_to_device=False, parallel_strategy_kwargs={"broadcast_buffers": False}
        )
    optimizer = build_optimizer(method, config.resolved_optimizer, config.momentum,
                                config.resolved_weight_decay)
    return TrainingState(method=method, model=model, optimizer=optimizer)


def resolved_weights_path(config: TrialConfig) -> str | None:
    """weights_path with {method} and {backbone} filled in: P2X starts from the same method's
    ImageNet checkpoint, so one sweep can name every method's file at once."""
    if config.weights_path is None:
        return None
    return config.weights_path.format(method=config.method, backbone=config.backbone)


def build_optimizer(
    method: SSLMethod, name: str, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """SGD over every trainable parameter, or LARS (timm's) with biases and normalization
    parameters excluded from weight decay and from the trust-ratio adaptation (the SimCLR/BYOL
    recipe: timm's Lars adapts only groups whose weight decay is non-zero).

    Parameters of the method's `constant_learning_rate_modules` get groups of their own, marked
    CONSTANT_LEARNING_RATE: the loop keeps their learning rate at its peak after warmup. Groups of
    biases and norms only (LARS) get LEARNING_RATE_RATIO = the method's bias_and_norm_learning_rate_ratio.
    """
    constant_prefixes = tuple(f"{module}." for module in method.constant_learning_rate_modules)
    groups = []
    for constant in (False, True):
        members = [parameter for parameter_name, parameter in method.named_parameters()
                   if parameter.requires_grad and parameter_name.startswith(constant_prefixes) == constant]
        if name == "lars":  # weight decay (and so adaptation) for weights, not biases or norms
            decays = [([p for p in members if p.ndim > 1], weight_decay),
                      ([p for p in members if p.ndim <= 1], 0.0)]
        else:
            decays = [(members, weight_decay)]
        groups += [{"params": params, "weight_decay": decay, CONSTANT_LEARNING_RATE: constant}
                   for params, decay in decays if params]
    for group in groups:  # biases and norms in a group of their own (LARS) may learn at their own rate
        biases_and_norms = all(parameter.ndim <= 1 for parameter in group["params"])
        group[LEARNING_RATE_RATIO] = method.bias_and_norm_learning_rate_ratio if biases_and_norms else 1.0
    if name == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=momentum)
    if name == "lars":
        return timm.optim.Lars(groups, lr=0.0, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}; use 'sgd' or 'lars'")


def set_learning_rates(optimizer: torch.optim.Optimizer, step: int, total_steps: int, warmup_steps: int,
                       peak: float) -> float:
    """Warmup then cosine decay for every group, except that CONSTANT_LEARNING_RATE groups stay at
    the peak after warmup; each group's rate is times its LEARNING_RATE_RATIO. Returns the decaying
    learning rate (the one logged)."""
    for group in optimizer.param_groups:
        decay = not group[CONSTANT_LEARNING_RATE]
        group["lr"] = warmup_cosine(step, total_steps, warmup_steps, peak, decay=decay) * group.get(
            LEARNING_RATE_RATIO, 1.0)
    return warmup_cosine(step, total_steps, warmup_steps, peak)


def restore_latest_checkpoint(state: TrainingState) -> bool:
    """Continue from the latest checkpoint Ray Train holds for this run name, if any (True then)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return False
    with checkpoint.as_directory() as directory:
        saved = torch.load(Path(directory) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    state.method.load_state_dict(saved["method"])
    state.optimizer.load_state_dict(saved["optimizer"])
    for key in ("epoch", "step", "collapse_std", "embedding_dim"):
        setattr(state, key, saved[key])
    state.epoch_metrics = saved.get("epoch_metrics", {})
    print(f"resumed from checkpoint at epoch {state.epoch} (step {state.step})", flush=True)
    return True


def save_state(state: TrainingState, directory: Path) -> None:
    torch.save(
        {"method": state.method.state_dict(), "optimizer": state.optimizer.state_dict(),
         "epoch": state.epoch, "step": state.step,
         "collapse_std": state.collapse_std, "embedding_dim": state.embedding_dim,
         "epoch_metrics": state.epoch_metrics},
        directory / CHECKPOINT_FILE,
    )


def report_with_checkpoint(epoch_metrics: dict, state: TrainingState, rank: int) -> None:
    """Report the epoch's metrics; rank 0 attaches the model, heads, optimizer and position."""
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            save_state(state, Path(directory))
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(epoch_metrics, checkpoint=checkpoint)


def monitor_knn(backbone: nn.Module, data: ImageSplits, config: TrialConfig, device: torch.device,
                reference_size: int | None = KNN_REFERENCE_IMAGES) -> float:
    """kNN accuracy on the validation split against the monitor's reference subset of the training
    split (trainables.monitoring; None: all of it): the convergence curves' metric."""
    reference = knn_reference_indices(len(data.train_images), config.seed, reference_size)
    train_features = extract_features(backbone, data.train_images[reference], device=device)
    val_features = extract_features(backbone, data.val_images, device=device)
    return knn_accuracy(train_features, data.train_labels[reference], val_features, data.val_labels,
                        data.num_classes, k=config.knn_k)


def timed_monitor(backbone: nn.Module, data: ImageSplits, config: TrialConfig,
                  device: torch.device) -> dict[str, float]:
    """The kNN monitor's accuracy and its wall time, as metrics."""
    started = time.perf_counter()
    accuracy = monitor_knn(backbone, data, config, device)
    return {metrics.KNN_VAL_ACCURACY: accuracy, metrics.KNN_SECONDS: time.perf_counter() - started}


def evaluate(backbone: nn.Module, data: ImageSplits, config: TrialConfig, device: torch.device,
             artifacts: Path) -> dict[str, float]:
    """The trial's evaluation protocol, plus the last kNN monitor value (searchers and schedulers
    read it from every result); writes the confusion matrix and a t-SNE plot to `artifacts`.

    Features are computed once, in eval mode, and serve the monitor, the linear and kNN
    evaluations and the plot: those never touch the backbone. Fine-tuning trains a copy of it.
    """
    features = [extract_features(backbone, images, device=device)
                for images in (data.train_images, data.val_images, data.test_images)]
    reference = knn_reference_indices(len(data.train_images), config.seed)  # the monitor's, as every epoch
    monitor = knn_accuracy(features[0][reference], data.train_labels[reference], features[1], data.val_labels,
                           data.num_classes, k=config.knn_k)
    splits = (features[0], data.train_labels, features[1], data.val_labels, features[2], data.test_labels)
    result: EvaluationResult
    if config.eval == metrics.LINEAR_PREFIX:
        result = probe_linear(*splits, data.num_classes, label_fraction=config.label_fraction,
                              repeats=config.probe_repeats, focal_gamma=config.focal_gamma,
                              class_weighted=config.class_weighted, epochs=config.probe_epochs,
                              seed=config.seed)
    elif config.eval == metrics.KNN_PREFIX:
        result = probe_knn(*splits, data.num_classes, k=config.knn_k, label_fraction=config.label_fraction,
                           repeats=config.probe_repeats, seed=config.seed)
    else:
        recipe = with_dataset_flips(AugmentationRecipe(), config.dataset)
        if data.grayscale:
            recipe = without_color(recipe)
        result = finetune(backbone, data.train_images, data.train_labels, data.val_images, data.val_labels,
                          data.test_images, data.test_labels, data.num_classes,
                          epochs=config.finetune_epochs, batch_size=config.batch_size,
                          learning_rate=config.finetune_learning_rate, device=device,
                          augment_fn=lambda images: augment(images, recipe),
                          label_fraction=config.label_fraction, focal_gamma=config.focal_gamma,
                          class_weighted=config.class_weighted, seed=config.seed)
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "confusion_matrix.json").write_text(json.dumps(
        {"classes": list(data.class_names), "matrix": result.confusion_matrix}
    ))
    plot_confusion_matrix(result.confusion_matrix, data.class_names, artifacts / CONFUSION_MATRIX_FIGURE,
                          title=f"{config.method} / {config.init} / {config.dataset}: test confusion matrix")
    plot_tsne(features[2], data.test_labels, artifacts / "tsne_test.png", data.class_names,
              title=f"{config.method} / {config.init} / {config.dataset}: test embeddings", seed=config.seed)
    similarity = {}
    if config.block_similarity:  # per-block CKA and SVCCA of each trained network to its start
        similarity = block_similarity_metrics(config, resolved_weights_path(config), backbone,
                                              result.finetuned_backbone, data.val_images, device, artifacts)
    return {metrics.KNN_VAL_ACCURACY: monitor, **evaluation_metrics_to_flat_dict(result, config.eval),
            **similarity}
