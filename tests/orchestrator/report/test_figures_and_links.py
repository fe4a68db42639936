"""The report's convergence legend names every axis that varies; the MLflow links open the
model-training view and the saved runs-table view; provenance tags are complete."""

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from mlflow.tracking import MlflowClient

from orchestrator.mlflow_view import SHARED_VIEW_KEY, artifact_url, run_link, runs_table_link, runs_table_view
from orchestrator.provenance import provenance_tags
from orchestrator.report.plot import convergence_figure
from orchestrator.report.runs import TrialRun


def linked_figures(client: MlflowClient, markdown: str) -> dict[str, bytes]:
    """Each image address in `markdown` that is the UI's get-artifact route, mapped to the bytes of the
    logged artifact it names (the route's path and run_uuid), as the server would serve them."""
    figures = {}
    for address in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown):
        split = urlsplit(address)
        assert split.scheme == "http" and split.path == "/get-artifact", address
        query = parse_qs(split.query)
        figures[query["path"][0]] = Path(client.download_artifacts(query["run_uuid"][0],
                                                                   query["path"][0])).read_bytes()
    return figures


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
    # `/runs` in the address: without it the UI ignores the view's key.
    assert table.startswith("http://tracking:5000/#/experiments/3/runs?")
    assert f"viewStateShareKey={SHARED_VIEW_KEY}" in table and "workflowType=machine_learning" in table
    assert runs_table_link("http://tracking:5000", "3", charts=True).endswith("&compareRunsMode=CHART")
    assert artifact_url("sqlite:///m.db", "abc", "report/convergence.png") == (
        "http://127.0.0.1:5000/get-artifact?path=report%2Fconvergence.png&run_uuid=abc")
    view = json.loads(json.dumps(runs_table_view(["linear/test_balanced_accuracy"], "knn/val_accuracy",
                                                 ["method"], ["trial_status"])))
    assert view["selectedColumns"][:4] == [
        "metrics.`linear/test_balanced_accuracy`", "metrics.`knn/val_accuracy`", "params.`method`",
        "tags.`trial_status`"]
    assert view["orderByKey"] == "metrics.`linear/test_balanced_accuracy`" and view["orderByAsc"] is False
    # The chart view opens on one section: the evaluation metric's bars, then the convergence curves.
    [section] = view["compareRunSections"]
    charts = view["compareRunCharts"]
    assert [(chart["type"], chart["metricKey"]) for chart in charts] == [
        ("BAR", "linear/test_balanced_accuracy"), ("LINE", "knn/val_accuracy")]
    assert {chart["metricSectionId"] for chart in charts} == {section["uuid"]}
    assert len({chart["uuid"] for chart in charts}) == 2 and view["isAccordionReordered"] is True


def test_provenance_names_source_user_commit_and_command() -> None:
    tags = provenance_tags(["smoke", "--set", "epochs=1"])
    assert tags["mlflow.source.name"] == "orchestrator.sweep" and tags["mlflow.user"]
    assert tags["command"] == "python -m orchestrator.sweep smoke --set epochs=1"
    assert len(tags["mlflow.source.git.commit"]) == 40  # the tests run from a git checkout
