"""How a sweep opens in MLflow's UI: links to its runs table and parent run in the model-training
view, and a saved view of the runs table with the columns that matter already ticked.

MLflow 3.17's UI ignores the experiment's `mlflow.experimentKind` tag: it shows every experiment in
the view its global GenAI / Model-training switch selects (GenAI unless switched), which the
`workflowType` query parameter sets and keeps across the pages a link leads to. So every link the
sweep prints carries `workflowType=machine_learning`.

The runs table's columns and sort order, and the chart view's first charts, come from a "shared
view": an experiment tag `mlflow.sharedViewState.<key>` holding the view's state as JSON, opened by
`#/experiments/<id>/runs?viewStateShareKey=<key>` (the UI's own Share button writes the same tag;
without `/runs` in the address the UI ignores the key). The UI leaves a shared view's expanded rows
out, so the parent cannot be opened from it; sorted by a metric, the table lists the trials at the
top level anyway (seen in 3.17.2).

MLflow's Markdown viewer shows an image only from an absolute http(s) address: it drops `data:`
images and prints relative ones as text. Figures in Markdown it renders (the report, a run's
description) point at the UI's own `get-artifact` route (`artifact_url`).
"""

import json
from collections.abc import Sequence
from urllib.parse import urlencode

from mlflow.tracking import MlflowClient

from trainables.redaction import redact_uri

WORKFLOW_PARAMETER = {"workflowType": "machine_learning"}
SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
SHARED_VIEW_KEY = "sweep"  # one saved view per sweep experiment, rewritten by each sweep run
DEFAULT_UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default
UI_COMMAND = "mlflow ui --backend-store-uri {uri} --workers 1"  # one worker: starts on a 2-core machine
SOURCE_COLUMN, USER_COLUMN = "attributes.`Source`", "attributes.`User`"


def ui_address(tracking_uri: str) -> str:
    """The tracking server itself when the sweep logs to one, else where `mlflow ui` would serve."""
    served = tracking_uri.startswith(("http://", "https://"))
    return redact_uri(tracking_uri).rstrip("/") if served else DEFAULT_UI_ADDRESS


def runs_table_link(tracking_uri: str, experiment_id: str, with_view: bool = True,
                    charts: bool = False) -> str:
    """The runs table (`charts`: the chart view) in the saved view."""
    query = {**({"viewStateShareKey": SHARED_VIEW_KEY} if with_view else {}), **WORKFLOW_PARAMETER,
             **({"compareRunsMode": "CHART"} if charts else {})}
    return f"{ui_address(tracking_uri)}/#/experiments/{experiment_id}/runs?{urlencode(query)}"


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    query = urlencode(WORKFLOW_PARAMETER)
    return f"{ui_address(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}?{query}"


def artifact_url(tracking_uri: str, run_id: str, path: str) -> str:
    """Where the UI's server serves a run's artifact: the image address MLflow's Markdown shows."""
    return f"{ui_address(tracking_uri)}/get-artifact?{urlencode({'path': path, 'run_uuid': run_id})}"


def metric_column(name: str) -> str:
    return f"metrics.`{name}`"


def param_column(name: str) -> str:
    return f"params.`{name}`"


def tag_column(name: str) -> str:
    return f"tags.`{name}`"


def runs_table_view(evaluation_metrics: Sequence[str], convergence_metric: str, axes: Sequence[str],
                    tag_names: Sequence[str]) -> dict:
    """The saved view's state: trials sorted by the first evaluation metric (highest first); the
    metrics, the grid's axes and the tags as columns, then source and user; the chart view opening
    on a section with a bar chart of each evaluation metric and the convergence curves."""
    evaluation_metrics = list(dict.fromkeys(evaluation_metrics))  # claims may share a metric
    metric_names = [*evaluation_metrics, convergence_metric]
    columns = [*map(metric_column, metric_names), *map(param_column, axes), *map(tag_column, tag_names),
               SOURCE_COLUMN, USER_COLUMN]
    charts = [chart_card("BAR", name, index) for index, name in enumerate(evaluation_metrics)]
    charts.append({**chart_card("LINE", convergence_metric, len(charts)), **LINE_CHART_DEFAULTS})
    return {"selectedColumns": list(dict.fromkeys(columns)),
            "orderByKey": metric_column(metric_names[0]), "orderByAsc": False,
            "compareRunSections": [{"uuid": CHART_SECTION_ID, "name": CHART_SECTION_NAME, "display": True,
                                    "isReordered": False, "deleted": False, "isGenerated": False}],
            "compareRunCharts": charts,
            # Keeps this section first; the UI appends a section per metric prefix after it.
            "isAccordionReordered": True}


CHART_SECTION_ID, CHART_SECTION_NAME = "sweep", "the sweep's metrics"
# A line chart's settings as the UI's own LINE card has them (per step, unsmoothed, linear axes).
LINE_CHART_DEFAULTS = {
    "xAxisKey": "step", "yAxisKey": "metric", "xAxisScaleType": "linear", "scaleType": "linear",
    "lineSmoothness": 0, "selectedXAxisMetricKey": "", "yAxisExpressions": [], "ignoreOutliers": False,
    "useGlobalXaxisKey": True, "useGlobalLineSmoothing": True,
}


def chart_card(chart_type: str, metric_name: str, index: int) -> dict:
    """One chart of the saved view's section (the fields of the UI's chart cards)."""
    return {"uuid": f"sweep-{index}", "type": chart_type, "metricKey": metric_name,
            "displayName": metric_name, "metricSectionId": CHART_SECTION_ID, "runsCountToCompare": 10,
            "deleted": False, "isGenerated": False}


def save_runs_table_view(client: MlflowClient, experiment_id: str, view: dict) -> None:
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG_PREFIX + SHARED_VIEW_KEY, json.dumps(view))
