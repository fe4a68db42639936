"""The verdict rule's numbers against scipy on fixed per-seed contrasts: t-intervals, one seed, Holm."""

import math

import pytest
from scipy import stats

from orchestrator.report.tables import (
    AGREES,
    DISAGREES,
    INCONCLUSIVE,
    ClaimResult,
    Contrast,
    Verdict,
    holm_adjusted,
    judge,
    seed_contrast,
    verdict,
)
from search_spaces import Claim


def contrasts_with_t(t_statistic: float, mean: float = 0.1) -> list[float]:
    """Three per-seed contrasts with the given mean and t statistic: mean + (-d, 0, +d) has
    std d, standard error d / sqrt(3), so d = mean x sqrt(3) / t."""
    step = mean * math.sqrt(3) / t_statistic
    return [mean - step, mean, mean + step]


def test_a_three_seed_contrast_with_t_2_5_is_inconclusive() -> None:
    result = seed_contrast(contrasts_with_t(2.5))
    assert result.seeds == 3 and result.value == pytest.approx(0.1)
    # scipy's own one-sample t-test of the same numbers is the reference.
    reference = stats.ttest_1samp(contrasts_with_t(2.5), 0.0)
    assert reference.statistic == pytest.approx(2.5)
    assert result.p_value == pytest.approx(reference.pvalue)
    assert result.p_value > 0.05  # t = 2.5 on 2 degrees of freedom: p ~ 0.13
    interval = reference.confidence_interval(0.95)
    assert (result.ci_low, result.ci_high) == pytest.approx((interval.low, interval.high))
    assert result.ci_low < 0.0 < result.ci_high
    assert verdict(result, over_seeds=True, adjusted_p=result.p_value).word == INCONCLUSIVE


def test_a_three_seed_contrast_with_t_6_agrees_and_its_negative_disagrees() -> None:
    result = seed_contrast(contrasts_with_t(6.0))
    assert result.p_value == pytest.approx(stats.ttest_1samp(contrasts_with_t(6.0), 0.0).pvalue)
    assert result.p_value < 0.05 and result.ci_low > 0.0
    [judged] = judge([ClaimResult(Claim("a beats b", (({"m": "a"}, 1.0),), "x"), result, (),
                                  Verdict(INCONCLUSIVE, ""))], over_seeds=True)
    assert judged.verdict.word == AGREES and judged.verdict.adjusted_p == pytest.approx(result.p_value)
    negative = seed_contrast([-value for value in contrasts_with_t(6.0)])
    assert verdict(negative, over_seeds=True, adjusted_p=negative.p_value).word == DISAGREES


def test_one_seed_is_inconclusive_whatever_its_repeat_spread() -> None:
    # A huge contrast with a tiny propagated repeat std: the old rule said "agrees".
    single = Contrast(value=0.5, spread=0.001, seeds=1)
    judged = verdict(single, over_seeds=False)
    assert (judged.word, judged.reason) == (INCONCLUSIVE, "one seed")
    assert verdict(single, over_seeds=True).word == INCONCLUSIVE


def test_holm_adjusted_p_values_on_a_fixed_set() -> None:
    # Worked by hand: sorted 0.01, 0.02, 0.03, 0.04 (of m = 5) x 5, 4, 3, 2 -> 0.05, 0.08, 0.09,
    # 0.08 -> running max 0.09; 0.5 x 1 = 0.5.
    p_values = [0.03, 0.5, 0.01, 0.04, 0.02]
    assert holm_adjusted(p_values) == pytest.approx([0.09, 0.5, 0.05, 0.09, 0.08])
    assert holm_adjusted([0.4, 0.6]) == pytest.approx([0.8, 0.8])  # capped, monotone
    assert holm_adjusted([]) == []


def test_holm_makes_a_claim_that_passes_alone_inconclusive_among_many() -> None:
    strong = seed_contrast(contrasts_with_t(6.0))  # p ~ 0.027
    weak = seed_contrast(contrasts_with_t(1.0))
    claims = [ClaimResult(Claim(f"claim {index}", (({"m": "a"}, 1.0),), "x"), contrast, (),
                          Verdict(INCONCLUSIVE, "")) for index, contrast in enumerate([strong, weak, weak])]
    judged = judge(claims, over_seeds=True)
    expected = holm_adjusted([strong.p_value, weak.p_value, weak.p_value])
    assert [result.verdict.adjusted_p for result in judged] == pytest.approx(expected)
    assert judged[0].verdict.word == INCONCLUSIVE and "adjusted p" in judged[0].verdict.reason
