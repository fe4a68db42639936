"""which_prior's recommendation on fixed numbers: intervals from scipy, ties within noise, random's gap."""

import pytest
from scipy import stats

from orchestrator.report.runs import TrialRun
from orchestrator.which_prior import recommend, recommendation_summary

METRIC = "linear/test_balanced_accuracy"
# (init, method) -> value per seed 0, 1, 2 at label fraction 0.1
DESIGN = {
    ("imagenet", "simclr"): [0.80, 0.82, 0.81],
    ("meanvar", "simclr"): [0.79, 0.83, 0.805],  # close to imagenet: within noise
    ("random", "simclr"): [0.60, 0.61, 0.615],
    ("random", "byol"): [0.62, 0.60, 0.63],
}


def trials(label_fraction: str = "0.1") -> list[TrialRun]:
    return [TrialRun(run_id=f"{init}{method}{seed}", name=f"{init}_{method}_{seed}", status="finished",
                     params={"init": init, "method": method, "seed": str(seed),
                             "label_fraction": label_fraction},
                     metrics={METRIC: value})
            for (init, method), values in DESIGN.items() for seed, value in enumerate(values)]


def test_recommends_the_best_arm_with_its_t_interval_and_the_gap_to_random() -> None:
    result = recommend(trials(), METRIC, "0.1")
    assert (result.prior, result.method) == ("imagenet", "simclr")
    values = DESIGN[("imagenet", "simclr")]
    low, high = stats.t.interval(0.95, 2, loc=sum(values) / 3, scale=stats.sem(values))
    assert (result.estimate.ci_low, result.estimate.ci_high) == pytest.approx((low, high))
    assert result.estimate.ci_low < result.estimate.value < result.estimate.ci_high
    assert result.within_noise == ("meanvar/simclr",)
    # The best random arm is byol (mean 0.6167 vs 0.6083); its gap paired by seed.
    assert result.random_arm == "random/byol"
    gaps = [a - b for a, b in zip(values, DESIGN[("random", "byol")], strict=True)]
    assert result.random_gap.value == pytest.approx(sum(gaps) / 3)
    interval = stats.ttest_1samp(gaps, 0.0).confidence_interval(0.95)
    assert (result.random_gap.ci_low, result.random_gap.ci_high) == pytest.approx(
        (interval.low, interval.high))
    sentence = result.sentence(METRIC)
    assert sentence.startswith("With 10% of the labels, start from imagenet and pretrain with simclr")
    assert "Within noise of it: meanvar/simclr." in sentence
    assert "Random initialization (random/byol)" in sentence


def test_the_parent_gets_tags_and_interval_metrics_per_label_fraction() -> None:
    small, full = recommend(trials("0.1"), METRIC, "0.1"), recommend(trials("1.0"), METRIC, "1.0")
    values, tags = recommendation_summary([full, small])
    assert tags["recommendation.prior"] == "imagenet" and tags["recommendation.method"] == "simclr"
    assert tags["recommendation.labels_0.1.prior"] == "imagenet"
    assert values["recommendation/imagenet/ci_low"] < values["recommendation/imagenet/mean"] \
        < values["recommendation/imagenet/ci_high"]
    assert values["recommendation/labels_0.1/imagenet/mean"] == pytest.approx(0.81)
    assert recommend(trials("0.1"), METRIC, "0.01") is None
