"""Shared fixtures of the orchestrator tests: one in-process local Ray, a Ray Train callback that
records the reports, and a reaper for the Ray processes a test started elsewhere (a fake
cluster, a sweep's own local Ray)."""

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import ray
import ray.train


@pytest.fixture(scope="session")
def local_ray():
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    ray.init(address="local", num_cpus=2)
    yield
    ray.shutdown()


class RecordReports(ray.train.UserCallback):
    """Appends rank 0's every report to a JSON-lines file (callbacks run in the controller), and
    the epoch of every report that came with a checkpoint to `checkpointed_epochs_file(path)`."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def after_report(self, run_context, metrics, checkpoint) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(metrics[0]) + "\n")
        if checkpoint is not None:
            with open(checkpointed_epochs_file(self.path), "a") as handle:
                handle.write(f"{metrics[0].get('epoch')}\n")


def checkpointed_epochs_file(path: Path | str) -> Path:
    return Path(f"{path}.checkpoints")


def checkpointed_epochs(path: Path) -> list:
    """The epochs whose reports came with a checkpoint, as RecordReports(path) saw them."""
    file = checkpointed_epochs_file(path)
    if not file.exists():
        return []
    return [line if line == "None" else int(line) for line in file.read_text().split()]


# The callback runs in Ray's controller process, which cannot import this module.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="session")
def record_reports() -> type[RecordReports]:
    return RecordReports


def processes_mentioning(text: str) -> list[int]:
    """Pids (not this one) whose command line or environment contains `text`, e.g. the private
    RAY_TMPDIR a test gave the Ray it started: every process of that Ray inherits it."""
    needle, found = text.encode(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes() or needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture(scope="session")
def ray_process_reaper() -> Callable[[str], None]:
    """reap(text): SIGKILL every process that mentions `text` (and only those), then wait for them."""

    def reap(text: str) -> None:
        for pid in processes_mentioning(text):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while processes_mentioning(text) and time.monotonic() < deadline:
            time.sleep(0.1)

    return reap
