"""SSL methods, registered by name. Add a method: write one file here and add one row below.

The name is the same in the file, this table, the CLI (`--set method=...`) and MLflow.
"""

import inspect
from typing import Any

from torch import nn

from trainables.methods.barlowtwins import BarlowTwins
from trainables.methods.base import RunShape, SSLMethod, StepOutput
from trainables.methods.byol import BYOL
from trainables.methods.mocov2 import MoCoV2
from trainables.methods.none import NoPretraining
from trainables.methods.simclr import SimCLR
from trainables.methods.simsiam import SimSiam
from trainables.methods.swav import SwAV
from trainables.methods.vicreg import VICReg

METHODS: dict[str, type[SSLMethod]] = {
    SimCLR.name: SimCLR,
    SimSiam.name: SimSiam,
    BYOL.name: BYOL,
    BarlowTwins.name: BarlowTwins,
    VICReg.name: VICReg,
    MoCoV2.name: MoCoV2,
    SwAV.name: SwAV,
    NoPretraining.name: NoPretraining,
}

# The methods that pretrain (all but `none`), sorted by name.
PRETRAINING_METHODS: tuple[str, ...] = tuple(
    sorted(name for name, method in METHODS.items() if method.pretrains)
)


def method_parameters(name: str) -> dict[str, Any]:
    """The method's keyword hyperparameters and their paper defaults."""
    signature = inspect.signature(METHODS[name].__init__)
    return {
        parameter.name: parameter.default
        for parameter in signature.parameters.values()
        if parameter.default is not inspect.Parameter.empty
    }


def resolved_method_params(name: str, overrides: dict[str, Any], run: RunShape | None) -> dict[str, Any]:
    """The trial's method_params over the method's run-dependent defaults (none without a run)."""
    defaults = METHODS[name].run_defaults(run, overrides) if run is not None else {}
    return defaults | overrides


def build_method(name: str, backbone: nn.Module, feature_dim: int, overrides: dict[str, Any],
                 run: RunShape | None = None) -> SSLMethod:
    """The method with the trial's method_params; with `run`, its run-dependent defaults too."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[name](backbone, feature_dim, **resolved_method_params(name, overrides, run))


__all__ = ["METHODS", "PRETRAINING_METHODS", "RunShape", "SSLMethod", "StepOutput", "build_method",
           "method_parameters", "resolved_method_params"]
