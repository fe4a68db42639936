"""What a trial's MLflow run page shows: the params that say something, the whole config in one
artifact, and the evaluation's figures where MLflow's compare page finds them.

- Params: the trial config without unset values (`weights_dir=None`) and without settings left
  at a default that means "off" (`norm=as-is`, `download=False`, ...), unless the sweep varies
  them (a grid axis is always a param: the report matches trials by it). Everything needed to
  reproduce the trial, unset values included, is in the run's `config.json`.
- Figures (`*.png`) go to the top of the run's artifacts under the same names in every trial:
  MLflow's compare-runs artifact view lists only the top-level files all compared runs share, side
  by side, so the driver redraws the confusion matrix and the t-SNE plot with the run's name (its
  axis values) in their titles. The data files stay under `evaluation/`, and the confusion matrix
  is also an MLflow table twice there: one row per (true, predicted) pair, and as the matrix reads,
  one row per true class and one column per predicted class. That wide form is also
  `confusion_matrix.csv` at the top, which the compare view shows as a table side by side.
"""

import csv
import io
import json
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from trainables.evaluation import confusion_matrix_wide, confusion_table, draw_tsne, plot_confusion_matrix
from trainables.evaluation.protocol import (
    CONFUSION_MATRIX_FIGURE,
    CONFUSION_MATRIX_JSON,
    TSNE_FIGURE,
    TSNE_JSON,
)
from trainables.redaction import redact_values

PARENT_AXES_PARAM = "axes"  # the parent run's comma-separated grid axes (orchestrator.sweep)
CONFIG_ARTIFACT = "config.json"
CONFUSION_TABLE_ARTIFACT = "confusion_matrix_table.json"  # long: true_class, predicted_class, count
CONFUSION_WIDE_ARTIFACT = "confusion_matrix_wide.json"  # the same counts, one column per predicted class
# ... and as a CSV at the top: the compare view lists top-level files only, and shows a CSV as a table.
CONFUSION_CSV_ARTIFACT = "confusion_matrix.csv"
FIGURE_SUFFIX = ".png"
# Settings whose default means "this option is off" (compile_backend: only read with compile on):
# on the run page only when set otherwise.
OFF_DEFAULTS: dict[str, Any] = {
    "norm": "as-is", "weight_standardization": "as-is", "weight_scaling": "none", "dead_filters": "keep",
    "cifar_stem": False, "download": False, "focal_gamma": 0.0, "class_weighted": False,
    "warmup_epochs": 0, "compile": False, "compile_backend": "inductor",
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


def log_evaluation_folder(client: MlflowClient, run_id: str, folder: Path, artifact_path: str,
                          run_name: str | None = None) -> None:
    """Figures at the top of the run's artifacts (titled with `run_name` when given), the rest under
    `artifact_path`; the confusion matrix (JSON) also as two MLflow tables and a CSV at the top."""
    with tempfile.TemporaryDirectory() as scratch:
        titled = titled_figures(folder, Path(scratch), run_name) if run_name else {}
        for path in sorted(folder.iterdir()):
            if path.is_file():
                client.log_artifact(run_id, str(titled.get(path.name, path)),
                                    None if path.suffix == FIGURE_SUFFIX else artifact_path)
    confusion = folder / CONFUSION_MATRIX_JSON
    if confusion.is_file():
        saved = json.loads(confusion.read_text())
        client.log_table(run_id, data=confusion_table(saved["matrix"], saved["classes"]),
                         artifact_file=f"{artifact_path}/{CONFUSION_TABLE_ARTIFACT}")
        wide = confusion_matrix_wide(saved["matrix"], saved["classes"])
        client.log_table(run_id, data=wide, artifact_file=f"{artifact_path}/{CONFUSION_WIDE_ARTIFACT}")
        client.log_text(run_id, table_csv(wide), CONFUSION_CSV_ARTIFACT)


def table_csv(columns: Mapping[str, list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(zip(*columns.values(), strict=True))
    return buffer.getvalue()


def titled_figures(folder: Path, out: Path, run_name: str) -> dict[str, Path]:
    """The confusion matrix and t-SNE figures redrawn into `out` from the data files beside them in
    `folder`, titled with the run's name; {figure file name: redrawn file}."""
    redrawn = {}
    if (folder / CONFUSION_MATRIX_JSON).is_file():
        saved = json.loads((folder / CONFUSION_MATRIX_JSON).read_text())
        redrawn[CONFUSION_MATRIX_FIGURE] = plot_confusion_matrix(
            saved["matrix"], saved["classes"], out / CONFUSION_MATRIX_FIGURE,
            title=f"{run_name}: test confusion matrix")
    if (folder / TSNE_JSON).is_file():
        saved = json.loads((folder / TSNE_JSON).read_text())
        redrawn[TSNE_FIGURE] = draw_tsne(saved["coordinates"], saved["labels"], out / TSNE_FIGURE,
                                         saved["classes"], title=f"{run_name}: test embeddings (t-SNE)")
    return redrawn
