"""The one trial-status rule (orchestrator.trial_status) that the sweep's table, the MLflow trial
runs and the report share."""

import pytest

from orchestrator.trial_status import trial_status
from trainables import metrics

EVALUATED = {metrics.EPOCH: 5, metrics.LINEAR_TEST_ACCURACY: 0.8, metrics.COLLAPSED: 0.0}


@pytest.mark.parametrize(("last_result", "failed", "interrupted", "expected"), [
    (EVALUATED, False, False, "finished"),
    ({**EVALUATED, metrics.COLLAPSED: 1.0}, False, False, "collapsed"),
    ({metrics.EPOCH: 2, metrics.PRETRAIN_LOSS: 1.0}, False, False, "stopped"),  # ASHA, before evaluation
    ({metrics.EPOCH: 2, metrics.PRETRAIN_LOSS: 1.0}, False, True, "interrupted"),
    (EVALUATED, False, True, "finished"),  # it got to its end before the interruption
    (EVALUATED, True, False, "failed"),  # an error after the evaluation (logging its model) still fails it
    ({}, True, True, "failed"),
])
def test_a_trials_status_follows_from_its_last_result(last_result: dict, failed: bool, interrupted: bool,
                                                      expected: str) -> None:
    assert trial_status(last_result, failed=failed, interrupted=interrupted) == expected
