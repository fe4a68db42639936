"""The sweep's runs as the report reads them from MLflow: the parent run and its trial child runs.

The layout is the one `orchestrator.tracking` writes: experiment = sweep name, a parent run per
invocation (tag role=sweep, params `axes` and `grid.<axis>`), a child run per trial (tag
role=trial, `mlflow.parentRunId`, `trial_status`, `error`; the flat trial config as params).
"""

import ast
import dataclasses
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from orchestrator.grid import MERGED_TRIALS_FILE
from orchestrator.tracking import ROLE_SWEEP, ROLE_TRIAL, TAG_ERROR, TAG_ROLE, TAG_STATUS
from orchestrator.trial_status import STATUS_COLLAPSED, STATUS_FINISHED
from trainables import metrics

# What the report reads beyond the tags tracking.py writes.
STATUS_UNFINISHED = "unfinished"  # no status tag: the trial is running, or its driver died
SEED = "seed"
PARENT_AXES_PARAM = "axes"
PARENT_GRID_PREFIX = "grid."


class ReportInputError(Exception):
    """Nothing to report on: the message is the one line the command line prints."""


@dataclass(frozen=True)
class TrialRun:
    run_id: str
    name: str
    status: str  # finished | collapsed | failed, or unfinished
    params: dict[str, str]  # the flat trial config, as MLflow holds it (strings)
    metrics: dict[str, float]  # each metric's latest value (a per-epoch metric's last epoch)
    error: str = ""

    @property
    def usable(self) -> bool:
        """Finished (so not collapsed: orchestrator.trial_status): the only trials averaged into
        tables and claims."""
        return self.status == STATUS_FINISHED

    def usable_for(self, metric: str) -> bool:
        """Collapse is evidence, not noise, for the collapse metric itself: there a collapsed
        trial counts; for every other metric only usable trials do."""
        if metric == metrics.PRETRAIN_COLLAPSE_STD:
            return self.status in (STATUS_FINISHED, STATUS_COLLAPSED)
        return self.usable

    def value(self, metric: str) -> float | None:
        value = self.metrics.get(metric)
        return value if value is not None and math.isfinite(value) else None


def sweep_command(sweep_name: str) -> str:
    return f"python -m orchestrator.sweep {sweep_name}"


def open_client(tracking_uri: str, sweep_name: str) -> MlflowClient:
    """The client, refusing a SQLite store that does not exist (MLflow would create an empty one)."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        path = Path(unquote(parsed.path.removeprefix("/")))  # sqlite:///relative, sqlite:////absolute
        if not path.exists():
            raise ReportInputError(f"no MLflow store at {tracking_uri}; `{sweep_command(sweep_name)}` "
                                   "creates it (or pass --tracking-uri)")
    return MlflowClient(tracking_uri)


def find_parent_run(client: MlflowClient, tracking_uri: str, sweep_name: str, run_id: str | None) -> Run:
    """The sweep's parent run: `run_id`, else the latest one."""
    experiment = client.get_experiment_by_name(sweep_name)
    if experiment is None:
        raise ReportInputError(f"no MLflow experiment {sweep_name!r} in {tracking_uri}; "
                               f"`{sweep_command(sweep_name)}` creates it")
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            raise ReportInputError(f"no run {run_id!r} in {tracking_uri}") from None
        if run.info.experiment_id != experiment.experiment_id or run.data.tags.get(TAG_ROLE) != ROLE_SWEEP:
            raise ReportInputError(f"run {run_id!r} is not a parent run of sweep {sweep_name!r}")
        return run
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.{TAG_ROLE} = '{ROLE_SWEEP}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise ReportInputError(f"no parent run of sweep {sweep_name!r} in {tracking_uri}; "
                               f"`{sweep_command(sweep_name)}` creates one")
    return runs[0]


def load_trials(client: MlflowClient, parent: Run) -> list[TrialRun]:
    """Every trial child run of `parent`, in start order."""
    filter_string = (f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}' "
                     f"and tags.{TAG_ROLE} = '{ROLE_TRIAL}'")
    runs: list[Run] = []
    page_token = None
    while True:
        page = client.search_runs([parent.info.experiment_id], filter_string=filter_string,
                                  order_by=["attributes.start_time ASC"], max_results=1000,
                                  page_token=page_token)
        runs.extend(page)
        page_token = page.token
        if not page_token:
            break
    trials = [TrialRun(run_id=run.info.run_id, name=run.info.run_name or run.info.run_id,
                       status=run.data.tags.get(TAG_STATUS, STATUS_UNFINISHED), params=dict(run.data.params),
                       metrics=dict(run.data.metrics), error=run.data.tags.get(TAG_ERROR, ""))
              for run in runs]
    return expand_merged(trials, served_cells(client, parent))


def served_cells(client: MlflowClient, parent: Run) -> list[dict[str, list[dict[str, str]]]]:
    """The parent's record of merged trials (orchestrator.grid.Grid.served_cells), [] if none."""
    if not any(item.path == MERGED_TRIALS_FILE for item in client.list_artifacts(parent.info.run_id)):
        return []
    with tempfile.TemporaryDirectory() as folder:
        path = client.download_artifacts(parent.info.run_id, MERGED_TRIALS_FILE, folder)
        return json.loads(Path(path).read_text())


def expand_merged(trials: list[TrialRun], merged: list[dict[str, list[dict[str, str]]]]) -> list[TrialRun]:
    """Each trial that ran for several cells, once per cell it serves: the same run and numbers,
    the served cell's axis values as params (so every cell of the grid has its value)."""
    expanded = list(trials)
    for entry in merged:
        [runs] = entry["runs"]
        for trial in trials:
            if all(trial.params.get(key) == value for key, value in runs.items()):
                expanded += [dataclasses.replace(trial, params={**trial.params, **cell},
                                                 name=f"{trial.name} (serves {describe_cell(cell, runs)})")
                             for cell in entry["serves"]]
    return expanded


def describe_cell(cell: dict[str, str], runs: dict[str, str]) -> str:
    """The axis values where a served cell differs from the trial that ran."""
    return ", ".join(f"{key}={value}" for key, value in cell.items() if runs.get(key) != value)


def metric_histories(client: MlflowClient, trials: list[TrialRun],
                     metric: str) -> dict[str, list[tuple[int, float]]]:
    """run id -> [(step, value)] sorted by step (step = epoch; kNN has step 0, the initialization)."""
    histories = {}
    for trial in trials:
        points = client.get_metric_history(trial.run_id, metric)
        histories[trial.run_id] = sorted((point.step, point.value) for point in points)
    return histories


def sweep_axes(parent: Run, fallback: list[str]) -> list[str]:
    """The parent's grid axes (its `axes` param), without `seed`: the seeds are what we average over."""
    raw = parent.data.params.get(PARENT_AXES_PARAM)
    axes = [axis for axis in raw.split(",") if axis] if raw is not None else list(fallback)
    return [axis for axis in axes if axis != SEED]


def seeds_vary(parent: Run, trials: list[TrialRun]) -> bool:
    axes = parent.data.params.get(PARENT_AXES_PARAM, "").split(",")
    return SEED in axes or len({trial.params.get(SEED) for trial in trials}) > 1


def axis_values(parent: Run, trials: list[TrialRun], axis: str) -> list[str]:
    """The axis's values in grid order (the parent's `grid.<axis>`), then any others seen, sorted."""
    ordered: list[str] = []
    raw = parent.data.params.get(PARENT_GRID_PREFIX + axis)
    if raw is not None:
        try:
            ordered = [str(value) for value in ast.literal_eval(raw)]
        except (ValueError, SyntaxError):
            ordered = []
    seen = {trial.params[axis] for trial in trials if axis in trial.params}
    return [value for value in ordered if value in seen] + sorted(seen - set(ordered), key=natural_key)


def natural_key(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)
