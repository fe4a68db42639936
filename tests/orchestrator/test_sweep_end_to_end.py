"""A real sweep through a local Ray (Tune -> Train -> SSL -> probe) into a real SQLite MLflow store."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pandas
import pytest
from mlflow.entities import Run
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
                            (metrics.KNN_VAL_ACCURACY, [0, 1, 2])):  # epoch 0: the initialization
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
        assert files == {"evaluation/confusion_matrix.json", "evaluation/confusion_matrix_table.json"}
        # Every trial saw the same images: the split hash is a fingerprint of the data.
        assert child.data.tags[metrics.SPLIT_HASH] == children[0].data.tags[metrics.SPLIT_HASH]
        assert child.data.metrics[metrics.SKIPPED_IMAGES] == 0
        # The probe's std over its repeats is logged beside the mean.
        assert child.data.metrics[metrics.LINEAR_TEST_ACCURACY + metrics.STD_SUFFIX] >= 0.0


def test_the_sweep_ends_with_a_table_of_every_trial(finished_sweep) -> None:
    tracking_uri, completed = finished_sweep
    table = completed.stdout.split("final metrics", 1)[1].splitlines()
    rows = [line for line in table if line.startswith(("simclr_", "simsiam_"))]
    assert len(rows) == 4
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("smoke")
    by_name = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    for row in rows:
        name, method, batch_size, status, protocol, test_accuracy = row.split()[:6]
        assert status == "finished" and protocol == "linear"
        assert name.startswith(f"{method}_bs={batch_size}_")
        # The table prints what MLflow holds.
        logged = by_name[name].data.metrics[metrics.LINEAR_TEST_ACCURACY]
        assert float(test_accuracy) == pytest.approx(logged, abs=1e-4)




def parent_and_children(tracking_uri: str) -> tuple[Run, list[Run]]:
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    parent = next(run for run in runs if run.data.tags.get(TAG_ROLE) == "sweep")
    return parent, [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def test_the_progress_view_shows_every_epoch_of_every_trial_and_the_sweep(finished_sweep) -> None:
    _, completed = finished_sweep
    progress = completed.stdout.split("final metrics", 1)[0].splitlines()
    names = {line.split()[0] for line in progress if re.fullmatch(r"  \S+  epoch \d/2  kNN 0\.\d{4}.*", line)}
    assert len(names) == 4
    for name in names:
        for epoch in (0, 1, 2):  # each epoch once, read from Tune's results
            # (the last epoch twice: its own line, then the trial's "finished" line)
            count = sum(line.startswith(f"  {name}  epoch {epoch}/2  kNN ") for line in progress)
            assert count == 1 + (epoch == 2)
        assert any(line.startswith(f"  {name}  epoch 2/2") and line.endswith("finished") for line in progress)
    sweep_lines = [line for line in progress if re.match(r"sweep smoke: \d+ finished", line)]
    assert sweep_lines[0].startswith("sweep smoke: 0 finished, ")
    assert re.fullmatch(r"sweep smoke: 4 finished, 0 running, 0 pending; elapsed \d+m\d\ds", sweep_lines[-1])
    assert any(re.search(r"; elapsed \d+(m\d\d)?s, ETA (\d+m)?\d+s$", line) for line in sweep_lines)
    # Ray's own output went to a file: no worker's lines on the terminal, every epoch line there.
    # (Lines Ray forwards after the view has ended, at its shutdown, can still reach the terminal.)
    assert not any("Reporting training result" in line for line in progress)
    log = re.search(r"Ray's own output: (\S+)", completed.stdout).group(1)
    # Tune's tables are there. (The workers' lines are too, but Ray forwards them late: on a fast run some
    # arrive after the view has ended, so their count is not asserted here; see test_progress for the dedup.)
    assert "Trial status" in Path(log).read_text()


def test_the_parent_run_carries_the_report_and_its_numbers(finished_sweep) -> None:
    tracking_uri, _ = finished_sweep
    parent, children = parent_and_children(tracking_uri)
    client = MlflowClient(tracking_uri)
    report = {item.path for item in client.list_artifacts(parent.info.run_id, "report")}
    files = ("report.md", "pivot.csv", "differences.csv", "convergence.png")
    assert report == {f"report/{name}" for name in files}
    best = max(child.data.metrics[metrics.LINEAR_TEST_BALANCED_ACCURACY] for child in children)
    assert parent.data.metrics[f"best/{metrics.LINEAR_TEST_BALANCED_ACCURACY}"] == pytest.approx(best)
    assert parent.data.tags["best_trial"] in {child.info.run_name for child in children}
    assert parent.data.metrics["trials/finished"] + parent.data.metrics.get("trials/collapsed", 0) == 4
    assert parent.data.tags["smoke"] == "true"  # the smoke sweep is a smoke run without --smoke


def test_each_trial_shows_its_confusion_matrix_as_figure_and_table(finished_sweep) -> None:
    tracking_uri, _ = finished_sweep
    _, children = parent_and_children(tracking_uri)
    client = MlflowClient(tracking_uri)
    for child in children:
        top = {item.path for item in client.list_artifacts(child.info.run_id)}
        # Figures at the top, the same names in every run: MLflow's compare page shows them side by side.
        assert {"confusion_matrix.png", "tsne_test.png", "config.json"} <= top
        figure = client.download_artifacts(child.info.run_id, "confusion_matrix.png")
        assert Path(figure).read_bytes().startswith(b"\x89PNG")
        # An MLflow table: tagged as one, stored in MLflow's table layout (columns + rows).
        assert '"type": "table"' in child.data.tags["mlflow.loggedArtifacts"]
        stored = json.loads(Path(client.download_artifacts(child.info.run_id,
                                                           "evaluation/confusion_matrix_table.json")).read_text())
        table = pandas.DataFrame(stored["data"], columns=stored["columns"])
        saved = json.loads(Path(client.download_artifacts(child.info.run_id,
                                                          "evaluation/confusion_matrix.json")).read_text())
        assert len(table) == len(saved["classes"]) ** 2
        assert table["count"].sum() == sum(map(sum, saved["matrix"]))
        diagonal = table[table["true_class"] == table["predicted_class"]]["count"].sum()
        assert diagonal == sum(saved["matrix"][i][i] for i in range(len(saved["classes"])))


def test_run_pages_hold_only_meaningful_params_and_the_whole_config_as_json(finished_sweep) -> None:
    tracking_uri, _ = finished_sweep
    _, children = parent_and_children(tracking_uri)
    client = MlflowClient(tracking_uri)
    for child in children:
        assert "None" not in child.data.params.values()
        assert "weights_dir" not in child.data.params and "norm" not in child.data.params
        config = json.loads(Path(client.download_artifacts(child.info.run_id, "config.json")).read_text())
        assert config["weights_dir"] is None and config["norm"] == "as-is"
        assert str(config["batch_size"]) == child.data.params["batch_size"]
