"""Nothing lost: a killed worker heals its trial; Ctrl-C and a killed driver leave a sweep that
--resume finishes, with every epoch in MLflow exactly once and no run left RUNNING.

Each sweep runs as its own process with its own local Ray, in a temp dir of its own (RAY_TMPDIR),
so the test can find that Ray's processes (and only those) by their environment.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.tracking import TAG_ERROR, TAG_ROLE, TAG_STATUS
from trainables import metrics
from trainables.config import TrialConfig
from trainables.monitoring import is_monitored_epoch

EPOCHS = 8
SWEEP_ARGUMENTS = ["smoke", "--set", "method=simclr", "--set", f"epochs={EPOCHS}", "--set", "image_size=16",
                   "--set", "probe_epochs=10", "--set", "probe_repeats=1",
                   "--set", "method_params.projection_dim=32",
                   "--set", "method_params.projection_hidden_dim=32",
                   # Ray's own output in the sweep's log: the tests read Tune's and the workers' lines.
                   "--verbose"]


@pytest.fixture
def ray_tmpdir(ray_process_reaper) -> Iterator[Path]:
    """A short private RAY_TMPDIR; every process that still has it in its environment is killed after,
    and the folder removed."""
    root = Path(tempfile.mkdtemp(prefix="rayft", dir="/tmp"))
    yield root
    ray_process_reaper(str(root))
    shutil.rmtree(root, ignore_errors=True)


def start_sweep(workdir: Path, ray_tmpdir: Path, *extra: str) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    # Every worker's line reaches the log: Ray's deduplication folds lines that differ only in
    # their numbers ("checkpointed epoch 2" of one trial into another's "epoch 3 [repeated 4x]").
    env.update(RAY_TMPDIR=str(ray_tmpdir), PYTHONUNBUFFERED="1", RAY_DEDUP_LOGS="0")
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.sweep", *SWEEP_ARGUMENTS, *extra,
         "--tracking-uri", tracking_uri(workdir), "--storage-path", str(workdir / "ray_results")],
        cwd=workdir, env=env, stdout=open(workdir / "sweep.log", "a"), stderr=subprocess.STDOUT,
    )


def tracking_uri(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'mlflow.db'}"


def sweep_runs(workdir: Path) -> tuple[list, list]:
    """(parents, children) of the smoke experiment, [] before it exists."""
    client = MlflowClient(tracking_uri(workdir))
    experiment = client.get_experiment_by_name("smoke")
    if experiment is None:
        return [], []
    runs = client.search_runs([experiment.experiment_id])
    return ([run for run in runs if run.data.tags.get(TAG_ROLE) == "sweep"],
            [run for run in runs if run.data.tags.get(TAG_ROLE) == "trial"])


def epoch_steps(workdir: Path, run_id: str, name: str = metrics.PRETRAIN_LOSS) -> list[int]:
    history = MlflowClient(tracking_uri(workdir)).get_metric_history(run_id, name)
    return sorted(point.step for point in history)


def wait_for_epoch(workdir: Path, process: subprocess.Popen, epoch: int, timeout: float = 300) -> None:
    """Until some trial has logged `epoch` (the sweep still running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = (workdir / "sweep.log").read_text()
        assert process.poll() is None, log[-3000:]
        if "Trial status" in log:  # Tune runs: the sweep has made the MLflow store (never race that)
            _, children = sweep_runs(workdir)
            if any(max(epoch_steps(workdir, run.info.run_id), default=0) >= epoch for run in children):
                return
        time.sleep(0.5)
    raise AssertionError(f"no trial reached epoch {epoch} in {timeout} s")


def finish(workdir: Path, process: subprocess.Popen, timeout: float = 600) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError((workdir / "sweep.log").read_text()[-3000:]) from None


def training_workers(ray_tmpdir: Path) -> list[int]:
    """Pids of the Ray Train worker processes of the Ray that lives in `ray_tmpdir`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::RayTrainWorker")
                    and f"RAY_TMPDIR={ray_tmpdir}".encode() in (entry / "environ").read_bytes()):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def assert_every_trial_finished_with_each_epoch_once(workdir: Path, log: str) -> None:
    parents, children = sweep_runs(workdir)
    assert [parent.info.status for parent in parents] == ["FINISHED"], log
    assert len(children) == 2, f"duplicate or missing trial runs: {[run.info.run_name for run in children]}"
    for child in children:
        assert child.info.status == "FINISHED", log
        assert child.data.tags[TAG_STATUS] in ("finished", "collapsed")
        assert TAG_ERROR not in child.data.tags
        assert epoch_steps(workdir, child.info.run_id) == list(range(1, EPOCHS + 1)), log
        monitored = [epoch for epoch in range(EPOCHS + 1)
                     if is_monitored_epoch(epoch, EPOCHS, TrialConfig.knn_every)]
        assert epoch_steps(workdir, child.info.run_id, metrics.KNN_VAL_ACCURACY) == monitored
        assert 0.0 <= child.data.metrics[metrics.LINEAR_TEST_ACCURACY] <= 1.0


def test_a_killed_training_worker_restarts_from_its_checkpoint_and_the_sweep_succeeds(
        tmp_path: Path, ray_tmpdir: Path) -> None:
    process = start_sweep(tmp_path, ray_tmpdir)
    wait_for_epoch(tmp_path, process, 2)
    workers = training_workers(ray_tmpdir)
    assert workers, "no Ray Train worker found"
    os.kill(workers[0], signal.SIGKILL)

    assert finish(tmp_path, process) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    log = (tmp_path / "sweep.log").read_text()
    assert "resumed from checkpoint at epoch" in log  # the worker group came back from its checkpoint
    # From a checkpoint the trial wrote (checkpoint_every's default: the first epoch, timed, then
    # every few epochs as the write and epoch times allow).
    written = {int(epoch) for epoch in re.findall(r"checkpointed epoch (\d+)", log)}
    resumed = [int(epoch) for epoch in re.findall(r"resumed from checkpoint at epoch (\d+)", log)]
    assert resumed and set(resumed) <= written, (resumed, written)
    assert_every_trial_finished_with_each_epoch_once(tmp_path, log[-3000:])


def test_ctrl_c_then_a_crashed_driver_then_resume_finishes_every_trial_once(
        tmp_path: Path, ray_tmpdir: Path, ray_process_reaper) -> None:
    # Ctrl-C: the trials stop, nothing stays RUNNING, the exit code says so, the way on is named.
    process = start_sweep(tmp_path, ray_tmpdir)
    wait_for_epoch(tmp_path, process, 2)
    process.send_signal(signal.SIGINT)
    assert finish(tmp_path, process) == 130
    log = (tmp_path / "sweep.log").read_text()
    assert "--resume" in log.splitlines()[-1]
    parents, children = sweep_runs(tmp_path)
    assert [parent.info.status for parent in parents] == ["KILLED"]
    assert children and all(run.info.status in ("KILLED", "FINISHED") for run in children), log[-3000:]
    assert any(run.data.tags[TAG_STATUS] == "interrupted" for run in children)
    reached = max(max(epoch_steps(tmp_path, run.info.run_id), default=0) for run in children)

    # The resumed driver is killed outright: its runs stay RUNNING, its Ray is orphaned.
    process = start_sweep(tmp_path, ray_tmpdir, "--resume")
    wait_for_epoch(tmp_path, process, reached + 1)
    process.kill()
    process.wait()
    ray_process_reaper(str(ray_tmpdir))

    process = start_sweep(tmp_path, ray_tmpdir, "--resume")
    assert finish(tmp_path, process) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    assert_every_trial_finished_with_each_epoch_once(tmp_path, (tmp_path / "sweep.log").read_text()[-3000:])


def test_a_missing_dataset_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", "smoke", "--set", "dataset=ham10000",
         "--set", f"data_root={tmp_path / 'EMPTY'}", "--tracking-uri", tracking_uri(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: dataset 'ham10000' not found at")
    assert str(tmp_path / "EMPTY") in lines[0] and "get it from" in lines[0]
    assert not (tmp_path / "mlflow.db").exists()  # no run was started
