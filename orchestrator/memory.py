"""How much GPU memory a trial needs per GPU, and the fewest workers that make it fit.

The estimate is computed on the CPU, without a GPU, in a fraction of a second per distinct
(method, backbone, image size):

- Activations: the method (backbone and heads) runs one training forward pass on PyTorch's `meta`
  device (shapes only: no data, no compute) under `torch.autograd.graph.saved_tensors_hooks`; the
  bytes of the tensors autograd keeps for the backward pass, parameters excluded, are the
  activation memory. Measured at two batch sizes: what grows with the batch is per image, the rest
  (BiT's standardized weights) is fixed. Every view of the method counts at its own size (SwAV's
  small crops at theirs). Pretraining is measured under `CudaAutocastReplay`, which applies CUDA
  bf16 autocast's dtype rules on the meta device (the loop trains under that autocast on GPUs):
  convolutions and matmuls take bf16 inputs, GroupNorm, LayerNorm, softmax and the losses run in
  fp32. So a conv + BatchNorm + ReLU keeps about 4 bytes per element and a conv + GroupNorm + ReLU
  about 10 (GroupNorm keeps its fp32 input, ReLU its fp32 output, the next conv a bf16 copy).
  Fine-tuning and feature extraction are fp32, and measured so.
- Model states: fp32 weights, gradients and the optimizer's one momentum buffer (SGD and LARS)
  per trainable parameter; weights only for frozen copies (BYOL's target, MoCo's key encoder);
  autocast's cached bf16 copies of the trainable weights; DDP's gradient buckets on 2+ workers.
- The evaluation on rank 0 after pretraining: fine-tuning trains a copy of the backbone in fp32
  on the whole batch (one view) while the pretraining states are still on the GPU.
- Fixed costs: the CUDA context, cuDNN/cuBLAS workspaces, NCCL buffers, and the caching
  allocator's margin (constants below, each with its source).

`fit_to_gpus` then gives a trial the fewest workers (GPUs; negatives and BatchNorm statistics are
already global across workers, trainables/distributed.py) whose per-GPU estimate fits the node's
GPU memory less the share kept for a resident training split (trainables/batches.py keeps
the uint8 split on the GPU when it fits RESIDENT_MEMORY_FRACTION of it), and activation
checkpointing (trainables/activation_checkpointing.py) only where no worker count fits without it.
benchmarks/memory_check.py compares the estimate with torch.cuda's measurement.
"""

import contextlib
import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from orchestrator.resources import PlanningError, ResourcePlan
from trainables.activation_checkpointing import checkpoint_segments, enable_activation_checkpointing
from trainables.backbones import build_backbone
from trainables.batches import RESIDENT_MEMORY_FRACTION
from trainables.config import TrialConfig
from trainables.methods import METHODS, SSLMethod, build_method

GIB = 1024**3
# A view is fp32 with three channels whatever the data's: gray data is stored as one channel and
# expanded when the view is normalized (trainables.augmentations), so its views weigh the same.
# The stored split itself is counted by its real bytes (trainables.batches.resident_bytes).
VIEW_CHANNELS = 3
# fp32 weight + fp32 gradient + one fp32 momentum buffer (torch.optim.SGD with momentum, timm's
# Lars): 12 bytes per trainable parameter.
BYTES_PER_TRAINABLE_PARAMETER = 4 + 4 + 4
BYTES_PER_FROZEN_PARAMETER = 4  # an EMA copy: weights only, no gradient, no optimizer state
# torch.autocast caches the bf16 cast of every trainable weight for the forward pass.
BYTES_AUTOCAST_WEIGHT_CACHE = 2
# DistributedDataParallel's gradient buckets: the gradients themselves are views into them
# (trainables/loop.py: gradient_as_bucket_view=True), so no second fp32 copy; the bf16
# compression hook's cast of one bucket at a time (25 MiB) is within the allocator margin.
BYTES_DDP_BUCKETS = 0
# The CUDA context of a torch process: 300-500 MiB with CUDA 12's lazy module loading (nvidia-smi
# of an idle torch process after its first kernel); outside torch's allocator, so
# torch.cuda.max_memory_allocated never shows it.
CUDA_CONTEXT_BYTES = int(0.5 * GIB)
# cuDNN convolution workspaces (cudnn.benchmark picks algorithms that ask for up to several hundred
# MiB) and cuBLAS/cuBLASLt workspaces: a stated allowance, not measured here.
WORKSPACE_BYTES = int(0.5 * GIB)
# NCCL's communication buffers on 2+ workers: NCCL_BUFFSIZE (4 MiB) per channel and peer, a few
# hundred MiB per process at most for ring all-reduce on one GPU per node.
NCCL_BYTES = int(0.25 * GIB)
# The caching allocator rounds blocks up and fragments: what it reserves runs above what is
# allocated; 10% is the margin kept.
ALLOCATOR_MARGIN = 1.10
# trainables/evaluation/probes.py: extract_features' default batch (the kNN monitor, evaluation).
FEATURE_BATCH = 256
# The batch the meta-device measurement runs at (see saved_tensor_bytes), and the view size at
# which a method's heads are measured (the heads see features, whatever the image size).
MEASURED_BATCH = 7
HEADS_VIEW_SIZE = 8


FP32, BF16_AUTOCAST = "fp32", "bf16-autocast"


class CudaAutocastReplay(TorchFunctionMode):
    """CUDA bf16 autocast's dtype rules, replayed where torch.autocast cannot run them (the meta
    device; CPU autocast's own lists differ: it runs group_norm in bf16).

    Applied at the torch-function level, above autograd, as autocast is: the casts are autograd
    ops, so each layer keeps the dtype it would keep on a GPU. The lists are the parts of
    torch's CUDA autocast op lists (aten/src/ATen/autocast_mode.cpp) that the backbones and
    heads here call: matmuls and convolutions in bf16 (parameters cast once per pass, as
    autocast's weight cache does), normalizations other than BatchNorm, softmax, exp/log and the
    losses in fp32; everything else in the dtype of its inputs (BatchNorm and ReLU after a
    bf16 conv stay bf16). While it is on, torch's CUDA autocast flag is on too (it touches no
    tensor off a GPU), so that code which turns autocast off (the losses' `full_precision`) is
    replayed in fp32 as on a GPU.
    """

    LOWER_PRECISION = {F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
                       F.conv_transpose3d, F.linear, F.prelu, torch.matmul, torch.Tensor.matmul,
                       torch.Tensor.__matmul__, torch.mm, torch.Tensor.mm, torch.bmm, torch.Tensor.bmm,
                       torch.addmm, torch.baddbmm, torch.einsum}
    FULL_PRECISION = {F.group_norm, F.layer_norm, F.softmax, F.log_softmax, torch.softmax,
                      torch.log_softmax, torch.Tensor.softmax, torch.Tensor.log_softmax, torch.exp,
                      torch.Tensor.exp, torch.log, torch.Tensor.log, torch.logsumexp, F.cross_entropy,
                      F.nll_loss, F.mse_loss, F.smooth_l1_loss, F.l1_loss, F.kl_div,
                      F.binary_cross_entropy_with_logits, F.cosine_similarity, torch.cdist, torch.pow,
                      torch.Tensor.pow, torch.Tensor.__pow__, torch.rsqrt, torch.Tensor.rsqrt, torch.cumsum}

    def __init__(self, parameters) -> None:
        super().__init__()
        self.parameters = {id(parameter): parameter for parameter in parameters}
        self.casts: dict[int, torch.Tensor] = {}

    def __enter__(self) -> "CudaAutocastReplay":
        self.was_enabled = torch.is_autocast_enabled("cuda")
        torch.set_autocast_enabled("cuda", True)
        return super().__enter__()

    def __exit__(self, *exception: object) -> None:
        torch.set_autocast_enabled("cuda", self.was_enabled)
        super().__exit__(*exception)

    def parameter_casts(self) -> set[int]:
        """Storages of the bf16 parameter copies made in the pass (autocast's weight cache)."""
        return {cast.untyped_storage()._cdata for cast in self.casts.values()}

    def _cast(self, value: object, dtype: torch.dtype) -> object:
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != dtype:
            if id(value) in self.parameters and dtype == torch.bfloat16:
                if id(value) not in self.casts:
                    self.casts[id(value)] = value.to(dtype)
                return self.casts[id(value)]
            return value.to(dtype)
        if isinstance(value, list | tuple):
            return type(value)(self._cast(item, dtype) for item in value)
        return value

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        dtype = (torch.bfloat16 if func in self.LOWER_PRECISION
                 else torch.float32 if func in self.FULL_PRECISION else None)
        if dtype is not None and torch.is_autocast_enabled("cuda"):  # not inside `full_precision`
            args = tuple(self._cast(arg, dtype) for arg in args)
            kwargs = {key: self._cast(value, dtype) for key, value in kwargs.items()}
        return func(*args, **kwargs)


@dataclass(frozen=True)
class ActivationProfile:
    """Bytes autograd keeps for the backward pass (fp32), per image and fixed, and the working
    memory of the backward pass: its largest kept tensor and its largest checkpointed block."""

    per_image: float
    fixed: float
    largest_per_image: float
    segment_per_image: float
    input_per_image: float  # the fp32 views themselves, held by the loop

    def kept(self, batch: int) -> float:
        return self.fixed + self.per_image * batch

    def peak(self, batch: int, checkpointing: bool) -> float:
        """Forward's kept tensors plus the backward pass's working set: the gradient of a layer's
        output and input alive at once (2 x the largest tensor) and, with checkpointing, one
        block's activations recomputed."""
        working = 2 * self.largest_per_image + (self.segment_per_image if checkpointing else 0.0)
        return self.kept(batch) + working * batch


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak GPU memory of one trial's busiest GPU, in bytes, with its parts."""

    num_workers: int
    activation_checkpointing: bool
    pretraining: float  # one worker's pretraining step: model states + activations
    evaluation: float  # rank 0 after pretraining: states + fine-tuning or feature extraction
    fixed: float  # CUDA context, workspaces, NCCL

    @property
    def total(self) -> float:
        return max(self.pretraining, self.evaluation) * ALLOCATOR_MARGIN + self.fixed

    @property
    def busiest(self) -> str:
        return "pretraining" if self.pretraining >= self.evaluation else "evaluation"


def _frozen_items(mapping: dict) -> tuple:
    return tuple(sorted(mapping.items()))


def trial_activation_profile(config: TrialConfig, checkpointing: bool, pretraining: bool,
                             precision: str = FP32) -> ActivationProfile:
    """The activation profile of the trial's pretraining step (every view through the backbone,
    then the method's heads and loss), or with `pretraining=False` of its fine-tuning step (the
    backbone on one view at the image size). `precision`: FP32, or BF16_AUTOCAST (CUDA's rules)."""
    slim = config.init == "slim"
    if not pretraining:
        return backbone_profile(config.backbone, config.image_size, config.cifar_stem, slim, checkpointing,
                                precision)
    params = _frozen_items(config.method_params)
    sizes = view_sizes(config.method, params, config.image_size)
    views = [backbone_profile(config.backbone, size, config.cifar_stem, slim, checkpointing, precision)
             for size in sizes]
    heads = heads_profile(config.method, params, config.backbone, config.cifar_stem, slim, precision)
    return ActivationProfile(
        per_image=sum(view.per_image for view in views) + heads.per_image,
        fixed=sum(view.fixed for view in views) + heads.fixed,
        largest_per_image=max(view.largest_per_image for view in views),
        segment_per_image=max(view.segment_per_image for view in views),
        input_per_image=sum(view.input_per_image for view in views),
    )


@functools.lru_cache(maxsize=64)
def view_sizes(method: str, method_params: tuple, image_size: int) -> tuple[int, ...]:
    with torch.device("meta"):
        network = build_method(method, nn.Linear(1, 1), 1, dict(method_params))
    return tuple(view.size for view in network.views(image_size))


@functools.lru_cache(maxsize=128)
def backbone_profile(backbone: str, image_size: int, cifar_stem: bool, slim: bool,
                     checkpointing: bool, precision: str = FP32) -> ActivationProfile:
    """One view through the backbone in training mode, measured on the meta device."""
    with torch.device("meta"):
        model, _ = build_backbone(backbone, cifar_stem=cifar_stem, slim=slim)
    model.train()
    if checkpointing:
        enable_activation_checkpointing(model)
    measured = saved_tensor_bytes(model, [image_size], MEASURED_BATCH, segments=checkpoint_segments(model),
                                  precision=precision)
    if checkpointing:  # the backward pass recomputes blocks as they were without checkpointing
        plain = backbone_profile(backbone, image_size, cifar_stem, slim, False, precision)
        largest, segment = plain.largest_per_image, plain.segment_per_image
    else:
        largest, segment = measured.largest_tensor / MEASURED_BATCH, measured.largest_segment / MEASURED_BATCH
    return ActivationProfile(per_image=measured.per_image / MEASURED_BATCH, fixed=measured.fixed,
                             largest_per_image=largest, segment_per_image=segment,
                             input_per_image=VIEW_CHANNELS * image_size * image_size * 4)


class PooledColour(nn.Module):
    """A stand-in backbone for measuring a method's heads alone: (N, 3, H, W) -> (N, feature_dim)
    through the mean colour and one linear layer (a few bytes per image of its own)."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(3, feature_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(images.mean(dim=(2, 3)))


@functools.lru_cache(maxsize=128)
def heads_profile(method: str, method_params: tuple, backbone: str, cifar_stem: bool,
                  slim: bool, precision: str = FP32) -> ActivationProfile:
    """The method's heads and loss on the backbone's features, measured on the meta device."""
    with torch.device("meta"):
        _, feature_dim = build_backbone(backbone, cifar_stem=cifar_stem, slim=slim)
        network = build_method(method, PooledColour(feature_dim), feature_dim, dict(method_params))
    network.train()
    measured = saved_tensor_bytes(network, [HEADS_VIEW_SIZE] * len(network.views(HEADS_VIEW_SIZE)),
                                  MEASURED_BATCH, precision=precision)
    return ActivationProfile(per_image=measured.per_image / MEASURED_BATCH, fixed=measured.fixed,
                             largest_per_image=measured.largest_tensor / MEASURED_BATCH,
                             segment_per_image=0.0, input_per_image=0.0)


@dataclass(frozen=True)
class SavedBytes:
    """Bytes autograd keeps for the backward pass, each storage once, parameters and buffers
    excluded: those of tensors whose first dimension is a multiple of the batch (per image), the
    rest (fixed), the largest one, and the most that one call of one checkpoint segment kept."""

    per_image: int
    fixed: int
    largest_tensor: int
    largest_segment: int


def saved_tensor_bytes(network: nn.Module, sizes: Sequence[int], batch: int,
                       segments: Sequence[nn.Module] = (), precision: str = FP32) -> SavedBytes:
    """Run one training forward pass of `network` on images (batch, 3, size, size) per view size
    (a method takes the list of views; a backbone takes one view) on the network's device, and
    count the bytes autograd keeps for the backward pass. `segments`: modules whose own kept bytes
    are measured per call (checkpointed blocks). `precision`: FP32, or BF16_AUTOCAST (the pass runs
    under CudaAutocastReplay; its bf16 copies of parameters are autocast's weight cache, counted
    with the model states, not here).

    A batch of 7 tells batch tensors from others: no layer here is 7 (or 14, 21...) wide."""
    device = next(network.parameters()).device
    excluded = {tensor.untyped_storage()._cdata for tensor in [*network.parameters(), *network.buffers()]}
    kept: dict[int, tuple[int, bool]] = {}
    segment_totals: list[int] = []
    open_segments: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in excluded and storage._cdata not in kept:
            batched = tensor.dim() > 0 and tensor.shape[0] % batch == 0
            kept[storage._cdata] = (storage.nbytes(), batched)
        return tensor

    def total() -> int:
        return sum(size for size, _ in kept.values())

    def segment_start(module: nn.Module, inputs: tuple) -> None:
        open_segments.append(total())

    def segment_end(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        segment_totals.append(total() - open_segments.pop())

    handles = [handle for segment in segments
               for handle in (segment.register_forward_pre_hook(segment_start),
                              segment.register_forward_hook(segment_end))]
    views = [torch.zeros(batch, 3, size, size, device=device) for size in sizes]
    replay = CudaAutocastReplay(network.parameters()) if precision == BF16_AUTOCAST else None
    try:
        with (torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
              replay or contextlib.nullcontext()):
            network(views if isinstance(network, SSLMethod) else views[0])
        if replay is not None:
            for storage in replay.parameter_casts():
                kept.pop(storage, None)
    finally:
        for handle in handles:
            handle.remove()
    return SavedBytes(per_image=sum(size for size, batched in kept.values() if batched),
                      fixed=sum(size for size, batched in kept.values() if not batched),
                      largest_tensor=max((size for size, batched in kept.values() if batched), default=0),
                      largest_segment=max(segment_totals, default=0))


@functools.lru_cache(maxsize=64)
def parameter_bytes(method: str, method_params: tuple, backbone: str, cifar_stem: bool,
                    slim: bool) -> tuple[int, int, int, int]:
    """(trainable parameters, frozen parameters, buffer bytes, backbone parameters) of the method."""
    with torch.device("meta"):
        model, feature_dim = build_backbone(backbone, cifar_stem=cifar_stem, slim=slim)
        network = build_method(method, model, feature_dim, dict(method_params))
    trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in network.parameters() if not p.requires_grad)
    buffers = sum(b.numel() * b.element_size() for b in network.buffers())
    return trainable, frozen, buffers, sum(p.numel() for p in model.parameters())


def estimate_memory(config: TrialConfig, num_workers: int, checkpointing: bool) -> MemoryEstimate:
    """The per-GPU peak of the trial's busiest GPU on `num_workers` GPUs (bf16 autocast, as the
    loop trains on GPUs)."""
    trainable, frozen, buffers, backbone_parameters = parameter_bytes(
        config.method, _frozen_items(config.method_params), config.backbone, config.cifar_stem,
        config.init == "slim")
    pretrains = METHODS[config.method].pretrains
    distributed = num_workers > 1
    if pretrains:
        states = trainable * (BYTES_PER_TRAINABLE_PARAMETER + BYTES_DDP_BUCKETS * distributed)
        states += frozen * BYTES_PER_FROZEN_PARAMETER + buffers
        profile = trial_activation_profile(config, checkpointing, pretraining=True, precision=BF16_AUTOCAST)
        local_batch = config.batch_size // num_workers
        activations = profile.peak(local_batch, checkpointing)
        activations += profile.input_per_image * local_batch  # the views stay fp32
        pretraining = states + trainable * BYTES_AUTOCAST_WEIGHT_CACHE + activations
    else:  # `none`: the method is built and moved to the GPU, nothing trains it
        states = (trainable + frozen) * 4 + buffers
        pretraining = states
    backbone_profile = trial_activation_profile(config, checkpointing, pretraining=False)
    features = 3 * backbone_profile.largest_per_image * FEATURE_BATCH  # no_grad: a layer's in and out
    evaluation = states + features
    if config.eval == "finetune":  # fp32, the whole batch on rank 0, a trained copy of the backbone
        finetuning = backbone_parameters * BYTES_PER_TRAINABLE_PARAMETER
        finetuning += backbone_profile.peak(config.batch_size, checkpointing)
        finetuning += backbone_profile.input_per_image * config.batch_size
        evaluation = max(evaluation, states + finetuning)
    fixed = CUDA_CONTEXT_BYTES + WORKSPACE_BYTES + (NCCL_BYTES if distributed else 0)
    return MemoryEstimate(num_workers, checkpointing, pretraining, evaluation, fixed)


def worker_counts(config: TrialConfig, max_workers: int) -> list[int]:
    """The trial's own worker count, then the larger ones up to `max_workers` that split its batch
    evenly (the loop gives every worker batch_size // num_workers images) into 2+ images each."""
    larger = [count for count in range(config.num_workers + 1, max_workers + 1)
              if config.batch_size % count == 0 and config.batch_size // count >= 2]
    return [config.num_workers, *larger]


def fit_to_gpus(config: TrialConfig, gpu_memory_bytes: float, max_workers: int,
                label: str = "trial") -> tuple[TrialConfig, MemoryEstimate]:
    """The trial with the fewest workers (at least its own) that fit GPUs of `gpu_memory_bytes`,
    without activation checkpointing where possible; a PlanningError naming the trial and the fix
    where even `max_workers` GPUs with checkpointing do not fit it. The share of each GPU that the
    loop may fill with the resident training split is not the trial's to use."""
    usable = gpu_memory_bytes * (1 - RESIDENT_MEMORY_FRACTION)
    counts = worker_counts(config, max_workers)
    for checkpointing in dict.fromkeys((config.activation_checkpointing, True)):
        for count in counts:
            estimate = estimate_memory(config, count, checkpointing)
            if estimate.total <= usable:
                sized = dataclasses.replace(config, num_workers=count, activation_checkpointing=checkpointing)
                return sized, estimate
    smallest = min((estimate_memory(config, count, True) for count in counts), key=lambda e: e.total)
    spread = "" if config.eval == "finetune" and smallest.busiest == "evaluation" else \
        f" even on {smallest.num_workers} GPU(s)"
    raise PlanningError(
        f"{label} ({config.method}, {config.backbone}, {config.image_size} px, batch {config.batch_size}, "
        f"eval {config.eval}) needs about {smallest.total / GIB:.1f} GiB per GPU{spread} with activation "
        f"checkpointing ({smallest.busiest} is the peak), more than the {usable / GIB:.1f} GiB a trial "
        f"may use of the cluster's {gpu_memory_bytes / GIB:.1f} GiB GPUs (the rest holds the training "
        "split); lower batch_size or image_size, or add a node type with larger GPUs"
    )


def fit_to_plan(configs: Sequence[TrialConfig],
                plan: ResourcePlan) -> list[tuple[TrialConfig, MemoryEstimate | None]]:
    """Every trial as it will run on the plan's cluster, with its per-GPU estimate: fitted to the
    GPUs (fit_to_gpus) where their memory is known, as configured (with an estimate) where it is
    not, and as configured without an estimate on a cluster without GPUs."""
    if not plan.use_gpu:
        return [(config, None) for config in configs]
    if plan.gpu_memory_bytes is None:
        return [(config, estimate_memory(config, config.num_workers, config.activation_checkpointing))
                for config in configs]
    return [fit_to_gpus(config, plan.gpu_memory_bytes, plan.worker_slots, label=f"trial {index}")
            for index, config in enumerate(configs)]
