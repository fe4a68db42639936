"""Which epochs a trial checkpoints: often enough to lose little to a lost worker, rarely enough
that writing checkpoints costs at most CHECKPOINT_COST_FRACTION of training time.

A full checkpoint (weights, heads, optimizer) is hundreds of MB to over a GB for ResNet-50
methods; written every epoch it can cost as much as a short epoch on a fast GPU. The trial
setting `checkpoint_every`:

- an integer N: epochs N, 2N, 3N, ... (counted from the trial's start, so a resumed trial keeps
  the same epochs) and the last one;
- None (the default): the first epoch this process trains is checkpointed and timed. Each
  checkpoint's write time and the epoch's training time give the period until the next one,
  `automatic_period`: ceil(write / (CHECKPOINT_COST_FRACTION x epoch)) epochs, so writing costs at
  most about 5%. The last epoch is always checkpointed: the final evaluation and `--resume`
  start from it.

On tiny CPU runs (epochs of a second or less), the write time dominates and the period is large:
such a trial checkpoints its first epoch and its last, and a lost worker repeats at most about 20
checkpoint write times of work (the period's length is write / 5%). That is the bound the rule
keeps everywhere: the work lost to a failure is at most ~20 checkpoint writes, whatever the speed.
"""

import math

CHECKPOINT_COST_FRACTION = 0.05  # writing checkpoints costs at most this share of training time


def automatic_period(write_seconds: float, epoch_seconds: float,
                     cost_fraction: float = CHECKPOINT_COST_FRACTION) -> int:
    """Epochs between checkpoints so that one write per period costs at most `cost_fraction` of the
    period's training time (at least 1)."""
    if epoch_seconds <= 0:
        return 1
    return max(1, math.ceil(write_seconds / (cost_fraction * epoch_seconds)))


class CheckpointSchedule:
    """Whether an epoch is checkpointed (see the module docstring).

        schedule = CheckpointSchedule(config.checkpoint_every, config.epochs)
        if schedule.is_due(epoch): ... write, then schedule.record(epoch, write_seconds, epoch_seconds)
    """

    def __init__(self, every: int | None, last_epoch: int) -> None:
        self.every, self.last_epoch = every, last_epoch
        self.next_due: int | None = None  # automatic: the first epoch trained here is due
        self.period: int | None = every

    def is_due(self, epoch: int) -> bool:
        if epoch == self.last_epoch:
            return True
        if self.every is not None:
            return epoch % self.every == 0
        return self.next_due is None or epoch >= self.next_due

    def record(self, epoch: int, write_seconds: float, epoch_seconds: float) -> None:
        """A checkpoint of `epoch` took `write_seconds`; the epoch trained for `epoch_seconds`."""
        if self.every is None:
            self.period = automatic_period(write_seconds, epoch_seconds)
            self.next_due = epoch + self.period
