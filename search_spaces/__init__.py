"""Named sweeps. Add a sweep: write one module here defining `SWEEP`, and add it below.

A sweep is data, not machinery: its hypothesis, the grid of axes, and the fixed trial
parameters. The orchestrator turns it into a Ray Tune run.
"""

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, as a signed contrast of cells that the paper says is positive.

    A cell is a set of axis values (e.g. {"init": "imagenet", "method": "none"}); the contrast is
    sum(weight x mean metric of the cell), matched over the sweep's other axes. "A beats B" is
    [(A, +1), (B, -1)]; "the batch-size drop is smaller for P2X than for P1X" is
    [(P2X@32, +1), (P2X@1024, -1), (P1X@32, -1), (P1X@1024, +1)].
    """

    text: str  # the paper's claim in one line, as the report prints it
    terms: tuple[tuple[dict[str, Any], float], ...]
    metric: str = "linear/test_accuracy"  # a final metric, or a per-epoch one (its last value)


@dataclass(frozen=True)
class Search:
    """A model-based search instead of a grid: Optuna's TPE proposes, ASHA stops the laggards."""

    # parameter (flat key, e.g. "method_params.temperature") -> (distribution, low, high);
    # distributions: "uniform", "loguniform", "int"
    space: dict[str, tuple[str, float, float]]
    metric: str  # reported every epoch, so ASHA can compare trials early
    mode: str = "max"
    num_samples: int = 20
    smoke_num_samples: int = 4


@dataclass(frozen=True)
class Screening:
    """Two stages in one command (orchestrator/screening.py): stage 1 runs the grid's `init` axis
    with `method=none` (each prior's frozen features, cheap); stage 2 runs the grid's methods on
    the `top_k` priors of stage 1 (mean `metric` over the other axes and seeds) plus `baseline`."""

    top_k: int = 2
    smoke_top_k: int = 1  # under --smoke: so that a few priors already show one left out
    baseline: str = "random"
    metric: str = "linear/test_balanced_accuracy"


@dataclass(frozen=True)
class Sweep:
    name: str
    description: str  # one line, shown by --list
    grid: dict[str, list[Any]]  # axis -> values; the trials are their Cartesian product
    params: dict[str, Any] = field(default_factory=dict)  # fixed trial parameters
    hypothesis: str = ""
    # Per-method hyperparameters (method -> method_params), e.g. CPU-sized heads for a smoke run.
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    claims: tuple[Claim, ...] = ()
    # What --smoke changes: the same axes scaled down to minutes on 2 CPUs.
    smoke_params: dict[str, Any] = field(default_factory=dict)
    smoke_grid: dict[str, list[Any]] = field(default_factory=dict)  # axes replaced under --smoke
    search: Search | None = None
    screening: Screening | None = None  # which_prior's two stages instead of one grid
    # Groups of grid axes that vary together: their i-th values make one cell (zipped, not crossed),
    # e.g. (("pretrain_dataset", "dataset"),) with the axes written by `paired_axes`.
    paired: tuple[tuple[str, ...], ...] = ()


def paired_axes(names: tuple[str, ...], rows: tuple[tuple[Any, ...], ...]) -> dict[str, list[Any]]:
    """Grid axes from rows of values that go together: ("a", "b"), ((1, 2), (3, 4)) ->
    {"a": [1, 3], "b": [2, 4]}; name the group in the Sweep's `paired` too."""
    if any(len(row) != len(names) for row in rows):
        raise ValueError(f"every row of paired axes {names} needs {len(names)} values")
    return {name: [row[position] for row in rows] for position, name in enumerate(names)}


def _registry() -> dict[str, Sweep]:
    from search_spaces import (
        ablation_batchsize,
        ablation_imagesize,
        bit_simsiam,
        hpo_simclr,
        methods_on_breastmnist,
        methods_on_shapes,
        prior_weights,
        smoke,
        transfusion,
        which_prior,
    )

    modules = (smoke, ablation_batchsize, ablation_imagesize, prior_weights, bit_simsiam, transfusion,
               hpo_simclr, methods_on_shapes, methods_on_breastmnist, which_prior)
    return {module.SWEEP.name: module.SWEEP for module in modules}


SWEEPS: dict[str, Sweep] = _registry()
