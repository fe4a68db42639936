"""The sweep on Ray's fake multi-node autoscaler: a cluster that starts with no worker nodes grows
to run trials side by side, planned from the autoscaler's node types.

The head (0 CPUs, like cluster.yaml's) and every node the autoscaler adds are processes on this
machine, in a session of their own with their own temp dir and ports, so the test stops exactly
what it started and never touches another Ray on the machine.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from trainables import metrics
from trainables.initializations import build_initialized_backbone

WORKER_NODES = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class FakeCluster:
    address: str
    config: Path
    env: dict[str, str]  # for every process that talks to this cluster


def autoscaler_config(gcs_address: str) -> dict:
    return {
        "cluster_name": "fake", "max_workers": WORKER_NODES, "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs_address},
        "auth": {"ssh_user": "ray"},
        "head_node_type": "ray.head.default",  # the fake provider's name for the head it finds
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "cpu_worker": {"resources": {"CPU": 1}, "node_config": {}, "min_workers": 0,
                           "max_workers": WORKER_NODES},
        },
        **{key: [] for key in ("cluster_synced_files", "initialization_commands", "setup_commands",
                               "head_setup_commands", "worker_setup_commands", "head_start_ray_commands",
                               "worker_start_ray_commands")},
        "file_mounts": {}, "file_mounts_sync_continuously": False,
    }


@pytest.fixture(scope="module")
def fake_cluster(ray_process_reaper) -> Iterator[FakeCluster]:
    import ray._private.services

    root = Path(tempfile.mkdtemp(prefix="rayfake", dir="/tmp"))  # short: Ray's socket paths live here
    port = free_port()
    gcs_address = f"{ray._private.services.get_node_ip_address()}:{port}"
    config = root / "autoscaler.yaml"
    config.write_text(yaml.safe_dump(autoscaler_config(gcs_address)))
    env = {**os.environ, "RAY_TMPDIR": str(root), "RAY_FAKE_CLUSTER": "1",
           "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_TRAIN_V2_ENABLED": "1"}
    env.pop("RAY_ADDRESS", None)
    if (Path.home() / ".ray" / "auth_token").exists():  # ray start turns token auth on then
        env["RAY_AUTH_MODE"] = "token"
    starter = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--num-cpus=0", f"--port={port}",
         f"--autoscaling-config={config}", "--dashboard-host=127.0.0.1", f"--dashboard-port={free_port()}",
         f"--ray-client-server-port={free_port()}", f"--temp-dir={root}", "--disable-usage-stats"],
        env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    session = starter.pid  # the head's processes and the nodes its autoscaler starts share it
    try:
        output, _ = starter.communicate(timeout=120)
        assert starter.returncode == 0, output[-3000:]
        yield FakeCluster(gcs_address, config, env)
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(session, sig)
            except ProcessLookupError:
                pass
            time.sleep(3)
        ray_process_reaper(str(root))  # workers that left the session
        shutil.rmtree(root, ignore_errors=True)


def sweep(cluster: FakeCluster, workdir: Path, *arguments: str, env: dict | None = None,
          timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", "--address", cluster.address, *arguments],
        cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env or cluster.env,
    )


def worker_nodes_seen(cluster: FakeCluster) -> list[dict]:
    """Every node the cluster has had with CPUs (alive or gone): only the autoscaler adds those."""
    script = (f"import json, ray; ray.init(address={cluster.address!r}, logging_level='ERROR'); "
              "print('NODES', json.dumps([n for n in ray.nodes() if n['Resources'].get('CPU', 0) > 0]))")
    completed = subprocess.run([sys.executable, "-c", script], env=cluster.env, capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    marked = [line for line in completed.stdout.splitlines() if line.startswith("NODES ")]
    assert marked, completed.stdout[-2000:]
    return json.loads(marked[-1].removeprefix("NODES "))


def sweep_deleting_the_weights_once_shipped(cluster: FakeCluster, workdir: Path, weights_dir: Path,
                                            *arguments: str, timeout: int = 900) -> tuple[int, str]:
    """The sweep's exit status and output; `weights_dir` is deleted as soon as the driver says it
    shipped the file, before any worker node is up to read it."""
    return sweep_deleting_once_shipped(["--address", cluster.address, *arguments], workdir, cluster.env,
                                       weights_dir, timeout)


def sweep_deleting_once_shipped(arguments: list[str], workdir: Path, env: dict[str, str], folder: Path,
                                timeout: int = 900) -> tuple[int, str]:
    """`python -m orchestrator.sweep ARGUMENTS`: its exit status and output; `folder` is deleted as
    soon as the driver says it shipped the priors' files, before any trial starts to read them."""
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.sweep", *arguments],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    lines = []
    deadline = time.monotonic() + timeout
    try:
        for line in process.stdout:
            lines.append(line)
            if "shipped to the workers" in line and folder.exists():
                shutil.rmtree(folder)
            assert time.monotonic() < deadline, "".join(lines)[-3000:]
        return process.wait(timeout=60), "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()


def test_a_cluster_with_no_workers_grows_and_runs_trials_side_by_side(fake_cluster, tmp_path: Path) -> None:
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # The CBR networks have no public ImageNet weights: a user's own file, which the trials can
    # only start from through the driver once its folder is gone.
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    torch.save(build_initialized_backbone("cbr_nano", "random", seed=5)[0].state_dict(),
               weights_dir / "cbr_nano.in1k.pth")
    returncode, output = sweep_deleting_the_weights_once_shipped(
        fake_cluster, tmp_path, weights_dir, "smoke", "--cluster-config", str(fake_cluster.config),
        "--set", "epochs=2", "--set", "image_size=16", "--set", "probe_epochs=10", "--set", "probe_repeats=1",
        "--set", "init=imagenet", "--set", f"weights_dir={weights_dir}",
        "--tracking-uri", tracking_uri, "--storage-path", str(tmp_path / "ray_results"),
    )
    assert returncode == 0, output[-6000:]
    assert f"weights: {weights_dir / 'cbr_nano.in1k.pth'} shipped to the workers" in output
    assert not weights_dir.exists()
    # Planned for the two nodes the autoscaler may add, though none was up at the start.
    assert "up to 2 trial(s) at once" in output
    assert f"planned from autoscaler config {fake_cluster.config}" in output

    assert len(worker_nodes_seen(fake_cluster)) == WORKER_NODES

    spans = []
    for result_file in (tmp_path / "ray_results" / "smoke").glob("*/result.json"):
        times = [json.loads(line)["timestamp"] for line in result_file.read_text().splitlines()]
        spans.append((min(times), max(times)))
    assert len(spans) == 4
    overlapping = [(a, b) for i, a in enumerate(spans) for b in spans[i + 1:] if a[0] < b[1] and b[0] < a[1]]
    assert overlapping, f"no two trials reported at the same time: {sorted(spans)}"

    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert len(children) == 4 and all(run.info.status == "FINISHED" for run in children)
    assert all(run.data.metrics[metrics.LINEAR_TEST_ACCURACY] > 0.5 for run in children)


def test_the_dry_run_plans_the_flagship_sweep_for_the_whole_cluster(fake_cluster, tmp_path: Path) -> None:
    completed = sweep(fake_cluster, tmp_path, "ablation_batchsize", "--dry-run",
                      "--cluster-config", str(fake_cluster.config), timeout=120)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "up to 2 trial(s) at once (2 worker slot(s) on 2 x cpu_worker)" in completed.stdout


def test_connection_problems_end_in_one_line_within_seconds(fake_cluster, tmp_path: Path) -> None:
    started = time.monotonic()
    completed = sweep(fake_cluster, tmp_path, "smoke", "--dry-run", "--address", f"127.0.0.1:{free_port()}",
                      timeout=60)
    assert completed.returncode == 2 and time.monotonic() - started < 30
    assert completed.stderr.strip().startswith("error: nothing answers at 127.0.0.1:")
    assert len(completed.stderr.strip().splitlines()) == 1

    if fake_cluster.env.get("RAY_AUTH_MODE") == "token":  # a token-authenticated cluster, no token mode
        env = {key: value for key, value in fake_cluster.env.items() if key != "RAY_AUTH_MODE"}
        completed = sweep(fake_cluster, tmp_path, "smoke", "--dry-run", env=env, timeout=120)
        assert completed.returncode == 2
        last = completed.stderr.strip().splitlines()[-1]
        assert last.startswith("error: could not join the Ray cluster") and "RAY_AUTH_MODE=token" in last
