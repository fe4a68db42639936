"""What became of a trial, in one word: the one rule the sweep's table, the trials' MLflow runs
and the report share.

- finished: evaluated;
- collapsed: evaluated, but its embeddings collapsed (trainables.evaluation.is_collapsed): no
  table or claim averages it;
- stopped: ended by the scheduler (ASHA) before its evaluation;
- interrupted: ended by Ctrl-C or a driver that died (--resume continues it);
- failed: an error ended it;
- running: its MLflow run while it runs.
"""

from collections.abc import Mapping
from typing import Any

from trainables import metrics

STATUS_FINISHED, STATUS_COLLAPSED, STATUS_FAILED = "finished", "collapsed", "failed"
STATUS_STOPPED, STATUS_INTERRUPTED, STATUS_RUNNING = "stopped", "interrupted", "running"


def trial_status(last_result: Mapping[str, Any], failed: bool = False, interrupted: bool = False) -> str:
    """The status of a trial that has ended, from its last result. `failed`: an error ended it;
    `interrupted`: the sweep was interrupted, so a trial without its evaluation was cut short by
    that, not stopped by the scheduler."""
    if failed:
        return STATUS_FAILED
    if not any(name in last_result for name in metrics.FINAL):
        return STATUS_INTERRUPTED if interrupted else STATUS_STOPPED
    return STATUS_COLLAPSED if last_result.get(metrics.COLLAPSED, 0.0) >= 0.5 else STATUS_FINISHED
