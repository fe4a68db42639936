"""The report's convergence legend names every axis that varies; the MLflow links open the
model-training view and the saved runs-table view; provenance tags are complete."""

import json

from orchestrator.mlflow_view import SHARED_VIEW_KEY, run_link, runs_table_link, runs_table_view
from orchestrator.provenance import provenance_tags
from orchestrator.report.plot import convergence_figure
from orchestrator.report.runs import TrialRun


def test_convergence_legend_tells_apart_both_axes_of_a_two_axis_grid() -> None:
    trials = [TrialRun(f"run{index}", f"{method}_bs={batch}_{index}", "finished",
                       {"method": method, "batch_size": batch}, {})
              for index, (method, batch) in enumerate([("simclr", "64"), ("simclr", "128"),
                                                       ("simsiam", "64"), ("simsiam", "128")])]
    histories = {trial.run_id: [(0, 0.1), (1, 0.2 + index / 10)] for index, trial in enumerate(trials)}
    figure = convergence_figure(trials, histories, "knn/val_accuracy", ["method"], "batch_size")
    axes = figure.axes[0]
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert labels == ["method=simclr", "method=simsiam", "batch_size=64", "batch_size=128"]
    # Every pair of trials differs in colour or line style: no two lines look the same.
    looks = {(line.get_color(), str(line.get_linestyle())) for line in axes.get_lines()}
    assert len(looks) == len(trials)


def test_links_open_the_model_training_view_and_the_saved_runs_view() -> None:
    assert run_link("sqlite:///mlflow.db", "3", "abc") == (
        "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning")
    table = runs_table_link("http://tracking:5000/", "3")
    assert table.startswith("http://tracking:5000/#/experiments/3/runs?")
    assert f"viewStateShareKey={SHARED_VIEW_KEY}" in table and "workflowType=machine_learning" in table
    view = json.loads(json.dumps(runs_table_view("parent", ["linear/test_balanced_accuracy"], ["method"],
                                                 ["trial_status"])))
    assert view["runsExpanded"] == {"parent": True}
    assert view["selectedColumns"][:3] == ["metrics.`linear/test_balanced_accuracy`", "params.`method`",
                                           "tags.`trial_status`"]
    assert view["orderByKey"] == "metrics.`linear/test_balanced_accuracy`" and view["orderByAsc"] is False


def test_provenance_names_source_user_commit_and_command() -> None:
    tags = provenance_tags(["smoke", "--set", "epochs=1"])
    assert tags["mlflow.source.name"] == "orchestrator.sweep" and tags["mlflow.user"]
    assert tags["command"] == "python -m orchestrator.sweep smoke --set epochs=1"
    assert len(tags["mlflow.source.git.commit"]) == 40  # the tests run from a git checkout
