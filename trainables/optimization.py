"""The optimizer and its learning rates: parameter groups, and schedules that are pure functions
of the step."""

import math

import timm.optim
import torch

from trainables.methods import SSLMethod

CONSTANT_LEARNING_RATE = "constant_learning_rate"  # a param-group flag: no decay after warmup
LEARNING_RATE_RATIO = "learning_rate_ratio"  # a param-group factor on the schedule's rate


def scaled_learning_rate(base_learning_rate: float, batch_size: int, rule: str = "linear") -> float:
    """The Goyal et al. scaling rule: base_lr * batch/256 (or its square root)."""
    if rule == "linear":
        return base_learning_rate * batch_size / 256
    if rule == "sqrt":
        return base_learning_rate * math.sqrt(batch_size / 256)
    raise ValueError(f"unknown learning-rate scaling rule {rule!r}; use 'linear' or 'sqrt'")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, peak: float, decay: bool = True) -> float:
    """Linear warmup from 0 to `peak`, then cosine decay to 0 at `total_steps` (or, with
    decay=False, `peak` from the end of warmup on: SimSiam's fixed predictor learning rate)."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if not decay:
        return peak
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


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
