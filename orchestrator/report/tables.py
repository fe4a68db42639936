"""The report's numbers: the pivot of a final metric, contrasts of cells, and claim verdicts.

Pure functions of `TrialRun`s (no MLflow, no files). Only usable trials (finished, not
collapsed) enter any number here, except that the collapse metric counts collapsed trials.
See `orchestrator.report.cli` for the verdict rule: contrasts paired by seed, a 95% t-interval
over seeds (scipy.stats.t), one seed is inconclusive, and Holm's correction across every claim and
group of a sweep before a p-value makes a verdict.
"""

import dataclasses
import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats

from orchestrator.report.runs import SEED, TrialRun
from search_spaces import Claim
from trainables import metrics

AGREES = "agrees"
DISAGREES = "disagrees"
INCONCLUSIVE = "inconclusive"
CONFIDENCE = 0.95  # the intervals' level; a verdict needs its Holm-adjusted p-value below 1 - this
ONE_SEED = "one seed"


@dataclass(frozen=True)
class Cell:
    """One pivot cell: mean and std of the metric over the cell's trials (its seeds)."""

    mean: float
    std: float  # over seeds; with one trial, the logged std over the evaluation's repeats
    count: int


@dataclass(frozen=True)
class Contrast:
    """sum(weight x cell mean), with its spread, or why it could not be computed."""

    value: float
    spread: float  # standard error over seeds, or the propagated repeat std with one seed (shown only)
    seeds: int  # how many seeds the per-seed contrast is averaged over (1: no verdict)
    missing: tuple[str, ...] = ()  # cells with no usable trial
    note: str = ""  # seeds left out, or why there is no spread
    ci_low: float = math.nan  # the 95% t-interval over seeds (nan with fewer than 2 seeds)
    ci_high: float = math.nan
    p_value: float = math.nan  # two-sided one-sample t-test of the per-seed contrasts against 0

    @property
    def testable(self) -> bool:
        return not self.missing and math.isfinite(self.p_value)


@dataclass(frozen=True)
class Verdict:
    word: str  # agrees | disagrees | inconclusive
    reason: str  # "" when the contrast is clear
    adjusted_p: float = math.nan  # Holm-adjusted across the sweep's claims and groups


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    overall: Contrast
    groups: tuple[tuple[dict[str, str], Contrast], ...]  # per combination of the remaining axes
    verdict: Verdict
    group_verdicts: tuple[Verdict, ...] = ()  # one per group, same order


WeightedCells = Sequence[tuple[Mapping[str, str], float]]


def describe(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in values.items()) or "(all)"


def matches(trial: TrialRun, values: Mapping[str, str]) -> bool:
    return all(trial.params.get(key) == value for key, value in values.items())


def std_metric(metric: str) -> str:
    return metric + metrics.STD_SUFFIX


def combinations(axes: Sequence[str], values: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
    """Every combination of the axes' values, in grid order ([{}] when there are no axes)."""
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*(values[a] for a in axes))]


def usable_trials(trials: Sequence[TrialRun], where: Mapping[str, str], metric: str) -> list[TrialRun]:
    """The trials matching `where` that logged `metric` and may enter its numbers: finished and
    uncollapsed, except that collapsed trials count for the collapse metric itself."""
    return [trial for trial in trials
            if trial.usable_for(metric) and matches(trial, where) and trial.value(metric) is not None]


def pivot_cell(trials: Sequence[TrialRun], where: Mapping[str, str], metric: str,
               over_seeds: bool) -> Cell | None:
    found = usable_trials(trials, where, metric)
    if not found:
        return None
    values = [trial.value(metric) for trial in found]
    if over_seeds or len(found) > 1:
        std = statistics.stdev(values) if len(values) > 1 else math.nan
    else:
        std = found[0].value(std_metric(metric))
        std = math.nan if std is None else std
    return Cell(mean=statistics.fmean(values), std=std, count=len(found))


def contrast(trials: Sequence[TrialRun], cells: WeightedCells, metric: str, over_seeds: bool) -> Contrast:
    """The contrast sum(w x cell) and its spread: per seed when seeds vary, else propagated."""
    per_cell = []
    missing = []
    for values, weight in cells:
        found = usable_trials(trials, values, metric)
        if not found:
            missing.append(describe(values))
        per_cell.append((found, weight))
    if missing:
        return Contrast(math.nan, math.nan, 0, tuple(missing))
    if over_seeds:
        return _contrast_over_seeds(per_cell, metric)
    value = sum(weight * statistics.fmean(t.value(metric) for t in found) for found, weight in per_cell)
    stds = [(weight, [t.value(std_metric(metric)) for t in found]) for found, weight in per_cell]
    if any(None in cell_stds or len(cell_stds) != 1 for _, cell_stds in stds):
        return Contrast(value, math.nan, 1, note=f"one seed and no single {std_metric(metric)} per cell")
    spread = math.sqrt(sum((weight * cell_stds[0]) ** 2 for weight, cell_stds in stds))
    return Contrast(value, spread, 1)


def _contrast_over_seeds(per_cell: list[tuple[list[TrialRun], float]], metric: str) -> Contrast:
    by_seed = [({t.params.get(SEED): t.value(metric) for t in found}, weight) for found, weight in per_cell]
    all_seeds = set().union(*(seeds.keys() for seeds, _ in by_seed))
    complete = sorted(set.intersection(*(set(seeds) for seeds, _ in by_seed)), key=str)
    left_out = sorted(all_seeds - set(complete), key=str)
    note = f"seed(s) {', '.join(map(str, left_out))} left out: a cell has no usable trial" if left_out else ""
    per_seed = [sum(weight * seeds[seed] for seeds, weight in by_seed) for seed in complete]
    if len(per_seed) < 2:
        value = per_seed[0] if per_seed else math.nan
        note = "; ".join(filter(None, [note, f"{len(per_seed)} seed(s) with every cell: no spread"]))
        return Contrast(value, math.nan, len(per_seed), note=note)
    return seed_contrast(per_seed, note)


def seed_contrast(per_seed: Sequence[float], note: str = "") -> Contrast:
    """Mean of per-seed contrasts with its standard error, 95% t-interval and two-sided p-value
    (scipy.stats.t, seeds - 1 degrees of freedom). Identical contrasts on every seed have no spread
    to scale by: their p-value is 0 when the mean is not 0."""
    mean, seeds = statistics.fmean(per_seed), len(per_seed)
    spread = statistics.stdev(per_seed) / math.sqrt(seeds)
    if spread == 0.0:
        p_value = 1.0 if mean == 0.0 else 0.0
        return Contrast(mean, spread, seeds, note=note, ci_low=mean, ci_high=mean, p_value=p_value)
    low, high = stats.t.interval(CONFIDENCE, seeds - 1, loc=mean, scale=spread)
    p_value = 2.0 * stats.t.sf(abs(mean / spread), seeds - 1)
    return Contrast(mean, spread, seeds, note=note, ci_low=float(low), ci_high=float(high),
                    p_value=float(p_value))


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order: the i-th smallest of m is
    multiplied by (m - i + 1), then made non-decreasing in that order and capped at 1."""
    order = sorted(range(len(p_values)), key=lambda index: p_values[index])
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def verdict(result: Contrast, over_seeds: bool, adjusted_p: float = math.nan) -> Verdict:
    """The verdict of a contrast given its Holm-adjusted p-value (see the cli's docstring)."""
    if result.missing:
        return Verdict(INCONCLUSIVE, "missing cell(s): " + "; ".join(result.missing))
    if not over_seeds or result.seeds == 1:
        return Verdict(INCONCLUSIVE, ONE_SEED + (f"; {result.note}" if result.note else ""))
    if not math.isfinite(result.p_value):
        return Verdict(INCONCLUSIVE, result.note)
    if adjusted_p < 1.0 - CONFIDENCE:
        return Verdict(AGREES if result.value > 0 else DISAGREES, "", adjusted_p)
    return Verdict(INCONCLUSIVE, f"the 95% interval over seeds includes 0 after Holm's correction "
                   f"(adjusted p = {adjusted_p:.3g})", adjusted_p)


def judge(results: Sequence[ClaimResult], over_seeds: bool) -> list[ClaimResult]:
    """Every claim's and group's verdict, Holm-adjusted over all testable contrasts of `results`
    (a claim with a single group is one test: its group is its overall contrast)."""
    tested = []
    for number, result in enumerate(results):
        tested.append((number, None, result.overall))
        if len(result.groups) > 1:
            tested += [(number, group, contrast) for group, (_, contrast) in enumerate(result.groups)]
    testable = [entry for entry in tested if over_seeds and entry[2].testable and entry[2].seeds > 1]
    adjusted = dict(zip([(number, group) for number, group, _ in testable],
                        holm_adjusted([contrast.p_value for _, _, contrast in testable]), strict=True))
    judged = []
    for number, result in enumerate(results):
        overall = verdict(result.overall, over_seeds, adjusted.get((number, None), math.nan))
        groups = tuple(verdict(contrast, over_seeds,
                               adjusted.get((number, group if len(result.groups) > 1 else None), math.nan))
                       for group, (_, contrast) in enumerate(result.groups))
        judged.append(dataclasses.replace(result, verdict=overall, group_verdicts=groups))
    return judged


def claim_axes(claim: Claim, axes: Sequence[str]) -> list[str]:
    """The axes a claim is matched over: the sweep's axes its cells do not name."""
    named = {key for values, _ in claim.terms for key in values}
    return [axis for axis in axes if axis not in named]


def evaluate_claim(trials: Sequence[TrialRun], claim: Claim, axes: Sequence[str],
                   values: Mapping[str, Sequence[str]], over_seeds: bool) -> ClaimResult:
    """Per-group contrasts over the remaining axes, and their average as the claim's contrast."""
    metric = claim.metric
    terms = [({key: str(value) for key, value in cell.items()}, weight) for cell, weight in claim.terms]
    groups = combinations(claim_axes(claim, axes), values)
    per_group = tuple((group, contrast(trials, [({**cell, **group}, weight) for cell, weight in terms],
                                       metric, over_seeds)) for group in groups)
    overall_cells = [({**cell, **group}, weight / len(groups)) for group in groups for cell, weight in terms]
    overall = contrast(trials, overall_cells, metric, over_seeds)
    # The verdict of one claim alone (Holm over its own groups); build_report judges all claims together.
    return judge([ClaimResult(claim, overall, per_group, Verdict(INCONCLUSIVE, "not judged"))], over_seeds)[0]


def ablation_claim(axis: str, axis_values: Sequence[str], metric: str) -> Claim | None:
    """"first value minus second" along the last axis, when it has exactly two values."""
    if len(axis_values) != 2:
        return None
    first, second = axis_values
    return Claim(text=f"{axis} {first} minus {second}", terms=(({axis: first}, 1.0), ({axis: second}, -1.0)),
                 metric=metric)
