"""Which epochs a trial checkpoints (trainables.checkpoint_schedule)."""


import pytest

from trainables.checkpoint_schedule import CHECKPOINT_COST_FRACTION, CheckpointSchedule, automatic_period


def checkpointed(schedule: CheckpointSchedule, epochs: range, write_seconds: float,
                 epoch_seconds: float) -> list[int]:
    """The epochs `schedule` checkpoints when every write and every epoch take the given times."""
    written = []
    for epoch in epochs:
        if schedule.is_due(epoch):
            written.append(epoch)
            schedule.record(epoch, write_seconds, epoch_seconds)
    return written


@pytest.mark.parametrize(("write_seconds", "epoch_seconds", "period"),
                         [(1.0, 10.0, 2), (1.0, 20.0, 1), (0.01, 10.0, 1), (3.0, 4.0, 15), (1.0, 0.0, 1)])
def test_the_automatic_period_keeps_writing_under_five_percent(write_seconds: float, epoch_seconds: float,
                                                               period: int) -> None:
    assert automatic_period(write_seconds, epoch_seconds) == period
    if epoch_seconds > 0:  # the shortest such period: one epoch less would cost more than 5%
        assert write_seconds <= CHECKPOINT_COST_FRACTION * period * epoch_seconds + 1e-12
        assert period == 1 or write_seconds > CHECKPOINT_COST_FRACTION * (period - 1) * epoch_seconds


def test_automatic_checkpoints_the_first_epoch_then_every_period_and_the_last() -> None:
    # A 1 s write and 4 s epochs: every ceil(1 / 0.2) = 5 epochs.
    written = checkpointed(CheckpointSchedule(None, 20), range(1, 21), 1.0, 4.0)
    assert written == [1, 6, 11, 16, 20]
    # Besides the first and the last, writing costs at most 5% of training.
    assert (len(written) - 2) * 1.0 <= CHECKPOINT_COST_FRACTION * 20 * 4.0


def test_the_period_follows_the_latest_measurement() -> None:
    schedule = CheckpointSchedule(None, 100)
    schedule.record(1, write_seconds=1.0, epoch_seconds=2.0)  # a slow first epoch: period 10
    assert schedule.period == 10 and not schedule.is_due(10) and schedule.is_due(11)
    schedule.record(11, write_seconds=1.0, epoch_seconds=20.0)
    assert schedule.period == 1 and schedule.is_due(12)


def test_a_tiny_cpu_run_checkpoints_its_first_and_last_epoch() -> None:
    # Checkpoint writes dominate sub-second epochs: the lost work on a failure stays ~20 writes.
    assert checkpointed(CheckpointSchedule(None, 8), range(1, 9), 0.05, 0.1) == [1, 8]


@pytest.mark.parametrize("start", [1, 5, 7])
def test_an_explicit_period_counts_from_the_trials_start_across_resumes(start: int) -> None:
    written = checkpointed(CheckpointSchedule(3, 10), range(start, 11), 100.0, 0.1)
    assert written == [epoch for epoch in (3, 6, 9, 10) if epoch >= start]


def test_a_resumed_automatic_trial_times_its_first_epoch_again() -> None:
    assert checkpointed(CheckpointSchedule(None, 30), range(7, 31), 1.0, 4.0) == [7, 12, 17, 22, 27, 30]
