"""The interface every SSL method implements.

A method is an `nn.Module` that owns the backbone and its heads. `forward(views)` is one
training step's loss (so DDP wraps the whole method and syncs every trainable parameter);
`after_optimizer_step` is where momentum encoders move.
"""

import contextlib
import functools
import math
import typing
from collections.abc import Callable
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar

import torch
from torch import nn

from trainables.augmentations import MOCO_V2_RECIPE, AugmentationRecipe

LossFunction = TypeVar("LossFunction", bound=Callable[..., torch.Tensor])


class StepOutput(NamedTuple):
    loss: torch.Tensor  # scalar
    embedding: torch.Tensor  # (N, D) projector output of the first view, for the collapse metric


class ViewSpec(NamedTuple):
    size: int  # output side in pixels
    recipe: AugmentationRecipe  # the view's augmentations, crop area fraction included


def full_precision(loss: LossFunction) -> LossFunction:
    """Compute a loss in fp32 (or wider) even inside a bf16 autocast region: half-precision
    tensor arguments are upcast, and autocast is off inside."""

    def upcast(value: object) -> object:
        if isinstance(value, torch.Tensor) and value.dtype in (torch.float16, torch.bfloat16):
            return value.float()
        if isinstance(value, list | tuple):
            return type(value)(upcast(item) for item in value)
        return value

    @functools.wraps(loss)
    def wrapper(*args: object, **kwargs: object) -> torch.Tensor:
        with contextlib.ExitStack() as stack:
            for device_type in ("cuda", "cpu"):
                if torch.is_autocast_enabled(device_type):
                    stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
            return loss(*(upcast(a) for a in args), **{k: upcast(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]


class RunShape(NamedTuple):
    """What a method's run-dependent defaults may depend on (see SSLMethod.run_defaults)."""

    batch_size: int  # global, over all workers
    epochs: int
    image_size: int  # pixels per side of the global views


class SSLMethod(nn.Module):
    name: ClassVar[str]
    # The paper's optimizer ("sgd" or "lars"), base learning rate (at batch 256) and weight decay;
    # the trial config can override each.
    optimizer: ClassVar[str] = "sgd"
    base_learning_rate: ClassVar[float]
    weight_decay: ClassVar[float]
    pretrains: ClassVar[bool] = True  # False for `none`: the probe runs on the initialization
    # The cost of one training step relative to two views through the backbone once (extra
    # forward passes of targets and key encoders, small crops): the dry run's GPU-hour estimate.
    relative_step_cost: ClassVar[float]
    # Submodules whose learning rate stays at its peak after warmup instead of decaying
    # (SimSiam's predictor).
    constant_learning_rate_modules: ClassVar[tuple[str, ...]] = ()
    # Learning rate of biases and normalization parameters as a fraction of the weights' (Barlow
    # Twins: 0.024). The loop applies it where they have a group of their own (LARS).
    bias_and_norm_learning_rate_ratio: float = 1.0

    @classmethod
    def run_defaults(cls, run: RunShape, params: dict[str, Any]) -> dict[str, Any]:
        """Defaults that depend on the run, given the trial's method_params (which override
        them): e.g. SwAV's queue, on below a batch size and scaled to the run. None here."""
        return {}

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        raise NotImplementedError

    def views(self, image_size: int) -> list[ViewSpec]:
        """The augmented views of each image per step and their recipes: two global crops with
        MoCo v2's recipe unless a method says otherwise."""
        return [ViewSpec(image_size, MOCO_V2_RECIPE)] * 2

    def before_optimizer_step(self, epoch: int) -> None:
        """Called after backward, before the optimizer step: a method may drop gradients here."""

    def after_optimizer_step(self, progress: float) -> None:
        """Called after every optimizer step with progress = step / total_steps in [0, 1]."""


HeadNorm = Literal["batchnorm", "groupnorm"]  # the heads' normalization (SimSiam's head_norm)
HEAD_NORMS: tuple[str, ...] = typing.get_args(HeadNorm)


def feature_norm(kind: str, dim: int, affine: bool = True) -> nn.Module:
    """BatchNorm1d, or GroupNorm over (N, dim) features (32 groups, or fewer when dim is small)."""
    if kind == "batchnorm":
        return nn.BatchNorm1d(dim, affine=affine)
    if kind == "groupnorm":
        return nn.GroupNorm(math.gcd(32, dim), dim, affine=affine)
    raise ValueError(f"unknown head norm {kind!r}; valid: {', '.join(HEAD_NORMS)}")


def projection_mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2,
                   last_batch_norm: bool = False, norm: str = "batchnorm") -> nn.Sequential:
    """Linear-norm-ReLU layers then a final Linear (optionally followed by a norm without affine).

    norm: "batchnorm" (every paper's default) or "groupnorm" (BiT-style heads).
    """
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(dim, hidden_dim, bias=False), feature_norm(norm, hidden_dim),
                   nn.ReLU(inplace=True)]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=not last_batch_norm))
    if last_batch_norm:
        layers.append(feature_norm(norm, out_dim, affine=False))
    return nn.Sequential(*layers)
