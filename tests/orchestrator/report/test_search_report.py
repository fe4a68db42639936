"""The report of a search sweep: its axes hold sampled values, so the pivot is one row per trial,
ranked by the metric, not the cross product of every sampled value (nearly all cells empty)."""

import contextlib
import csv
import io
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

import search_spaces
from orchestrator.report.cli import main
from orchestrator.tracking import TAG_ROLE, TAG_STATUS, TAG_SWEEP, SweepTracker, flatten, log_params
from search_spaces import Search, Sweep
from trainables import metrics

METRIC = metrics.LINEAR_TEST_BALANCED_ACCURACY
SAMPLES = [(0.18, 7.3e-05, 0.40), (0.10, 3.7e-04, 0.41), (0.076, 1.5e-04, 0.36)]


def test_a_search_sweeps_pivot_has_one_row_per_trial_ranked_by_the_metric(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = Sweep(name="search_report", description="a search the test builds", grid={},
                  params={"method": "simclr"},
                  search=Search(space={"learning_rate": ("loguniform", 0.01, 2.0),
                                       "weight_decay": ("loguniform", 1e-7, 1e-3)},
                                metric=metrics.KNN_VAL_ACCURACY, num_samples=3))
    monkeypatch.setitem(search_spaces.SWEEPS, sweep.name, sweep)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, sweep.name)
    parent = tracker.start_parent(sweep.name, {"sweep": sweep.name, "axes": "learning_rate,weight_decay",
                                               **flatten({"fixed": sweep.params})})
    for index, (learning_rate, weight_decay, value) in enumerate(SAMPLES):
        run_id = tracker.client.create_run(tracker.experiment_id, tags={
            MLFLOW_PARENT_RUN_ID: parent, MLFLOW_RUN_NAME: f"trial_{index}", TAG_SWEEP: sweep.name,
            TAG_ROLE: "trial", TAG_STATUS: "finished"}).info.run_id
        log_params(tracker.client, run_id, {"method": "simclr", "seed": 0, "learning_rate": learning_rate,
                                            "weight_decay": weight_decay})
        tracker.client.log_batch(run_id, metrics=[Metric(METRIC, value, 0, 3)])
        tracker.client.set_terminated(run_id)
    tracker.finish_parent("FINISHED")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main([sweep.name, "--tracking-uri", uri, "--out", str(tmp_path / "report"),
                     "--metric", METRIC]) == 0
    with open(tmp_path / "report" / "pivot.csv") as handle:
        rows = list(csv.DictReader(handle))
    ranked = sorted(SAMPLES, key=lambda sample: -sample[2])
    assert [(float(row["learning_rate"]), float(row["weight_decay"])) for row in rows] == \
        [(learning_rate, weight_decay) for learning_rate, weight_decay, _ in ranked]
    assert [float(row[f"{METRIC} mean"]) for row in rows] == pytest.approx([value for *_, value in ranked])
