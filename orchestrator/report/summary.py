"""The report's numbers on the sweep's parent run, so its row in MLflow's runs table tells the result.

Metrics: `best/<metric>` (the best usable trial's value of the report's metric; tags `best_trial`
and `best_run_id` name it), `trials/<status>` (how many trials ended each way), and per paper
claim i (1-based, in the sweep's order) `claim<i>/contrast` (mean of the per-seed contrasts),
`claim<i>/spread` (its standard error), `claim<i>/ci_low` and `claim<i>/ci_high` (the 95%
t-interval over seeds), `claim<i>/p_value` and `claim<i>/adjusted_p` (Holm-adjusted across the
sweep's claims and groups), and `claim<i>/verdict` (+1 agrees, -1 disagrees, 0 inconclusive);
tags `claim<i>.verdict` (the word), `claim<i>.reason` (why inconclusive) and `claim<i>.text`.
which_prior's recommendation (orchestrator.which_prior.recommendation_summary): tags
`recommendation.prior`, `recommendation.method` and metrics `recommendation/<prior>/mean`,
`.../ci_low`, `.../ci_high` for the largest label fraction, and the same under
`recommendation.labels_<f>` / `recommendation/labels_<f>/` for each one.
A number that cannot be computed (one seed, a missing cell) is not logged.
"""

import math
from collections import Counter
from typing import TYPE_CHECKING

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from orchestrator.mlflow_view import run_link
from orchestrator.report.tables import AGREES, DISAGREES
from orchestrator.which_prior import recommendation_summary

if TYPE_CHECKING:
    from orchestrator.report.model import SweepReport

VERDICT_NUMBERS = {AGREES: 1.0, DISAGREES: -1.0}  # anything else (inconclusive): 0
TAG_BEST_TRIAL, TAG_BEST_RUN_ID = "best_trial", "best_run_id"


def summary_metrics(report: "SweepReport") -> tuple[dict[str, float], dict[str, str]]:
    """The parent's summary metrics and tags (see the module docstring)."""
    values: dict[str, float] = {f"trials/{status}": float(count)
                                for status, count in Counter(t.status for t in report.trials).items()}
    tags: dict[str, str] = {}
    candidates = [trial for trial in report.trials
                  if trial.usable_for(report.metric) and trial.value(report.metric) is not None]
    if candidates:
        best = max(candidates, key=lambda trial: trial.value(report.metric))
        values[f"best/{report.metric}"] = best.value(report.metric)
        tags.update({TAG_BEST_TRIAL: best.name, TAG_BEST_RUN_ID: best.run_id})
        # The description (the hypothesis) ends with the best trial as a link; MLflow's Markdown
        # drops relative links, so it is the whole address.
        hypothesis = (report.sweep.hypothesis or report.sweep.description).strip()
        link = run_link(report.tracking_uri, report.parent.info.experiment_id, best.run_id)
        tags[MLFLOW_RUN_NOTE] = (f"{hypothesis}\n\nBest trial: [{best.name}]({link}) "
                                 f"({report.metric} = {best.value(report.metric):.4f})")
    for number, result in enumerate(report.claims, start=1):
        values[f"claim{number}/contrast"] = result.overall.value
        values[f"claim{number}/spread"] = result.overall.spread
        values[f"claim{number}/ci_low"] = result.overall.ci_low
        values[f"claim{number}/ci_high"] = result.overall.ci_high
        values[f"claim{number}/p_value"] = result.overall.p_value
        values[f"claim{number}/adjusted_p"] = result.verdict.adjusted_p
        values[f"claim{number}/verdict"] = VERDICT_NUMBERS.get(result.verdict.word, 0.0)
        tags[f"claim{number}.verdict"] = result.verdict.word
        tags[f"claim{number}.text"] = result.claim.text
        if result.verdict.reason:
            tags[f"claim{number}.reason"] = result.verdict.reason
    recommended, recommendation_tags = recommendation_summary(report.recommendations)
    values.update(recommended)
    tags.update(recommendation_tags)
    return {name: value for name, value in values.items() if math.isfinite(value)}, tags


def log_summary(client: MlflowClient, report: "SweepReport") -> None:
    values, tags = summary_metrics(report)
    client.log_batch(report.parent.info.run_id,
                     metrics=[Metric(name, value, 0, 0) for name, value in values.items()],
                     tags=[RunTag(name, value[:5000]) for name, value in tags.items()])
