"""The sweep with `--storage-path s3://BUCKET/prefix`: a local S3 server (moto's, started here),
reached through pyarrow's S3 file system by AWS_ENDPOINT_URL, as Ray reaches S3 on a cluster.
Ctrl-C in a trial, then --resume finishes it from the checkpoint kept in the bucket."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.orchestrator.test_autoscaling_cluster import free_port
from tests.orchestrator.test_fault_tolerance import (
    SWEEP_ARGUMENTS,
    finish,
    ray_tmpdir,  # noqa: F401, F811 (a fixture)
    sweep_runs,
    tracking_uri,
    wait_for_epoch,
)

BUCKET = "sweeps"


@pytest.fixture
def s3_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a process that talks to a fresh moto S3 server holding BUCKET."""
    import boto3

    port = free_port()
    server = subprocess.Popen(
        [Path(sys.executable).with_name("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=open(tmp_path / "moto.log", "w"), stderr=subprocess.STDOUT)
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true", PYTHONUNBUFFERED="1")
    try:
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        for _ in range(100):
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:  # the server is still starting
                time.sleep(0.2)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)


def start_sweep(workdir: Path, env: dict[str, str], ray_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.sweep", *SWEEP_ARGUMENTS, "--set", "batch_size=64", *extra,
         "--tracking-uri", tracking_uri(workdir), "--storage-path", f"s3://{BUCKET}/prefix"],
        cwd=workdir, env={**env, "RAY_TMPDIR": str(ray_dir)}, stdout=open(workdir / "sweep.log", "a"),
        stderr=subprocess.STDOUT,
    )


def bucket_keys(env: dict[str, str]) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_an_s3_sweep_interrupted_mid_trial_resumes_from_the_bucket(
        tmp_path: Path, s3_env: dict[str, str], ray_tmpdir: Path, ray_process_reaper) -> None:  # noqa: F811
    process = start_sweep(tmp_path, s3_env, ray_tmpdir)
    wait_for_epoch(tmp_path, process, 2)
    process.send_signal(signal.SIGINT)
    assert finish(tmp_path, process) == 130
    assert any(key.startswith("prefix/smoke/") for key in bucket_keys(s3_env))  # Tune's state, in the bucket
    assert any("/checkpoint_" in key for key in bucket_keys(s3_env))  # and the trial's checkpoint
    ray_process_reaper(str(ray_tmpdir))

    process = start_sweep(tmp_path, s3_env, ray_tmpdir, "--resume")
    assert finish(tmp_path, process) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    log = (tmp_path / "sweep.log").read_text()
    assert "resumed from checkpoint at epoch" in log, log[-3000:]
    parents, children = sweep_runs(tmp_path)
    assert len(children) == 1 and children[0].info.status == "FINISHED", log[-3000:]
    final_table = log[log.rindex("simclr"):]  # the last table: the trial's line, finished
    assert "finished" in final_table, log[-3000:]
