"""Learning-rate schedules: warmup + cosine shape and the batch-size scaling rules."""

import math

import pytest

from trainables.optimization import scaled_learning_rate, warmup_cosine

PEAK = 0.8
TOTAL_STEPS = 1000
WARMUP_STEPS = 100


def test_warmup_starts_near_zero_and_rises_linearly() -> None:
    # Step 0 is the first step of the ramp: peak / warmup (not 0, which would waste a step).
    assert warmup_cosine(0, TOTAL_STEPS, WARMUP_STEPS, PEAK) == pytest.approx(PEAK / WARMUP_STEPS)
    rates = [warmup_cosine(step, TOTAL_STEPS, WARMUP_STEPS, PEAK) for step in range(WARMUP_STEPS)]
    for step, rate in enumerate(rates):
        assert rate == pytest.approx(PEAK * (step + 1) / WARMUP_STEPS)


def test_end_of_warmup_is_the_peak() -> None:
    assert warmup_cosine(WARMUP_STEPS - 1, TOTAL_STEPS, WARMUP_STEPS, PEAK) == pytest.approx(PEAK)
    assert warmup_cosine(WARMUP_STEPS, TOTAL_STEPS, WARMUP_STEPS, PEAK) == pytest.approx(PEAK)


def test_halfway_through_decay_is_half_the_peak() -> None:
    halfway = WARMUP_STEPS + (TOTAL_STEPS - WARMUP_STEPS) // 2
    assert warmup_cosine(halfway, TOTAL_STEPS, WARMUP_STEPS, PEAK) == pytest.approx(PEAK / 2)
    # And the cosine shape in between: a quarter of the way, peak * (1 + cos(pi / 4)) / 2.
    quarter = WARMUP_STEPS + (TOTAL_STEPS - WARMUP_STEPS) // 4
    assert warmup_cosine(quarter, TOTAL_STEPS, WARMUP_STEPS, PEAK) == pytest.approx(
        PEAK * (1 + math.cos(math.pi / 4)) / 2
    )


def test_end_is_zero_and_stays_there() -> None:
    assert warmup_cosine(TOTAL_STEPS, TOTAL_STEPS, WARMUP_STEPS, PEAK) == pytest.approx(
        0.0, abs=1e-12
    )
    assert warmup_cosine(TOTAL_STEPS - 1, TOTAL_STEPS, WARMUP_STEPS, PEAK) < PEAK * 1e-4
    assert warmup_cosine(TOTAL_STEPS + 50, TOTAL_STEPS, WARMUP_STEPS, PEAK) == pytest.approx(
        0.0, abs=1e-12
    )


def test_monotone_non_increasing_after_warmup() -> None:
    rates = [
        warmup_cosine(step, TOTAL_STEPS, WARMUP_STEPS, PEAK)
        for step in range(WARMUP_STEPS, TOTAL_STEPS + 1)
    ]
    assert all(later <= earlier for earlier, later in zip(rates[:-1], rates[1:], strict=True))
    assert all(0.0 <= rate <= PEAK for rate in rates)


def test_without_warmup_starts_at_the_peak() -> None:
    assert warmup_cosine(0, TOTAL_STEPS, 0, PEAK) == pytest.approx(PEAK)
    assert warmup_cosine(TOTAL_STEPS // 2, TOTAL_STEPS, 0, PEAK) == pytest.approx(PEAK / 2)


@pytest.mark.parametrize(
    ("base", "batch_size", "expected"),
    [(0.3, 256, 0.3), (0.3, 512, 0.6), (0.05, 64, 0.0125), (0.3, 4096, 4.8)],
)
def test_linear_scaling_rule(base: float, batch_size: int, expected: float) -> None:
    assert scaled_learning_rate(base, batch_size, "linear") == pytest.approx(expected)
    assert scaled_learning_rate(base, batch_size) == pytest.approx(
        expected
    )  # linear is the default


@pytest.mark.parametrize(
    ("base", "batch_size", "expected"),
    [(0.3, 256, 0.3), (0.3, 1024, 0.6), (0.05, 64, 0.025), (0.3, 4096, 1.2)],
)
def test_square_root_scaling_rule(base: float, batch_size: int, expected: float) -> None:
    assert scaled_learning_rate(base, batch_size, "sqrt") == pytest.approx(expected)


def test_unknown_scaling_rule_raises() -> None:
    with pytest.raises(ValueError, match="cubic"):
        scaled_learning_rate(0.3, 256, "cubic")


def test_without_decay_the_rate_warms_up_then_stays_at_the_peak() -> None:
    first = warmup_cosine(0, TOTAL_STEPS, WARMUP_STEPS, PEAK, decay=False)
    assert first == pytest.approx(PEAK / WARMUP_STEPS)
    rates = [warmup_cosine(step, TOTAL_STEPS, WARMUP_STEPS, PEAK, decay=False)
             for step in range(WARMUP_STEPS - 1, TOTAL_STEPS + 10)]
    assert rates == pytest.approx([PEAK] * len(rates))
