"""A stand-in for published pretrained weights, shared by the backbone and initialization tests."""

from collections.abc import Callable

import torch
from torch import nn


def published_stand_in(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """The model `build` makes under `seed`, with every tensor perturbed (BatchNorm variances drawn
    in [0.5, 2]): weights no fresh initialization has, so a test can tell they were loaded."""
    torch.manual_seed(seed)
    model = build()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.05)
    return model
