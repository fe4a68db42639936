"""A folder of DICOM files as a user would bring it, through the sweep CLI end to end: decoded,
windowed, the corrupt file skipped and counted, pretrained on an unlabeled pool of scans (the copies
of evaluation images dropped and counted), trained on with grayscale recipes, all in MLflow."""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from orchestrator.tracking import TAG_ROLE, TAG_STATUS
from trainables import metrics
from trainables.data import load_dataset

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


def write_unlabeled_pool(pool: Path, data_root: Path, dicom_writer: Callable[..., None]) -> None:
    """An unlabeled folder as scanners leave it (files at any depth, no classes): eight new scans
    and a copy of every readable labeled file, so the evaluation's val and test images are in it."""
    generator = np.random.default_rng(1)
    for index in range(8):
        stored = np.clip(generator.normal(1800, 600, (24, 24)), 0, 4095).astype(int)
        dicom_writer(pool / "scanner_a" / f"day{index % 2}" / f"{index}.dcm", stored, "MONOCHROME2")
    for source in sorted(data_root.rglob("[0-9]*.dcm")):
        (pool / "copies").mkdir(parents=True, exist_ok=True)
        shutil.copy(source, pool / "copies" / f"{source.parent.name}_{source.name}")


def run_sweep(workdir: Path, data_root: Path, tracking_uri: str,
              options: Sequence[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", "smoke", *SWEEP_OPTIONS, *options,
         "--set", f"data_root={data_root}", "--tracking-uri", tracking_uri,
         "--storage-path", str(workdir / "ray_results")],
        cwd=workdir, capture_output=True, text=True, timeout=600,
        env={**os.environ, "RAY_ADDRESS": "local"},
    )


def test_a_sweep_on_a_dicom_folder_runs_end_to_end(tmp_path: Path, dicom_writer) -> None:
    """Pretrained on an unlabeled pool of scans, evaluated on the labeled folder."""
    data_root, pool = tmp_path / "radiographs", tmp_path / "unlabeled"
    write_dicom_folder(data_root, dicom_writer)
    write_unlabeled_pool(pool, data_root, dicom_writer)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    completed = run_sweep(tmp_path, data_root, tracking_uri, ["--set", "pretrain_dataset=unlabeled",
                                                              "--set", f"pretrain_data_root={pool}"])
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    (trial,) = [run for run in runs if run.data.tags.get(TAG_ROLE) == "trial"]
    assert trial.data.tags[TAG_STATUS] in ("finished", "collapsed")
    assert trial.data.params["dataset"] == "imagefolder"
    assert trial.data.metrics[metrics.SKIPPED_IMAGES] == 1  # broken.dcm, skipped and counted
    assert 0.0 <= trial.data.metrics[metrics.LINEAR_TEST_ACCURACY] <= 1.0
    # The pool's copies of the evaluation's val and test scans were removed and counted; its copies
    # of train scans and its 8 new scans were pretrained on.
    evaluation = load_dataset("imagefolder", 16, int(trial.data.params["seed"]), data_root)
    held_out = len(evaluation.val_images) + len(evaluation.test_images)
    assert trial.data.metrics[metrics.PRETRAIN_OVERLAP_REMOVED] == held_out > 0
    assert trial.data.metrics[metrics.PRETRAIN_IMAGES] == 16 + 8 - held_out
    # Both datasets are the run's inputs, told apart by their context.
    inputs = {tag.value: entry.dataset for entry in trial.inputs.dataset_inputs
              for tag in entry.tags if tag.key == "mlflow.data.context"}
    assert (inputs["evaluation"].name, inputs["pretraining"].name) == ("imagefolder", "unlabeled")
    assert inputs["evaluation"].digest == trial.data.tags[metrics.SPLIT_HASH] == evaluation.split_hash()
    assert str(pool) in inputs["pretraining"].source
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
