"""A folder of DICOM files as a user would bring it, through the sweep CLI end to end: decoded,
windowed, the corrupt file skipped and counted, trained on with grayscale recipes, all in MLflow."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from orchestrator.tracking import TAG_ROLE, TAG_STATUS
from trainables import metrics

SWEEP_OPTIONS = ["--set", "dataset=imagefolder", "--set", "method=simclr", "--set", "batch_size=8",
                 "--set", "epochs=1", "--set", "image_size=16", "--set", "probe_epochs=10",
                 "--set", "probe_repeats=1", "--set", "knn_k=5"]


def write_dicom_folder(root: Path, dicom_writer: Callable[..., None]) -> None:
    """Two classes of eight 24 px radiograph-like files (MONOCHROME1 and 2, windowed or not) and
    one damaged file."""
    generator = np.random.default_rng(0)
    for label, level in (("normal", 1000), ("effusion", 2500)):
        for index in range(8):
            stored = np.clip(generator.normal(level, 300, (24, 24)), 0, 4095).astype(int)
            dicom_writer(root / label / f"{index}.dcm", stored, "MONOCHROME1" if index % 2 else "MONOCHROME2",
                         rescale=(1, -1024), window=(1000, 3001) if index % 3 else None)
    (root / "normal" / "broken.dcm").write_bytes(b"DICM" * 10)


def run_sweep(workdir: Path, data_root: Path, tracking_uri: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", "smoke", *SWEEP_OPTIONS,
         "--set", f"data_root={data_root}", "--tracking-uri", tracking_uri,
         "--storage-path", str(workdir / "ray_results")],
        cwd=workdir, capture_output=True, text=True, timeout=600,
        env={**os.environ, "RAY_ADDRESS": "local"},
    )


def test_a_sweep_on_a_dicom_folder_runs_end_to_end(tmp_path: Path, dicom_writer) -> None:
    data_root = tmp_path / "radiographs"
    write_dicom_folder(data_root, dicom_writer)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    completed = run_sweep(tmp_path, data_root, tracking_uri)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    (trial,) = [run for run in runs if run.data.tags.get(TAG_ROLE) == "trial"]
    assert trial.data.tags[TAG_STATUS] in ("finished", "collapsed")
    assert trial.data.params["dataset"] == "imagefolder"
    assert trial.data.metrics[metrics.SKIPPED_IMAGES] == 1  # broken.dcm, skipped and counted
    assert 0.0 <= trial.data.metrics[metrics.LINEAR_TEST_ACCURACY] <= 1.0
    # The run records that the data is grayscale and the recipes it trained with: no colour ops.
    assert trial.data.tags[metrics.GRAYSCALE] == "true"
    recipes = json.loads(Path(client.download_artifacts(
        trial.info.run_id, metrics.AUGMENTATION_RECIPES_ARTIFACT, str(tmp_path))).read_text())
    assert len(recipes) == 2  # SimCLR's two views
    for recipe in recipes:
        assert recipe["size"] == 16
        assert (recipe["saturation"], recipe["hue"], recipe["grayscale_probability"]) == (0.0, 0.0, 0.0)
        assert recipe["brightness"] > 0 and recipe["contrast"] > 0


def test_a_multi_frame_file_stops_the_sweep_before_it_starts(tmp_path: Path, dicom_writer) -> None:
    data_root = tmp_path / "radiographs"
    write_dicom_folder(data_root, dicom_writer)
    dicom_writer(data_root / "effusion" / "cine.dcm", np.zeros((3, 24, 24), dtype=int))
    completed = run_sweep(tmp_path, data_root, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert completed.returncode == 2
    line = completed.stderr.strip().splitlines()[-1]  # after the log line of the skipped broken.dcm
    assert line.startswith("error: ") and str(data_root / "effusion" / "cine.dcm") in line
    assert "3 frames" in line
