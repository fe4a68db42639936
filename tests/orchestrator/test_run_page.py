"""A trial's evaluation folder on its MLflow run page: figures titled with the run's name, the
confusion matrix as a long and a wide MLflow table (a real SQLite store)."""

import json
from pathlib import Path

import numpy as np
import pandas
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from orchestrator.run_page import log_evaluation_folder
from trainables.evaluation import plot_confusion_matrix, plot_tsne


def test_figures_carry_the_run_name_and_the_matrix_is_a_wide_table(tmp_path: Path) -> None:
    folder = tmp_path / "evaluation"
    classes, matrix = ["a", "b", "c"], [[5, 1, 0], [2, 7, 1], [0, 0, 9]]
    # What the worker writes (trainables.evaluation.protocol): data files and generic titles.
    folder.mkdir()
    (folder / "confusion_matrix.json").write_text(json.dumps({"classes": classes, "matrix": matrix}))
    (folder / "tsne_test.json").write_text(json.dumps(
        {"classes": classes, "labels": [0, 1, 2, 0], "coordinates": [[0, 0], [1, 1], [2, 0], [0.5, 0.2]]}))
    plot_confusion_matrix(matrix, classes, folder / "confusion_matrix.png", title="generic")
    plot_tsne(torch.randn(12, 4), torch.arange(12) % 3, folder / "tsne_test.png", classes, title="generic")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("x", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment_id).info.run_id

    log_evaluation_folder(client, run_id, folder, "evaluation", run_name="simclr_bs=64_0")

    for name in ("confusion_matrix.png", "tsne_test.png"):
        with Image.open(client.download_artifacts(run_id, name)) as image:
            assert image.text["Title"].startswith("simclr_bs=64_0: "), name
    with Image.open(folder / "confusion_matrix.png") as image:  # the worker's file stays as it was
        assert image.text["Title"] == "generic"
    wide_file = client.download_artifacts(run_id, "evaluation/confusion_matrix_wide.json")
    csv_wide = pandas.read_csv(client.download_artifacts(run_id, "confusion_matrix.csv"), dtype={0: str})
    assert list(csv_wide.columns) == ["true \\ predicted", *classes]
    assert (csv_wide[classes].to_numpy() == np.array(matrix)).all()
    stored = json.loads(Path(wide_file).read_text())
    wide = pandas.DataFrame(stored["data"], columns=stored["columns"])
    assert list(wide.columns) == ["true \\ predicted", *classes]
    assert wide["true \\ predicted"].tolist() == classes
    assert (wide[classes].to_numpy() == np.array(matrix)).all()
    assert "evaluation/confusion_matrix_table.json" in {
        item.path for item in client.list_artifacts(run_id, "evaluation")}
