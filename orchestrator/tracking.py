"""The sweep's MLflow runs: the tracking URI, one experiment per sweep, a parent run per
invocation, one nested child run per trial (flat params, per-epoch metrics with step = epoch,
final metrics, the trial's status by orchestrator.trial_status).

Every write to the parent run from the sweep's driver goes through `SweepTracker` (`tag_parent`,
`log_parent_dict`, `log_parent_text`: the smoke flag, the merged trials, summary.csv, the
search's best config, the screening's ranking), and every write to a trial's child run through
`MlflowTrialLogger`. Beside these, three modules own writes of their own, called from here or
with a client made here: `lineage` (a trial's dataset inputs, its backbone as an MLflow model),
`run_page` (a trial's config artifact and its evaluation's files) and `mlflow_view` (the saved
runs-table view, an experiment tag). The report (`report.render`) writes itself onto the parent
run with its own client, since `python -m orchestrator.report` runs without a sweep.

`MlflowTrialLogger` is a Ray Tune callback: it runs in the driver process, so workers never
need to reach the tracking server. It finds a trial's existing child run by the trial id, so a
resumed sweep logs into the same runs instead of duplicating them.
"""

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray.train
from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME, MLFLOW_RUN_NOTE
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from orchestrator.grid import running_config
from orchestrator.lineage import log_backbone_model, log_dataset_input, log_pretraining_input
from orchestrator.mlflow_view import save_runs_table_view
from orchestrator.provenance import provenance_tags
from orchestrator.resources import ResourcePlan
from orchestrator.run_page import log_config, log_evaluation_folder, meaningful_params, sweep_axes
from orchestrator.trial_status import STATUS_INTERRUPTED, STATUS_RUNNING, trial_status
from trainables import metrics
from trainables.config import TrialConfig
from trainables.redaction import redact_values
from trainables.trial_checkpoint import ARTIFACTS_FOLDER

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
TAG_SWEEP = "sweep"
TAG_TRIAL_ID = "ray.trial_id"
TAG_ROLE = "role"  # ROLE_SWEEP on the parent run, ROLE_TRIAL on children
ROLE_SWEEP, ROLE_TRIAL = "sweep", "trial"
TAG_STATUS = "trial_status"
TAG_ERROR = "error"
TAG_MODEL_ERROR = "model_error"  # why the backbone is not an MLflow model
LOGGED_METRICS = (*metrics.PER_EPOCH, *metrics.FINAL, *metrics.FINETUNE_CURVES)
# What the experiment is for. MLflow 3.17's UI does not read it (its GenAI / model-training switch
# decides, see orchestrator.mlflow_view); it stays for clients and MLflow versions that do.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def resolve_tracking_uri(cli_value: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory."""
    return cli_value or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts -> {"a.b": "value"}: MLflow params are flat strings."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    existing = client.get_run(run_id).data.params
    # URIs without user:password or query string (trainables.redaction): params are for reading.
    new = [Param(key, redact_values(value)) for key, value in flatten(params).items() if key not in existing]
    for start in range(0, len(new), 100):  # MLflow accepts at most 100 params per batch
        client.log_batch(run_id, params=new[start:start + 100])


class SweepTracker:
    """The sweep's experiment and its parent run."""

    def __init__(self, tracking_uri: str, sweep_name: str) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        experiment = self.client.get_experiment_by_name(sweep_name)
        self.experiment_id = (experiment.experiment_id if experiment
                              else self.client.create_experiment(sweep_name, tags=EXPERIMENT_TAGS))
        self.sweep_name = sweep_name
        self.parent_run_id: str | None = None

    def start_parent(self, run_name: str, params: Mapping[str, Any], description: str = "") -> str:
        """The parent run, with the sweep's provenance and `description` (its hypothesis) as the
        run's description."""
        tags = {TAG_SWEEP: self.sweep_name, TAG_ROLE: ROLE_SWEEP, **provenance_tags()}
        if description:
            tags[MLFLOW_RUN_NOTE] = description
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.parent_run_id = run.info.run_id
        log_params(self.client, self.parent_run_id, params)
        return self.parent_run_id

    def resume_parent(self) -> str:
        """The latest parent run of this sweep, for --resume."""
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.{TAG_ROLE} = '{ROLE_SWEEP}'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )
        if not runs:
            raise RuntimeError(
                f"no earlier run of sweep {self.sweep_name!r} in {self.tracking_uri} to resume"
            )
        self.parent_run_id = runs[0].info.run_id
        self.client.update_run(self.parent_run_id, status="RUNNING")
        return self.parent_run_id

    def tag_parent(self, key: str, value: str) -> None:
        self.client.set_tag(self.parent_run_id, key, value)

    def log_parent_dict(self, values: Any, artifact_file: str) -> None:
        """`values` as a JSON (or YAML, by the file's ending) artifact of the parent run."""
        self.client.log_dict(self.parent_run_id, values, artifact_file)

    def log_parent_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.parent_run_id, text, artifact_file)

    def save_runs_table_view(self, view: dict) -> None:
        """The experiment's saved runs-table view (orchestrator.mlflow_view.runs_table_view)."""
        save_runs_table_view(self.client, self.experiment_id, view)

    def finish_parent(self, status: str) -> None:
        """End the parent run as FINISHED, FAILED or KILLED (interrupted)."""
        self.client.set_terminated(self.parent_run_id, status=status)

    def close_unfinished_trials(self) -> int:
        """Mark the parent's children still RUNNING as KILLED, tagged interrupted: their trials were
        stopped (Ctrl-C) or their driver died (kill -9), and --resume continues them. Returns how many."""
        unfinished = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.{MLFLOW_PARENT_RUN_ID} = '{self.parent_run_id}' and "
                          "attributes.status = 'RUNNING'",
        )
        for run in unfinished:
            self.client.set_tag(run.info.run_id, TAG_STATUS, STATUS_INTERRUPTED)
            self.client.set_terminated(run.info.run_id, status=RunStatus.to_string(RunStatus.KILLED))
        return len(unfinished)

    def trial_logger(self, method_params: dict[str, dict[str, Any]],
                     plan: ResourcePlan | None = None,
                     registered_model_name: str | None = None) -> "MlflowTrialLogger":
        return MlflowTrialLogger(self.tracking_uri, self.experiment_id, self.sweep_name, self.parent_run_id,
                                 method_params, plan, registered_model_name=registered_model_name)


class MlflowTrialLogger(Callback):
    """Tune callback: one child run per trial, nested under the sweep's parent run."""

    def __init__(self, tracking_uri: str, experiment_id: str, sweep_name: str, parent_run_id: str,
                 method_params: dict[str, dict[str, Any]] | None = None,
                 plan: ResourcePlan | None = None,
                 registered_model_name: str | None = None) -> None:
        self.method_params = method_params or {}
        self.plan = plan  # trials run sized to its GPUs (orchestrator/memory.py): log them so
        self.registered_model_name = registered_model_name  # each trial's backbone: a version of it
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.sweep_name = sweep_name
        self.parent_run_id = parent_run_id
        self._run_ids: dict[str, str] = {}
        self._logged: dict[str, set[tuple[str, int]]] = {}  # run id -> (metric, step) already in MLflow
        self._configs: dict[str, TrialConfig] = {}  # trial id -> its running config

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)

    def __getstate__(self) -> dict[str, Any]:
        # Tune saves this callback with the experiment; a restored copy must look its runs and
        # their logged steps up again in MLflow, not trust what they were at the last save.
        return {**self.__dict__, "_run_ids": {}, "_logged": {}, "_configs": {}}

    def run_id(self, trial: Trial) -> str:
        if trial.trial_id in self._run_ids:
            return self._run_ids[trial.trial_id]
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.{TAG_TRIAL_ID} = '{trial.trial_id}' and "
                          f"tags.{MLFLOW_PARENT_RUN_ID} = '{self.parent_run_id}'",
            max_results=1,
        )
        if found:  # a resumed or retried trial: its run goes on, without the last attempt's verdict
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            if TAG_ERROR in found[0].data.tags:
                self.client.delete_tag(run_id, TAG_ERROR)
            self._logged[run_id] = {(name, point.step) for name in LOGGED_METRICS
                                    for point in self.client.get_metric_history(run_id, name)}
        else:
            run_id = self.client.create_run(
                self.experiment_id,
                tags={MLFLOW_PARENT_RUN_ID: self.parent_run_id, MLFLOW_RUN_NAME: str(trial),
                      TAG_TRIAL_ID: trial.trial_id, TAG_SWEEP: self.sweep_name, TAG_ROLE: ROLE_TRIAL,
                      **provenance_tags()},
            ).info.run_id
            params = self.trial_config(trial).to_dict()
            axes = sweep_axes(self.client, self.parent_run_id)
            log_params(self.client, run_id, meaningful_params(params, axes))
            log_config(self.client, run_id, params)
            self._logged[run_id] = set()
        self.client.set_tag(run_id, TAG_STATUS, STATUS_RUNNING)
        self._run_ids[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.run_id(trial)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial,
                        result: dict, **info: Any) -> None:
        step = int(result.get(metrics.EPOCH, 0))
        timestamp = int(result.get("timestamp", 0) * 1000)
        final = any(name in result for name in metrics.FINAL)
        # The final result repeats the last epoch's kNN accuracy for Tune; MLflow has it already.
        names = metrics.FINAL if final else metrics.PER_EPOCH
        run_id = self.run_id(trial)
        # An epoch reported again after a restore (see trainables.loop) is already here: each
        # (metric, step) is logged once, so every curve has each epoch exactly once.
        seen = self._logged[run_id]
        logged = [Metric(name, float(result[name]), timestamp, step)
                  for name in names
                  if isinstance(result.get(name), int | float) and math.isfinite(result[name])
                  and (name, step) not in seen]
        # Fine-tuning's curves come as lists in the final result: value i is fine-tuning epoch i + 1.
        logged += [Metric(name, float(value), timestamp, epoch)
                   for name in metrics.FINETUNE_CURVES if isinstance(result.get(name), list)
                   for epoch, value in enumerate(result[name], start=1)
                   if math.isfinite(value) and (name, epoch) not in seen]
        if logged:
            self.client.log_batch(run_id, metrics=logged)
            seen.update((metric.key, metric.step) for metric in logged)
        if metrics.SPLIT_HASH in result:
            self.client.set_tag(run_id, metrics.SPLIT_HASH, str(result[metrics.SPLIT_HASH]))
            log_dataset_input(self.client, run_id, self.trial_config(trial), result[metrics.SPLIT_HASH])
        if metrics.PRETRAIN_HASH in result:
            log_pretraining_input(self.client, run_id, self.trial_config(trial),
                                  result[metrics.PRETRAIN_HASH])
        if metrics.AUGMENTATION_RECIPES in result:
            log_augmentation(self.client, run_id, result)
        if CHECKPOINT_PATH_KEY in result and any(name in result for name in metrics.FINAL):
            # One local copy of the final checkpoint (a download where storage is remote) for both.
            # The path is relative to the storage's file system (no s3:// on remote storage): read it
            # through the trial's, which is the Train runs' too (both live under --storage-path).
            filesystem = getattr(getattr(trial, "storage", None), "storage_filesystem", None)
            checkpoint = ray.train.Checkpoint(result[CHECKPOINT_PATH_KEY], filesystem=filesystem)
            with checkpoint.as_directory() as directory:
                self.log_evaluation_artifacts(trial, Path(directory))
                self.log_backbone(trial, Path(directory), step)

    def log_evaluation_artifacts(self, trial: Trial, checkpoint_directory: Path) -> None:
        """The final checkpoint carries the evaluation's files (confusion matrix, t-SNE plot)."""
        artifacts = checkpoint_directory / ARTIFACTS_FOLDER
        if artifacts.is_dir():
            log_evaluation_folder(self.client, self.run_id(trial), artifacts, ARTIFACTS_FOLDER, str(trial))

    def trial_config(self, trial: Trial) -> TrialConfig:
        """The trial's config as its workers run it (grid.running_config: what the Tune driver
        hands them), resolved once per trial."""
        if trial.trial_id not in self._configs:
            self._configs[trial.trial_id] = running_config(trial.config, self.method_params, self.plan)
        return self._configs[trial.trial_id]

    def log_backbone(self, trial: Trial, checkpoint_directory: Path, step: int) -> None:
        """The final checkpoint's backbone as the run's MLflow model (orchestrator.lineage)."""
        try:
            log_backbone_model(self.tracking_uri, self.experiment_id, self.run_id(trial),
                               checkpoint_directory, self.trial_config(trial), step,
                               self.registered_model_name)
        except Exception as error:  # e.g. a module torch.export cannot trace: the trial's results stand
            line = f"{type(error).__name__}: {' '.join(str(error).split())}"[:5000]
            print(f"warning: trial {trial}: its backbone was not logged as an MLflow model ({line})",
                  flush=True)
            self.client.set_tag(self.run_id(trial), TAG_MODEL_ERROR, line)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        run_id = self.run_id(trial)
        self.client.set_tag(run_id, TAG_STATUS, trial_status(trial.last_result or {}))
        self.client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FINISHED))

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        run_id = self.run_id(trial)
        self.client.set_tag(run_id, TAG_STATUS, trial_status({}, failed=True))
        self.client.set_tag(run_id, TAG_ERROR, error_line(trial.error_file)[:5000])
        self.client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FAILED))


def log_augmentation(client: MlflowClient, run_id: str, result: dict) -> None:
    """The augmentation recipes the trial used (an artifact) and whether its data is grayscale (a tag)."""
    recipes = json.loads(result[metrics.AUGMENTATION_RECIPES])
    client.log_dict(run_id, recipes, metrics.AUGMENTATION_RECIPES_ARTIFACT)
    client.set_tag(run_id, metrics.GRAYSCALE, str(bool(result.get(metrics.GRAYSCALE, False))).lower())


def error_line(error_file: str | os.PathLike | None, filesystem: Any = None) -> str:
    """The last line of a trial's error file: the exception and its one-line message.

    `filesystem`: the pyarrow file system `error_file` is a path of (a Tune Result's `filesystem`,
    e.g. S3 for --storage-path s3://...); None: a path on this machine."""
    if not error_file:
        return "unknown error"
    if filesystem is not None:
        import pyarrow.fs

        if filesystem.get_file_info(str(error_file)).type != pyarrow.fs.FileType.File:
            return "unknown error"
        with filesystem.open_input_stream(str(error_file)) as stream:
            text = stream.read().decode(errors="replace")
    elif os.path.exists(error_file):
        with open(error_file) as handle:
            text = handle.read()
    else:
        return "unknown error"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"
