"""A search sweep's best trial (tune_driver.report_best): picked from the list of Tune results the
driver holds, by each trial's last reported value of the search's metric, printed, and kept on
the parent run through the tracker. No Ray runs here: the results are Tune's own Result objects."""

import json
from pathlib import Path

import pandas as pd
import pytest
from ray.tune import Result

from orchestrator.grid import apply_overrides
from orchestrator.tracking import SweepTracker
from orchestrator.tune_driver import report_best
from search_spaces import SWEEPS
from trainables import metrics

SEARCH = apply_overrides(SWEEPS["hpo_simclr"], [], smoke=True)


def trial_result(name: str, learning_rate: float, final: dict, history: list[float] | None = None,
                 error: Exception | None = None) -> Result:
    config = {"method": "simclr", "learning_rate": learning_rate, "weight_decay": 1e-5,
              "method_params": {"temperature": 0.2}}
    frame = None if history is None else pd.DataFrame({metrics.KNN_VAL_ACCURACY: history})
    return Result(metrics={**final, "config": config}, checkpoint=None, error=error,
                  path=f"/storage/hpo_simclr/{name}_583547f7", metrics_dataframe=frame)


def test_the_best_trial_is_the_one_whose_last_metric_is_best_and_the_parent_run_keeps_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert SEARCH.search is not None and SEARCH.search.metric == metrics.KNN_VAL_ACCURACY
    results = [
        trial_result("lr=0.1", 0.1, {metrics.KNN_VAL_ACCURACY: 0.5}),
        # Its final report lacks the per-epoch metric: the last epoch's value counts (0.8, not 0.9).
        trial_result("lr=0.3", 0.3, {metrics.TEST_ACCURACY: 0.7}, history=[0.9, 0.8]),
        trial_result("lr=1.5", 1.5, {metrics.KNN_VAL_ACCURACY: float("nan")}, error=RuntimeError("diverged")),
    ]
    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "hpo_simclr")
    tracker.start_parent("hpo_simclr", {"sweep": "hpo_simclr"})

    report_best(results, SEARCH, tracker)

    assert "best (knn/val_accuracy = 0.8): learning_rate=0.3, weight_decay=1e-05, " \
           "method_params.temperature=0.2" in capsys.readouterr().out
    parent = tracker.client.get_run(tracker.parent_run_id)
    assert parent.data.tags["best.learning_rate"] == "0.3"
    assert parent.data.tags["best.method_params.temperature"] == "0.2"
    logged = json.loads(Path(tracker.client.download_artifacts(tracker.parent_run_id, "best_config.json",
                                                               str(tmp_path))).read_text())
    assert logged["metric"] == metrics.KNN_VAL_ACCURACY and logged["value"] == 0.8
    assert logged["config"]["learning_rate"] == 0.3


def test_without_a_finite_metric_there_is_no_best_and_nothing_is_logged(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = [trial_result("lr=1.5", 1.5, {metrics.KNN_VAL_ACCURACY: float("nan")}, error=RuntimeError("x"))]
    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "hpo_simclr")
    tracker.start_parent("hpo_simclr", {"sweep": "hpo_simclr"})

    report_best(results, SEARCH, tracker)

    assert "best: none, no trial reported a finite knn/val_accuracy" in capsys.readouterr().out
    assert not any(key.startswith("best.") for key in tracker.client.get_run(tracker.parent_run_id).data.tags)
    assert tracker.client.list_artifacts(tracker.parent_run_id) == []
