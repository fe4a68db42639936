"""What a trial's MLflow run page shows: the params that say something, the whole config in one
artifact, and the evaluation's figures where MLflow's compare page finds them.

- Params: the trial config without unset values (`weights_dir=None`) and without settings left
  at a default that means "off" (`norm=as-is`, `download=False`, ...), unless the sweep varies
  them (a grid axis is always a param: the report matches trials by it). Everything needed to
  reproduce the trial, unset values included, is in the run's `config.json`.
- Figures (`*.png`) go to the top of the run's artifacts under the same names in every trial:
  MLflow's compare-runs artifact view lists only the top-level files all compared runs share.
  The data files stay under `evaluation/`, and the confusion matrix is also an MLflow table.
"""

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from trainables.evaluation import confusion_table
from trainables.evaluation.protocol import CONFUSION_MATRIX_JSON
from trainables.redaction import redact_values

PARENT_AXES_PARAM = "axes"  # the parent run's comma-separated grid axes (orchestrator.sweep)
CONFIG_ARTIFACT = "config.json"
CONFUSION_TABLE_ARTIFACT = "confusion_matrix_table.json"
FIGURE_SUFFIX = ".png"
# Settings whose default means "this option is off": on the run page only when set otherwise.
OFF_DEFAULTS: dict[str, Any] = {
    "norm": "as-is", "weight_standardization": "as-is", "weight_scaling": "none", "dead_filters": "keep",
    "cifar_stem": False, "download": False, "focal_gamma": 0.0, "class_weighted": False,
    "warmup_epochs": 0,
}


def meaningful_params(params: Mapping[str, Any], axes: Collection[str] = ()) -> dict[str, Any]:
    """`params` (the resolved trial config) less None values and off-defaults, axes always kept."""
    return {key: value for key, value in params.items()
            if key in axes or not (value is None or (key in OFF_DEFAULTS and value == OFF_DEFAULTS[key]))}


def sweep_axes(client: MlflowClient, parent_run_id: str) -> list[str]:
    """The sweep's axes as its parent run holds them ("method,batch_size" -> [method, batch_size])."""
    raw = client.get_run(parent_run_id).data.params.get(PARENT_AXES_PARAM, "")
    return [axis for axis in raw.split(",") if axis]


def log_config(client: MlflowClient, run_id: str, config: Mapping[str, Any]) -> None:
    """The trial's whole config, unset values included: what reproduces it."""
    client.log_dict(run_id, redact_values(json.loads(json.dumps(config, default=str))), CONFIG_ARTIFACT)


def log_evaluation_folder(client: MlflowClient, run_id: str, folder: Path, artifact_path: str) -> None:
    """Figures at the top of the run's artifacts, the rest under `artifact_path`; the confusion
    matrix (JSON) also as an MLflow table."""
    for path in sorted(folder.iterdir()):
        if path.is_file():
            client.log_artifact(run_id, str(path), None if path.suffix == FIGURE_SUFFIX else artifact_path)
    confusion = folder / CONFUSION_MATRIX_JSON
    if confusion.is_file():
        saved = json.loads(confusion.read_text())
        client.log_table(run_id, data=confusion_table(saved["matrix"], saved["classes"]),
                         artifact_file=f"{artifact_path}/{CONFUSION_TABLE_ARTIFACT}")
