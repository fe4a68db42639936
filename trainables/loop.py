"""The Ray Train loop that runs on every worker of a trial.

Build data, model and optimizer; for each epoch train, monitor, checkpoint and report; then
evaluate with a linear probe on frozen features. Only rank 0's metrics reach Ray Tune. This is
the only module below `orchestrator/` that imports Ray: the pieces it calls (trainables.training,
trainables.evaluation.protocol, trainables.trial_checkpoint) run with torch alone.
"""

import math
import os
import tempfile
import time
from pathlib import Path

import ray
import ray.train
import ray.train.torch
import torch
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from trainables import metrics
from trainables.augmentations import describe_recipes
from trainables.batches import TrainingBatches
from trainables.checkpoint_schedule import CheckpointSchedule
from trainables.config import TrialConfig
from trainables.data import ImageSplits, PretrainingPool, pool_from_arrays
from trainables.data.pretraining import content_hash
from trainables.evaluation import embedding_std, is_collapsed
from trainables.evaluation.protocol import evaluate, timed_monitor
from trainables.monitoring import is_monitored_epoch
from trainables.optimization import scaled_learning_rate, set_learning_rates
from trainables.resource_usage import images_per_second, peak_memory
from trainables.saved_backbone import BackboneArchitecture
from trainables.shipped_priors import local_prior_file
from trainables.shipped_weights import local_weights_file
from trainables.training import (
    TrainingState,
    build_training_state,
    train_step,
    training_view_specs,
)
from trainables.trial_checkpoint import ARTIFACTS_FOLDER, load_state, save_final, save_state
from trainables.trial_data import trial_data


def train_loop_per_worker(config_dict: dict, shared_data: ray.ObjectRef | None = None,
                          shared_weights: ray.ObjectRef | None = None,
                          shared_pretraining: ray.ObjectRef | None = None,
                          shared_prior: ray.ObjectRef | None = None) -> None:
    """One worker's whole trial. `shared_data` holds the evaluation dataset's decoded pool in Ray's
    object store (trainables.data.pool_to_arrays), decoded once by the sweep's driver, and
    `shared_pretraining` the pool of a pretraining dataset of the trial's own; the worker cuts its
    seed's splits from them (trial_data); without them it loads from `data_root` itself.
    `shared_weights`: the bytes of the weights an MLflow URI in
    weights_path names, resolved by the driver (trainables.shipped_weights). `shared_prior`: the
    prior's file from the driver's disk (trainables.shipped_priors)."""
    config = TrialConfig.from_dict(config_dict)
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    torch.manual_seed(config.seed)

    data, pretraining = trial_data(config, *(None if ref is None else pool_from_arrays(ray.get(ref))
                                             for ref in (shared_data, shared_pretraining)))
    # The shipped weights' file lives as long as the trial: block similarity rebuilds the
    # initialization from it after pretraining.
    with local_weights_file(config, None if shared_weights is None else ray.get(shared_weights)) as built, \
            local_prior_file(built, None if shared_prior is None else ray.get(shared_prior)) as prior_built:
        train_and_evaluate(prior_built, data, rank, world_size, device, pretraining)


def train_and_evaluate(config: TrialConfig, data: ImageSplits, rank: int, world_size: int,
                       device: torch.device, pretraining: PretrainingPool | None = None) -> None:
    """Pretrain from the last checkpoint on (or from the start), report every epoch, evaluate.

    SSL pretrains on `pretraining` (None: the evaluation's train split); the kNN monitor and the
    evaluation use the labeled splits of `data`."""
    pretrain_images = data.train_images if pretraining is None else pretraining.images
    pretrain_grayscale = data.grayscale if pretraining is None else pretraining.grayscale
    state = build_training_state(config, world_size, device, data_parallel=distributed_data_parallel,
                                 announce=rank == 0)
    if restore_latest_checkpoint(state) and state.epoch_metrics:
        # The restored epoch's report may never have reached Tune (the driver or a worker died
        # between the checkpoint and the report): report it again. The MLflow logger keeps each
        # epoch once, so the history has every epoch exactly once either way.
        ray.train.report(state.epoch_metrics)

    steps_per_epoch = len(pretrain_images) // config.batch_size
    if steps_per_epoch == 0 and state.method.pretrains:  # method none trains nothing
        raise ValueError(
            f"batch_size {config.batch_size} is larger than the {len(pretrain_images)} pretraining "
            f"images of {config.resolved_pretrain_dataset}; use a smaller batch_size"
        )
    total_steps = steps_per_epoch * config.epochs
    peak_learning_rate = scaled_learning_rate(
        config.resolved_learning_rate, config.batch_size, config.learning_rate_scaling,
    )
    view_specs = training_view_specs(state.method, config, pretrain_grayscale)
    epochs = range(state.epoch + 1, config.epochs + 1) if state.method.pretrains else range(0)
    batches = TrainingBatches(pretrain_images, device, config.batch_size, world_size, rank)
    checkpoints = CheckpointSchedule(config.checkpoint_every, config.epochs)

    if state.epoch == 0:
        # Epoch 0 is the initialization itself: where each prior starts on the kNN curve.
        # With the data's fingerprint: two runs with equal split hashes used the same images.
        initial_metrics = {metrics.EPOCH: 0, metrics.SPLIT_HASH: data.split_hash(),
                           metrics.SKIPPED_IMAGES: data.skipped_images,
                           metrics.PRETRAIN_IMAGES: len(pretrain_images),
                           metrics.PRETRAIN_OVERLAP_REMOVED: getattr(pretraining, "overlap_removed", 0)}
        # Only rank 0's report reaches Tune: one pass over the pool's bytes, not one per worker.
        # Method none pretrains on nothing: no pretraining input.
        if rank == 0 and state.method.pretrains:
            initial_metrics[metrics.PRETRAIN_HASH] = content_hash(pretrain_images)
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
        if checkpoints.is_due(epoch):
            write_started = time.perf_counter()
            report_with_checkpoint(epoch_metrics, state, rank)
            checkpoints.record(epoch, time.perf_counter() - write_started,
                               epoch_metrics[metrics.PRETRAIN_EPOCH_SECONDS])
            if rank == 0:
                print(f"checkpointed epoch {epoch}; next in {checkpoints.period} epochs", flush=True)
        else:
            ray.train.report(epoch_metrics)

    final_metrics = {metrics.EPOCH: state.epoch}
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            final_metrics.update(evaluate(state.method.backbone, data, config, device,
                                          Path(directory) / ARTIFACTS_FOLDER))
            if state.method.pretrains:
                collapsed = is_collapsed(state.collapse_std, state.embedding_dim)
                final_metrics[metrics.COLLAPSED] = float(collapsed)
            save_final(state, state.method.backbone, BackboneArchitecture.of_trial(config), Path(directory))
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(final_metrics, checkpoint=checkpoint)


def restore_latest_checkpoint(state: TrainingState) -> bool:
    """Continue from the latest checkpoint Ray Train holds for this run name, if any (True then)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return False
    with checkpoint.as_directory() as directory:
        load_state(state, Path(directory))
    print(f"resumed from checkpoint at epoch {state.epoch} (step {state.step})", flush=True)
    return True


def report_with_checkpoint(epoch_metrics: dict, state: TrainingState, rank: int) -> None:
    """Report the epoch's metrics; rank 0 attaches the model, heads, optimizer and position."""
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            save_state(state, Path(directory))
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(epoch_metrics, checkpoint=checkpoint)


def distributed_data_parallel(method: nn.Module) -> nn.Module:
    """Ray Train's DDP around the method. Buffers are not broadcast from rank 0: SyncBatchNorm
    already agrees, and per-process state (SwAV's queue) must stay each process's own. Gradients
    are views into DDP's buckets (no second copy of them); on GPUs they travel as bf16 (half the
    bytes between single-GPU nodes; the all-reduce's sum is cast back to fp32)."""
    model = ray.train.torch.prepare_model(
        method, move_to_device=False,
        parallel_strategy_kwargs={"broadcast_buffers": False, "gradient_as_bucket_view": True})
    if next(method.parameters()).device.type == "cuda":
        model.register_comm_hook(None, default_hooks.bf16_compress_hook)
    return model
