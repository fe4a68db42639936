"""Learning-rate schedules: pure functions of the step."""

import math


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
