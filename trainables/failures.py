"""Which errors of a trial no retry can fix: the same config on the same data fails the same way.

A lost worker or node (an OOM kill, a spot preemption, a crash) is worth a restart from the last
checkpoint; missing weights, a diverged loss (FloatingPointError from the loop), bad data or a
bad value (ValueError and its kin: ConfigError, the dataset errors), or a bug (TypeError,
LookupError) is not: a restart repeats it, `--max-failures` times, and the answer comes later.
RuntimeError is left out on purpose: torch.distributed's errors on the ranks that survive a lost
peer are RuntimeErrors, and those are the lost-worker case. The orchestrator's Train callback
(orchestrator.tune_driver.FailOnce) reads this to stop retrying.
"""

from trainables.missing_weights import MissingWeightsError

DETERMINISTIC_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, LookupError, TypeError, AttributeError, ArithmeticError, MissingWeightsError,
    FileNotFoundError, IsADirectoryError, NotADirectoryError,
)


def no_retry_can_fix(error: BaseException) -> bool:
    """Whether a worker's exception would repeat on every retry (see the module doc)."""
    return isinstance(error, DETERMINISTIC_ERRORS)
