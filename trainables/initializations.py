"""Initializations: the "prior weights" axis. Add one by adding a row to `INITIALIZATIONS`.

Each entry takes a freshly built backbone and returns it initialized, as pure torch code.
"""

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class InitializationSpec:
    description: str
    apply: Callable[[nn.Module, str], nn.Module]  # (backbone, backbone name) -> backbone


INITIALIZATIONS: dict[str, InitializationSpec] = {
    "random": InitializationSpec(
        "the framework's default initialization", lambda backbone, backbone_name: backbone
    ),
}


def initialize(backbone: nn.Module, backbone_name: str, init: str) -> nn.Module:
    if init not in INITIALIZATIONS:
        raise ValueError(f"unknown init {init!r}; valid inits: {', '.join(INITIALIZATIONS)}")
    return INITIALIZATIONS[init].apply(backbone, backbone_name)
