"""which_prior's two stages (search_spaces.Screening): screen every prior cheaply, pretrain the best.

Stage 1 runs the grid's priors (`init` axis) with `method=none`: each prior's frozen features,
probed as the trial's evaluation protocol says. Stage 2 runs the grid's methods on the `top_k`
priors of stage 1, ranked by their mean `metric` over every other axis and seed, plus the
baseline (random initialization). Both stages are Tune experiments of one sweep run (the second
named `<sweep>-pretrain`), their trials children of one MLflow parent run, so the report sees
all of them; its recommendation is `orchestrator.which_prior`'s.

Which priors a machine has is decided before anything starts (`available_priors`): a prior that
does not fit the backbone, or whose weights are neither on disk nor downloadable, is left out
with one line saying why.
"""

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from search_spaces import Screening
from trainables.config import TrialConfig
from trainables.initializations import check_combination
from trainables.initializations.availability import DOWNLOADED_LATER, weights_availability
from trainables.missing_weights import offline_mode

SCREEN_METHOD = "none"  # stage 1: no pretraining, the prior's features as loaded
STAGE_2_SUFFIX = "-pretrain"  # stage 2's Tune experiment: <sweep>-pretrain in the storage path


@dataclass(frozen=True)
class RankedPrior:
    init: str
    mean: float  # mean of the screening metric over the prior's finished stage-1 trials
    trials: int


def available_priors(candidates: Iterable[str], params: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The candidates this machine can start from for the sweep's backbone, and a line for each
    one left out (why). Weights that are not on disk count when they can be downloaded: on a
    machine without internet, set HF_HUB_OFFLINE=1 and only what is on disk is screened."""
    backbone = str(params.get("backbone", TrialConfig.backbone))
    weights_dir = params.get("weights_dir", TrialConfig.weights_dir)
    kept, dropped = [], []
    for init in candidates:
        try:
            check_combination(backbone, init)
        except ValueError as error:
            dropped.append(f"{init}: {error}")
            continue
        where = weights_availability(init, backbone, SCREEN_METHOD, weights_dir, None)
        if where is not None and where.startswith("missing"):
            dropped.append(f"{init}: {where}")
        elif where == DOWNLOADED_LATER and offline_mode():
            dropped.append(f"{init}: not on this machine and HF_HUB_OFFLINE is set")
        else:
            kept.append(init)
    return kept, dropped


def screening_axes(axes: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Stage 1's axes: the grid's, with method=none (an axis of one value, so that both stages'
    trials are named by their method)."""
    return {**axes, "method": [SCREEN_METHOD]}


def pretraining_axes(axes: dict[str, list[Any]], params: dict[str, Any], screening: Screening,
                     ranked: list[RankedPrior]) -> dict[str, list[Any]]:
    """Stage 2's axes: the top_k ranked priors (best first) plus the baseline, x the grid's methods."""
    chosen = [prior.init for prior in ranked if prior.init != screening.baseline][:screening.top_k]
    if screening.baseline in axes["init"]:
        chosen.append(screening.baseline)
    methods = axes.get("method") or [params.get("method", TrialConfig.method)]
    return {**axes, "init": chosen, "method": list(methods)}


def stage_2_trial_count(axes: dict[str, list[Any]], params: dict[str, Any], screening: Screening) -> int:
    """How many trials stage 2 will run, before stage 1 has ranked anything."""
    others = [prior for prior in axes["init"] if prior != screening.baseline]
    priors = min(screening.top_k, len(others)) + (screening.baseline in axes["init"])
    methods = axes.get("method") or [params.get("method", TrialConfig.method)]
    rest = math.prod(len(values) for key, values in axes.items() if key not in ("init", "method"))
    return priors * len(methods) * rest


def rank_priors(results: Iterable[Any], metric: str) -> list[RankedPrior]:
    """Stage 1's Tune results -> the priors, best mean `metric` first (failed trials count not)."""
    values: dict[str, list[float]] = defaultdict(list)
    for result in results:
        value = (result.metrics or {}).get(metric)
        if result.error is None and isinstance(value, int | float) and math.isfinite(value):
            values[str(result.config["init"])].append(float(value))
    ranked = [RankedPrior(init, statistics.fmean(found), len(found)) for init, found in values.items()]
    return sorted(ranked, key=lambda prior: -prior.mean)


def ranking_line(ranked: list[RankedPrior], metric: str) -> str:
    if not ranked:
        return f"stage 1: no prior finished with {metric}"
    return f"stage 1 ranking by mean {metric}: " + ", ".join(
        f"{prior.init} {prior.mean:.4f} (n={prior.trials})" for prior in ranked)

