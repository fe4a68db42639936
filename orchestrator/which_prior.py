"""which_prior's answer: per label fraction, the prior (and method) to start from, with honest noise.

Pure functions of the report's `TrialRun`s (no Ray, no MLflow): the arm (init x method) with the
highest mean over seeds, its 95% t-interval over seeds, the arms within noise of it (the 95%
interval of their difference to it, paired by seed, includes 0) and how much worse random
initialization is (the best random arm, paired by seed, with its interval). The intervals are
`orchestrator.report.tables.seed_contrast`'s (scipy.stats.t).

The two stages that produce the trials are `orchestrator/screening.py`'s; the report
(`orchestrator/report/model.py`) calls `recommend` per label fraction, prints `sentence` and logs
`recommendation_summary` on the parent run.
"""

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.report.runs import SEED, TrialRun
from orchestrator.report.tables import Contrast, seed_contrast

RANDOM = "random"
NO_PRETRAINING = "none"


@dataclass(frozen=True)
class Recommendation:
    label_fraction: str
    prior: str
    method: str
    estimate: Contrast  # the arm's mean over seeds and its 95% t-interval (value, ci_low, ci_high)
    within_noise: tuple[str, ...]  # "prior/method" arms not distinguishable from it, paired by seed
    random_gap: Contrast | None  # recommended minus the best random arm, paired by seed (None: it is random)
    random_arm: str = ""

    def sentence(self, metric: str) -> str:
        """What a clinician-researcher can act on, in one sentence."""
        interval = (f" (95% interval {self.estimate.ci_low:.3f} to {self.estimate.ci_high:.3f} over "
                    f"{self.estimate.seeds} seeds)" if math.isfinite(self.estimate.ci_low)
                    else f" (one seed: no interval, {self.estimate.note})")
        how = (f"use {self.prior}'s features as they are (no SSL pretraining beat them)"
               if self.method == NO_PRETRAINING
               else f"start from {self.prior} and pretrain with {self.method}")
        text = (f"With {float(self.label_fraction):.0%} of the labels, {how}: {metric} "
                f"{self.estimate.value:.3f}{interval}.")
        if self.within_noise:
            text += f" Within noise of it: {', '.join(self.within_noise)}."
        if self.random_gap is not None and math.isfinite(self.random_gap.ci_low):
            text += (f" Random initialization ({self.random_arm}) is {self.random_gap.value:.3f} worse "
                     f"(95% interval {self.random_gap.ci_low:.3f} to {self.random_gap.ci_high:.3f}).")
        elif self.random_gap is not None:
            text += (f" Random initialization ({self.random_arm}) is {self.random_gap.value:.3f} worse "
                     "(one seed).")
        return text


def per_seed_values(trials: Sequence[TrialRun], metric: str) -> dict[tuple[str, str], dict[str, float]]:
    """(init, method) -> {seed: value} over the usable trials."""
    arms: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for trial in trials:
        value = trial.value(metric)
        if trial.usable_for(metric) and value is not None:
            arms[(trial.params.get("init", RANDOM), trial.params.get("method", ""))][
                trial.params.get(SEED, "0")] = value
    return arms


def estimate(values: dict[str, float]) -> Contrast:
    if len(values) < 2:
        return Contrast(next(iter(values.values())), math.nan, len(values), note="one seed")
    return seed_contrast(list(values.values()))


def paired_difference(first: dict[str, float], second: dict[str, float]) -> Contrast:
    """first minus second on the seeds both have."""
    seeds = sorted(set(first) & set(second))
    differences = [first[seed] - second[seed] for seed in seeds]
    if len(differences) < 2:
        value = differences[0] if differences else math.nan
        return Contrast(value, math.nan, len(differences), note="fewer than 2 paired seeds")
    return seed_contrast(differences)


def recommend(trials: Sequence[TrialRun], metric: str, label_fraction: str) -> Recommendation | None:
    """The recommendation among the trials at `label_fraction` (None if none is usable)."""
    at_fraction = [trial for trial in trials if trial.params.get("label_fraction") == label_fraction]
    arms = per_seed_values(at_fraction, metric)
    if not arms:
        return None
    estimates = {arm: estimate(values) for arm, values in arms.items()}
    best = max(estimates, key=lambda arm: estimates[arm].value)
    within = tuple(f"{init}/{method}" for (init, method), values in arms.items() if (init, method) != best
                   and not excludes_zero(paired_difference(arms[best], values)))
    random_arms = [arm for arm in arms if arm[0] == RANDOM]
    gap, random_name = None, ""
    if best[0] != RANDOM and random_arms:
        best_random = max(random_arms, key=lambda arm: estimates[arm].value)
        gap, random_name = paired_difference(arms[best], arms[best_random]), "/".join(best_random)
    return Recommendation(label_fraction, best[0], best[1], estimates[best], within, gap, random_name)


def excludes_zero(difference: Contrast) -> bool:
    return math.isfinite(difference.ci_low) and (difference.ci_low > 0 or difference.ci_high < 0)


def recommendation_summary(recommendations: Sequence[Recommendation]) -> tuple[dict[str, float],
                                                                              dict[str, str]]:
    """Parent-run metrics and tags: per label fraction f, `recommendation/labels_<f>/<prior>/mean`,
    `.../ci_low`, `.../ci_high` and tags `recommendation.labels_<f>.prior` / `.method`; the largest
    label fraction's also without the `labels_<f>` part (`recommendation.prior`,
    `recommendation/<prior>/mean`, ...)."""
    values: dict[str, float] = {}
    tags: dict[str, str] = {}
    ordered = sorted(recommendations, key=lambda item: float(item.label_fraction))
    for recommendation in ordered:
        scopes = [f"labels_{recommendation.label_fraction}"]
        if recommendation is ordered[-1]:
            scopes.append("")
        for scope in scopes:
            metric_prefix = "/".join(filter(None, ["recommendation", scope, recommendation.prior]))
            tag_prefix = ".".join(filter(None, ["recommendation", scope]))
            for name, value in (("mean", recommendation.estimate.value),
                                ("ci_low", recommendation.estimate.ci_low),
                                ("ci_high", recommendation.estimate.ci_high)):
                if math.isfinite(value):
                    values[f"{metric_prefix}/{name}"] = value
            tags[f"{tag_prefix}.prior"] = recommendation.prior
            tags[f"{tag_prefix}.method"] = recommendation.method
    return values, tags
