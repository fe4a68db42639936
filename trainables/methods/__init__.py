"""SSL methods, registered by name. Add a method: write one file here and add one row below.

The name is the same in the file, this table, the CLI (`--set method=...`) and MLflow. A method's
hyperparameters are the keyword arguments of its `__init__`: the default is the paper's value,
and the annotation says what is allowed (a range from trainables.number_ranges such as
`PositiveFloat`, a `Literal[...]` of choices, or bool), so `--set method_params.NAME=VALUE`
is checked before anything runs.
"""

import functools
import inspect
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

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
from trainables.number_ranges import NumberRange

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


@dataclass(frozen=True)
class Hyperparameter:
    """One keyword hyperparameter of a method, as its `__init__` declares it."""

    default: Any  # the paper's value
    type: type  # int, float, bool or str
    allowed_range: NumberRange | None = None  # for numbers: declared with an Annotated range
    choices: tuple[str, ...] | None = None  # for strings: declared as a Literal


@functools.cache
def method_hyperparameters(name: str) -> dict[str, Hyperparameter]:
    """The method's keyword hyperparameters: defaults, types, ranges and choices, in signature order
    (read once per method; do not change the dict)."""
    init = METHODS[name].__init__
    hints = typing.get_type_hints(init, include_extras=True)
    declared = {}
    for parameter in inspect.signature(init).parameters.values():
        if parameter.default is inspect.Parameter.empty:
            continue
        hint = hints.get(parameter.name, type(parameter.default))
        if typing.get_origin(hint) is Annotated:
            base, *extras = typing.get_args(hint)
            ranges = [extra for extra in extras if isinstance(extra, NumberRange)]
            declared[parameter.name] = Hyperparameter(parameter.default, base, ranges[0] if ranges else None)
        elif typing.get_origin(hint) is Literal:
            declared[parameter.name] = Hyperparameter(parameter.default, str, choices=typing.get_args(hint))
        else:
            declared[parameter.name] = Hyperparameter(parameter.default, hint)
    return declared


def method_parameters(name: str) -> dict[str, Any]:
    """The method's keyword hyperparameters and their paper defaults."""
    return {key: hyperparameter.default for key, hyperparameter in method_hyperparameters(name).items()}


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


__all__ = ["METHODS", "PRETRAINING_METHODS", "Hyperparameter", "RunShape", "SSLMethod", "StepOutput",
           "build_method", "method_hyperparameters", "method_parameters", "resolved_method_params"]
