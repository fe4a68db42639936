"""How a sweep opens in MLflow's UI: links to its runs table and parent run in the model-training
view, and a saved view of the runs table with the columns that matter already ticked.

MLflow 3.17's UI ignores the experiment's `mlflow.experimentKind` tag: it shows every experiment in
the view its global GenAI / Model-training switch selects (GenAI unless switched), which the
`workflowType` query parameter sets and keeps across the pages a link leads to. So every link the
sweep prints carries `workflowType=machine_learning`.

The runs table's columns, sort order and expanded parent come from a "shared view": an experiment
tag `mlflow.sharedViewState.<key>` holding the view's state as JSON, opened by the link's
`viewStateShareKey=<key>` (the UI's own Share button writes the same tag).
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


def runs_table_link(tracking_uri: str, experiment_id: str, with_view: bool = True) -> str:
    query = {**({"viewStateShareKey": SHARED_VIEW_KEY} if with_view else {}), **WORKFLOW_PARAMETER}
    return f"{ui_address(tracking_uri)}/#/experiments/{experiment_id}/runs?{urlencode(query)}"


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    return f"{ui_address(tracking_uri)}/{run_page_path(experiment_id, run_id)}"


def run_page_path(experiment_id: str, run_id: str) -> str:
    """A run page's address relative to the UI (for links in MLflow-rendered Markdown)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}?{urlencode(WORKFLOW_PARAMETER)}"


def metric_column(name: str) -> str:
    return f"metrics.`{name}`"


def param_column(name: str) -> str:
    return f"params.`{name}`"


def tag_column(name: str) -> str:
    return f"tags.`{name}`"


def runs_table_view(parent_run_id: str, metric_names: Sequence[str], axes: Sequence[str],
                    tag_names: Sequence[str]) -> dict:
    """The saved view's state: the parent expanded, its trials sorted by the first metric (highest
    first), the metrics, the grid's axes and the tags as columns, then source and user."""
    columns = [*map(metric_column, metric_names), *map(param_column, axes), *map(tag_column, tag_names),
               SOURCE_COLUMN, USER_COLUMN]
    return {"selectedColumns": list(dict.fromkeys(columns)), "runsExpanded": {parent_run_id: True},
            "orderByKey": metric_column(metric_names[0]) if metric_names else "attributes.start_time",
            "orderByAsc": False}


def save_runs_table_view(client: MlflowClient, experiment_id: str, view: dict) -> None:
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG_PREFIX + SHARED_VIEW_KEY, json.dumps(view))
