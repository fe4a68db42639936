"""A real sweep through a local Ray (Tune -> Train -> SSL -> probe) into a real SQLite MLflow store."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.pytorch
import pandas
import pytest
import torch
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from PIL import Image

from orchestrator.lineage import MODEL_NAME
from orchestrator.tracking import TAG_ROLE, TAG_STATUS
from tests.orchestrator.report.test_figures_and_links import linked_figures
from trainables import metrics
from trainables.augmentations import normalize
from trainables.data import load_dataset
from trainables.data.pretraining import content_hash
from trainables.evaluation import knn_accuracy
from trainables.initializations import build_initialized_backbone

REGISTERED_MODEL = "smoke-backbones"


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, subprocess.CompletedProcess]:
    workdir = tmp_path_factory.mktemp("sweep")
    tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    completed = subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", "smoke",
         "--set", "epochs=2", "--set", "image_size=16",
         "--set", "probe_epochs=30", "--set", "probe_repeats=2",
         "--set", "method_params.projection_dim=256", "--register-model", REGISTERED_MODEL,
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
        names = ("confusion_matrix.json", "confusion_matrix_table.json", "confusion_matrix_wide.json",
                 "tsne_test.json")
        assert files == {f"evaluation/{name}" for name in names}
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




def trial_runs(tracking_uri: str, experiment: str) -> list:
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return [run for run in runs if run.data.tags.get(TAG_ROLE) == "trial"]


def test_each_trial_logs_its_backbone_data_throughput_and_memory_in_mlflow_terms(finished_sweep) -> None:
    tracking_uri, _ = finished_sweep
    client = MlflowClient(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    children = trial_runs(tracking_uri, "smoke")
    data = load_dataset("digits", 16, seed=0)
    for child in children:
        run_id = child.info.run_id
        # The backbone loads with MLflow's own API, and is the trained one: its features give the
        # final kNN accuracy the trial reported.
        backbone = mlflow.pytorch.load_model(f"runs:/{run_id}/{MODEL_NAME}")
        info = mlflow.models.get_model_info(f"runs:/{run_id}/{MODEL_NAME}")
        with torch.no_grad():  # an exported graph, in eval mode already: called, never .eval()-ed
            train, val = (backbone(normalize(images)) for images in (data.train_images, data.val_images))
        assert info.metadata["feature_dim"] == 256
        assert train.shape == (len(data.train_images), info.metadata["feature_dim"])
        accuracy = knn_accuracy(train, data.train_labels, val, data.val_labels, data.num_classes, k=20)
        assert accuracy == pytest.approx(child.data.metrics[metrics.KNN_VAL_ACCURACY], abs=0.003)
        # Its data are two dataset inputs: the splits it is evaluated on (digest: the split hash)
        # and the pool SSL pretrained on, here the same dataset's train split (its images' hash).
        inputs = {tag.value: entry.dataset for entry in child.inputs.dataset_inputs
                  for tag in entry.tags if tag.key == "mlflow.data.context"}
        assert sorted(inputs) == ["evaluation", "pretraining"]
        assert inputs["evaluation"].name == inputs["pretraining"].name == "digits"
        assert inputs["evaluation"].digest == child.data.tags[metrics.SPLIT_HASH] == data.split_hash()
        assert inputs["pretraining"].digest == content_hash(data.train_images)
        for name in (metrics.PRETRAIN_IMAGES_PER_SECOND, metrics.PEAK_PROCESS_RSS_MIB):
            history = client.get_metric_history(run_id, name)
            assert sorted(point.step for point in history) == [1, 2], name
            assert all(point.value > 0 for point in history)
        # Images per second: the images of the epoch's full batches over the epoch's time.
        (first_epoch,) = [point for point in client.get_metric_history(run_id, metrics.PRETRAIN_EPOCH_SECONDS)
                          if point.step == 1]
        (images_per_second,) = [point for point in client.get_metric_history(
            run_id, metrics.PRETRAIN_IMAGES_PER_SECOND) if point.step == 1]
        batch_size = int(child.data.params["batch_size"])
        steps = len(data.train_images) // batch_size
        assert images_per_second.value == pytest.approx(steps * batch_size / first_epoch.value, rel=1e-6)
    # --register-model: one version per finished trial, each from its trial's run.
    versions = client.search_model_versions(f"name = '{REGISTERED_MODEL}'")
    assert sorted(version.run_id for version in versions) == sorted(child.info.run_id for child in children)


def test_a_sweep_started_from_a_runs_uri_begins_from_that_trials_backbone(finished_sweep, tmp_path) -> None:
    tracking_uri, _ = finished_sweep
    source = trial_runs(tracking_uri, "smoke")[0]
    location = f"runs:/{source.info.run_id}/{MODEL_NAME}"
    # method none: no pretraining, so the second sweep's backbone is exactly where it started.
    completed = subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", "methods_on_shapes",
         "--set", "method=none", "--set", "dataset=digits", "--set", "image_size=16",
         "--set", "init=ssl-imagenet", "--set", f"weights_path={location}",
         "--set", "probe_epochs=30", "--set", "probe_repeats=1",
         # Block similarity rebuilds the initialization from the config the trial ran with (the
         # shipped weights), not from the runs:/ location, which a worker cannot load.
         "--set", "block_similarity=true",
         "--tracking-uri", tracking_uri, "--storage-path", str(tmp_path / "ray_results")],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    (started,) = trial_runs(tracking_uri, "methods_on_shapes")
    client = MlflowClient(tracking_uri)
    (epoch_zero,) = client.get_metric_history(started.info.run_id, metrics.KNN_VAL_ACCURACY)
    assert epoch_zero.step == 0
    assert epoch_zero.value == pytest.approx(source.data.metrics[metrics.KNN_VAL_ACCURACY], abs=0.003)
    # Not a random init's: the weights it started from (its own logged backbone) are the source's.
    mlflow.set_tracking_uri(tracking_uri)
    source_weights = mlflow.pytorch.load_model(location).state_dict()
    started_weights = mlflow.pytorch.load_model(f"runs:/{started.info.run_id}/{MODEL_NAME}").state_dict()
    random_weights = build_initialized_backbone("cbr_nano", "random", seed=0)[0].state_dict()
    assert set(started_weights) == set(source_weights)
    for key, value in source_weights.items():
        assert torch.equal(started_weights[key], value), key
    assert not all(torch.equal(random_weights[key], value) for key, value in source_weights.items())
    # Block similarity ran: it built the initialization from the shipped weights (method none has
    # no pretraining comparison, only the random-init baseline next to it).
    assert started.data.metrics[metrics.SIMILARITY_SECONDS] > 0
    baseline = metrics.similarity_metric(metrics.SIMILARITY_RANDOM_BASELINE, "cka", "")
    pretraining = metrics.similarity_metric(metrics.SIMILARITY_PRETRAINING, "cka", "")
    values = [value for name, value in started.data.metrics.items() if name.startswith(baseline)]
    assert values and all(0 <= value <= 1 + 1e-6 for value in values)
    assert not any(name.startswith(pretraining) for name in started.data.metrics)


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
    output = Path(log).read_text()
    assert "Trial status" in output
    # Each worker line once: Train V2's print patch, off for the workers, printed every line twice.
    epoch_lines = re.findall(r"^.*\(RayTrainWorker pid=\d+\).* epoch \d+/\d+ .*$", output, re.MULTILINE)
    assert epoch_lines and len(epoch_lines) == len(set(epoch_lines))


def test_the_parent_run_carries_the_report_and_its_numbers(finished_sweep) -> None:
    tracking_uri, _ = finished_sweep
    parent, children = parent_and_children(tracking_uri)
    client = MlflowClient(tracking_uri)
    report = {item.path for item in client.list_artifacts(parent.info.run_id, "report")}
    files = ("report.md", "pivot.csv", "differences.csv", "convergence.png")
    assert report == {f"report/{name}" for name in files}
    # Written just before the parent run ends: it names the status the run ended with, not RUNNING.
    markdown = Path(client.download_artifacts(parent.info.run_id, "report/report.md")).read_text()
    assert parent.info.status == "FINISHED" and f"{parent.info.run_name}, FINISHED)" in markdown
    best = max(child.data.metrics[metrics.LINEAR_TEST_BALANCED_ACCURACY] for child in children)
    assert parent.data.metrics[f"best/{metrics.LINEAR_TEST_BALANCED_ACCURACY}"] == pytest.approx(best)
    assert parent.data.tags["best_trial"] in {child.info.run_name for child in children}
    assert parent.data.metrics["trials/finished"] + parent.data.metrics.get("trials/collapsed", 0) == 4
    assert parent.data.tags["smoke"] == "true"  # the smoke sweep is a smoke run without --smoke
    # The figure in the logged report.md is the UI's address of the logged convergence.png (MLflow's
    # Markdown viewer shows no relative or inlined image), and no verdict word stands without a claim.
    figure = Path(client.download_artifacts(parent.info.run_id, "report/convergence.png")).read_bytes()
    assert linked_figures(client, markdown) == {"report/convergence.png": figure}
    assert "The sweep states no paper claims." in markdown and "disagrees" not in markdown
    # Provenance: the hypothesis as the description, source, user, commit and command on every run.
    assert parent.data.tags["mlflow.note.content"].startswith("smoke: the whole path")
    for run in [parent, *children]:
        assert run.data.tags["mlflow.source.name"] == "orchestrator.sweep" and run.data.tags["mlflow.user"]
        assert len(run.data.tags["mlflow.source.git.commit"]) == 40
        assert run.data.tags["command"].startswith("python -m orchestrator.sweep smoke ")
    # The printed links open the model-training view: the runs table's saved view and the parent.
    _, completed = finished_sweep
    experiment_id = parent.info.experiment_id
    assert f"/runs/{parent.info.run_id}?workflowType=machine_learning" in completed.stdout
    assert (f"/#/experiments/{experiment_id}/runs?viewStateShareKey=sweep&workflowType=machine_learning"
            "&compareRunsMode=CHART") in completed.stdout
    view = json.loads(client.get_experiment(experiment_id).tags["mlflow.sharedViewState.sweep"])
    assert f"metrics.`{metrics.LINEAR_TEST_BALANCED_ACCURACY}`" in view["selectedColumns"]
    assert view["compareRunCharts"][0]["metricKey"] == metrics.LINEAR_TEST_BALANCED_ACCURACY
    # The best trial is a link with the whole address (MLflow's Markdown drops relative ones).
    best_link = (f"(http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{parent.data.tags['best_run_id']}"
                 "?workflowType=machine_learning)")
    assert best_link in parent.data.tags["mlflow.note.content"]


def test_each_trial_shows_its_confusion_matrix_as_figure_and_table(finished_sweep) -> None:
    tracking_uri, _ = finished_sweep
    _, children = parent_and_children(tracking_uri)
    client = MlflowClient(tracking_uri)
    for child in children:
        top = {item.path for item in client.list_artifacts(child.info.run_id)}
        # Figures at the top, the same names in every run: MLflow's compare page shows them side by side.
        assert {"confusion_matrix.png", "tsne_test.png", "confusion_matrix.csv", "config.json"} <= top
        # Titled with the run's name (its axis values), so side-by-side panes tell themselves apart.
        for name in ("confusion_matrix.png", "tsne_test.png"):
            with Image.open(client.download_artifacts(child.info.run_id, name)) as figure:
                assert figure.format == "PNG" and figure.text["Title"].startswith(f"{child.info.run_name}: ")
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
        # ... and as the matrix reads: a row per true class, a column per predicted class.
        stored = json.loads(Path(client.download_artifacts(child.info.run_id,
                                                           "evaluation/confusion_matrix_wide.json")).read_text())
        wide = pandas.DataFrame(stored["data"], columns=stored["columns"])
        assert stored["columns"] == ["true \\ predicted", *saved["classes"]]
        assert wide[saved["classes"]].to_numpy().tolist() == saved["matrix"]
        # The same at the top as a CSV: the compare view lists top-level files and shows CSVs as tables.
        shown = pandas.read_csv(client.download_artifacts(child.info.run_id, "confusion_matrix.csv"),
                                dtype=str)
        assert shown.columns.tolist() == stored["columns"]
        assert shown.values.tolist() == [[str(cell) for cell in row] for row in stored["data"]]


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
