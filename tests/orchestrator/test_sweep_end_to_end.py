"""A real sweep through a local Ray (Tune -> Train -> SSL -> probe) into a real SQLite MLflow store."""

import math
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.tracking import TAG_ROLE, TAG_STATUS
from trainables import metrics


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, subprocess.CompletedProcess]:
    workdir = tmp_path_factory.mktemp("sweep")
    tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    completed = subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", "smoke",
         "--set", "epochs=2", "--set", "image_size=16",
         "--set", "probe_epochs=30", "--set", "probe_repeats=2",
         "--set", "method_params.projection_dim=256",
         "--tracking-uri", tracking_uri, "--storage-path", str(workdir / "ray_results")],
        cwd=workdir, capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return tracking_uri, completed


def test_mlflow_holds_a_parent_run_and_a_child_per_trial(finished_sweep) -> None:
    tracking_uri, _ = finished_sweep
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if run.data.tags.get(TAG_ROLE) == "sweep"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) >= 4
    assert {(c.data.params["method"], c.data.params["batch_size"]) for c in children} == {
        ("simclr", "64"), ("simclr", "128"), ("simsiam", "64"), ("simsiam", "128")
    }
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags[TAG_STATUS] in ("finished", "collapsed")
        # The nested method options arrive as flat params, resolved with their defaults.
        assert child.data.params["method_params.projection_dim"] == "256"
        assert child.data.params["epochs"] == "2"
        for name, steps in ((metrics.PRETRAIN_LOSS, [1, 2]), (metrics.PRETRAIN_COLLAPSE_STD, [1, 2]),
                            # epoch 0 (the initialization) and the last: knn_every=5 skips epoch 1
                            (metrics.KNN_VAL_ACCURACY, [0, 2]), (metrics.KNN_SECONDS, [0, 2])):
            history = client.get_metric_history(child.info.run_id, name)
            assert sorted(point.step for point in history) == steps, name
            assert all(math.isfinite(point.value) for point in history)
        for name in (metrics.LINEAR_TEST_ACCURACY, metrics.LINEAR_TEST_BALANCED_ACCURACY):
            value = child.data.metrics[name]
            assert 0.0 <= value <= 1.0
        # Digits is easy: a probe far above chance (0.1) shows the features carry the labels.
        assert child.data.metrics[metrics.LINEAR_TEST_ACCURACY] > 0.5
    artifacts = [item.path for item in client.list_artifacts(parent.info.run_id)]
    assert "summary.csv" in artifacts
    for child in children:
        files = {item.path for item in client.list_artifacts(child.info.run_id, "evaluation")}
        assert files == {"evaluation/confusion_matrix.json", "evaluation/tsne_test.png"}
        # Every trial saw the same images: the split hash is a fingerprint of the data.
        assert child.data.tags[metrics.SPLIT_HASH] == children[0].data.tags[metrics.SPLIT_HASH]
        assert child.data.metrics[metrics.SKIPPED_IMAGES] == 0
        # The probe's std over its repeats is logged beside the mean.
        assert child.data.metrics[metrics.LINEAR_TEST_ACCURACY + metrics.STD_SUFFIX] >= 0.0


def test_the_sweep_ends_with_a_table_of_every_trial(finished_sweep) -> None:
    tracking_uri, completed = finished_sweep
    table = completed.stdout.split("final metrics", 1)[1].splitlines()
    rows = [line for line in table if line.startswith("method=")]
    assert len(rows) == 4
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("smoke")
    by_name = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    for row in rows:
        name, method, batch_size, status, protocol, test_accuracy = row.split()[:6]
        assert status == "finished" and protocol == "linear"
        assert method in name and f"batch_size={batch_size}" in name
        # The table prints what MLflow holds.
        logged = by_name[name].data.metrics[metrics.LINEAR_TEST_ACCURACY]
        assert float(test_accuracy) == pytest.approx(logged, abs=1e-4)


