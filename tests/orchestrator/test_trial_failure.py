"""A trial whose pretrained weights are missing fails at once with one line, after one attempt (no
retry fixes a missing file, trainables.failures), though --max-failures allows restarts; the
sweep goes on. (A lost worker is still restarted: tests/orchestrator/test_fault_tolerance.py.)"""

import os
import subprocess
import sys

from mlflow.tracking import MlflowClient

from orchestrator.tracking import TAG_ERROR, TAG_STATUS

WORKER_GROUP_STARTS = "Attempting to start training worker group"


def test_missing_weights_fail_one_trial_with_one_line_and_the_sweep_goes_on(tmp_path) -> None:
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    completed = subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", "smoke",
         "--set", "init=imagenet,random", "--set", "backbone=cbr_nano", "--set", "method=simsiam",
         "--set", "batch_size=128", "--set", "epochs=1", "--set", "image_size=16",
         "--set", "probe_repeats=1", "--set", "probe_epochs=10",
         "--set", f"weights_dir={tmp_path / 'weights'}",
         "--max-failures", "2",  # restarts allowed: the missing file must not use them
         "--tracking-uri", tracking_uri, "--storage-path", str(tmp_path / "ray_results")],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert completed.returncode == 1, completed.stdout[-3000:] + completed.stderr[-3000:]
    failed_lines = [line for line in completed.stdout.splitlines() if line.startswith("failed: ")]
    assert len(failed_lines) == 1
    assert "MissingWeightsError" in failed_lines[0] and str(tmp_path / "weights") in failed_lines[0]
    # Ray Train's own line for each start of a trial's worker group: one per trial, none again.
    ray_output = (tmp_path / "ray_results" / "smoke" / "ray_output.log").read_text()
    assert ray_output.count(WORKER_GROUP_STARTS) == 2, ray_output[-3000:]

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("smoke")
    children = {run.data.params["init"]: run for run in client.search_runs([experiment.experiment_id])
                if "init" in run.data.params}
    assert children["imagenet"].info.status == "FAILED"
    assert children["imagenet"].data.tags[TAG_STATUS] == "failed"
    error = children["imagenet"].data.tags[TAG_ERROR]
    assert "\n" not in error and "cbr_nano" in error and "weights" in error
    assert children["random"].info.status == "FINISHED"
    assert 0.0 <= children["random"].data.metrics["linear/test_accuracy"] <= 1.0
