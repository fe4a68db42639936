"""A real `mlflow server` on the SQLite store a sweep writes serves its runs as the UI reads them (REST)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from orchestrator.tracking import (
    TAG_ERROR,
    TAG_ROLE,
    TAG_STATUS,
    TAG_SWEEP,
    TAG_TRIAL_ID,
    SweepTracker,
    flatten,
    log_params,
)
from trainables import metrics
from trainables.config import TrialConfig

SWEEP_NAME = "server_test"
HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 120  # about 10 s when idle; minutes of imports when the 2 cores are busy
EPOCHS = 3
GRID = {"method": ["simclr", "simsiam"], "seed": [0]}
FIXED = {"dataset": "digits", "backbone": "cbr_nano", "epochs": EPOCHS}
KNN_HISTORY = {"simclr": [0.30, 0.45, 0.55, 0.62], "simsiam": [0.30, 0.35, 0.40, 0.41]}
FINAL_ACCURACY = {"simclr": 0.81, "simsiam": 0.74}
FAILED_ERROR = "ValueError: loss is nan"


def populate(tracking_uri: str) -> dict:
    """A parent run and three trial child runs (two finished, one failed), as the sweep logs them."""
    tracker = SweepTracker(tracking_uri, SWEEP_NAME)
    parent = tracker.start_parent(SWEEP_NAME, {"sweep": SWEEP_NAME, "axes": ",".join(GRID),
                                               **flatten({"grid": GRID, "fixed": FIXED})})
    client = tracker.client
    children = {}
    for index, (method, status) in enumerate([("simclr", "finished"), ("simsiam", "finished"),
                                              ("simsiam", "failed")]):
        name = f"driver_{index:05d}"
        run_id = client.create_run(tracker.experiment_id, tags={
            MLFLOW_PARENT_RUN_ID: parent, MLFLOW_RUN_NAME: name, TAG_TRIAL_ID: f"t{index}",
            TAG_SWEEP: SWEEP_NAME, TAG_ROLE: "trial"}).info.run_id
        config = TrialConfig.from_dict({**FIXED, "method": method, "seed": 0}).resolved().to_dict()
        log_params(client, run_id, config)
        history = KNN_HISTORY[method][: 2 if status == "failed" else None]
        logged = [Metric(metrics.KNN_VAL_ACCURACY, value, 0, step) for step, value in enumerate(history)]
        if status == "finished":
            logged.append(Metric(metrics.LINEAR_TEST_ACCURACY, FINAL_ACCURACY[method], 0, EPOCHS))
        client.log_batch(run_id, metrics=logged)
        client.set_tag(run_id, TAG_STATUS, status)
        if status == "failed":
            client.set_tag(run_id, TAG_ERROR, FAILED_ERROR)
        client.set_terminated(run_id, status=status.upper())
        children[name] = {"run_id": run_id, "params": flatten(config), "status": status, "knn": history,
                          "method": method}
    tracker.finish_parent("FAILED")
    return {"experiment_id": tracker.experiment_id, "parent": parent, "children": children}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def wait_until_healthy(base_url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:
                if response.status == 200 and response.read().decode().strip() == "OK":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow server not healthy after {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict]]:
    """The base URL of an `mlflow server` on a populated store, and what was logged."""
    root = tmp_path_factory.mktemp("mlflow_server")
    backend = f"sqlite:///{root / 'mlflow.db'}"
    logged = populate(backend)
    port = free_port()
    log = root / "server.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--host", HOST,
             "--port", str(port), "--workers", "1", "--artifacts-destination", str(root / "mlartifacts")],
            cwd=root, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            # No background job runner (huey): nothing here needs it; it adds processes and /dev/shm files.
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
    try:
        base_url = f"http://{HOST}:{port}"
        wait_until_healthy(base_url, process, log)
        yield base_url, logged
    finally:
        # The server runs its workers as children: end the session this test started, then reap it.
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def get(base_url: str, path: str, **query: str) -> dict:
    with urllib.request.urlopen(f"{base_url}{path}?{urllib.parse.urlencode(query)}", timeout=10) as response:
        return json.load(response)


def post(base_url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"{base_url}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def search_children(base_url: str, experiment_id: str, parent: str) -> list[dict]:
    found = post(base_url, "/api/2.0/mlflow/runs/search", {
        "experiment_ids": [experiment_id], "filter": f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent}'",
        "max_results": 100})
    return found.get("runs", [])


def key_values(entries: list[dict]) -> dict[str, str]:
    return {entry["key"]: entry["value"] for entry in entries}


def test_the_experiment_is_the_sweep_and_the_parent_run_holds_the_grid(server: tuple[str, dict]) -> None:
    base_url, logged = server
    experiment = get(base_url, "/api/2.0/mlflow/experiments/get-by-name", experiment_name=SWEEP_NAME)
    assert experiment["experiment"]["experiment_id"] == logged["experiment_id"]
    parent = get(base_url, "/api/2.0/mlflow/runs/get", run_id=logged["parent"])["run"]
    assert key_values(parent["data"]["tags"])[TAG_ROLE] == "sweep"
    params = key_values(parent["data"]["params"])
    assert params["axes"] == "method,seed" and params["grid.method"] == "['simclr', 'simsiam']"
    assert params["fixed.epochs"] == str(EPOCHS)


def test_children_carry_the_flat_config_tags_and_final_metrics(server: tuple[str, dict]) -> None:
    base_url, logged = server
    runs = search_children(base_url, logged["experiment_id"], logged["parent"])
    assert sorted(run["info"]["run_name"] for run in runs) == sorted(logged["children"])
    for run in runs:
        expected = logged["children"][run["info"]["run_name"]]
        tags = key_values(run["data"]["tags"])
        assert (tags[TAG_ROLE], tags[TAG_SWEEP]) == ("trial", SWEEP_NAME)
        assert tags[TAG_STATUS] == expected["status"]
        assert tags.get(TAG_ERROR, "") == (FAILED_ERROR if expected["status"] == "failed" else "")
        assert run["info"]["status"] == expected["status"].upper()
        params = key_values(run["data"]["params"])
        assert params == expected["params"]
        assert params["method"] == expected["method"] and params["epochs"] == str(EPOCHS)
        assert any(key.startswith("method_params.") for key in params)
        latest = {metric["key"]: metric["value"] for metric in run["data"].get("metrics", [])}
        if expected["status"] == "finished":
            assert latest[metrics.LINEAR_TEST_ACCURACY] == pytest.approx(FINAL_ACCURACY[expected["method"]])
        else:
            assert metrics.LINEAR_TEST_ACCURACY not in latest
        assert latest[metrics.KNN_VAL_ACCURACY] == pytest.approx(expected["knn"][-1])


def test_per_epoch_history_is_one_point_per_epoch_from_step_0(server: tuple[str, dict]) -> None:
    base_url, logged = server
    for child in logged["children"].values():
        history = get(base_url, "/api/2.0/mlflow/metrics/get-history", run_id=child["run_id"],
                      metric_key=metrics.KNN_VAL_ACCURACY)["metrics"]
        points = sorted((point["step"], point["value"]) for point in history)
        assert [step for step, _ in points] == list(range(len(child["knn"])))
        assert [value for _, value in points] == pytest.approx(child["knn"])
