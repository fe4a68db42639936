"""A sweep's report as data: its trials, axes, metric and the verdict of every claim.

Built from MLflow's runs by `build_report`; `orchestrator.report.render` turns it into Markdown,
CSV and figures. The verdict rule is in `orchestrator.report.cli`'s docstring and `tables.py`.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from mlflow.entities import Run

from orchestrator.report.runs import TrialRun, axis_values, seeds_vary, sweep_axes
from orchestrator.report.tables import ClaimResult, ablation_claim, evaluate_claim, judge
from orchestrator.which_prior import Recommendation, recommend
from search_spaces import Sweep
from trainables import metrics
from trainables.config import TrialConfig


@dataclass(frozen=True)
class SweepReport:
    sweep: Sweep
    tracking_uri: str
    parent: Run
    trials: list[TrialRun]
    axes: list[str]  # the grid's axes without seed; the last one is the pivot's columns
    values: dict[str, list[str]]  # axis -> its values in grid order
    over_seeds: bool
    metric: str
    claims: list[ClaimResult]
    ablation: ClaimResult | None  # last axis, first value minus second, when it has two values
    parent_status: str  # the parent run's status, or the one the sweep ends it with
    # which_prior (a sweep with a screening): per label fraction, the prior and method to start from
    recommendations: list[Recommendation] = field(default_factory=list)


def default_metric(sweep: Sweep, trials: Sequence[TrialRun]) -> str:
    if sweep.claims:
        return sweep.claims[0].metric
    protocols = Counter(trial.params.get("eval", TrialConfig.eval) for trial in trials)
    protocol = protocols.most_common(1)[0][0] if protocols else TrialConfig.eval
    return metrics.evaluation_metric(protocol, metrics.TEST_BALANCED_ACCURACY)


def build_report(sweep: Sweep, tracking_uri: str, parent: Run, trials: list[TrialRun],
                 metric: str | None, parent_status: str | None = None) -> SweepReport:
    axes = sweep_axes(parent, fallback=list(sweep.grid))
    values = {axis: axis_values(parent, trials, axis) for axis in axes}
    over_seeds = seeds_vary(parent, trials)
    metric = metric or default_metric(sweep, trials)
    # One family for Holm's correction: every claim of the sweep and every group of each claim.
    claims = judge([evaluate_claim(trials, claim, axes, values, over_seeds) for claim in sweep.claims],
                   over_seeds)
    last_axis_claim = ablation_claim(axes[-1], values[axes[-1]], metric) if axes else None
    ablation = (evaluate_claim(trials, last_axis_claim, axes, values, over_seeds)
                if last_axis_claim else None)
    recommendations = []
    if sweep.screening is not None:
        fractions = (values.get("label_fraction")
                     or sorted({trial.params.get("label_fraction", "1.0") for trial in trials}))
        recommendations = [found for fraction in fractions
                           if (found := recommend(trials, metric, fraction)) is not None]
    return SweepReport(sweep, tracking_uri, parent, trials, axes, values, over_seeds, metric, claims,
                       ablation, parent_status or parent.info.status, recommendations)
