"""Where a run came from, in the tags MLflow's UI reads: the Source and User columns of the runs
table (`mlflow.source.name`, `mlflow.user`), the git commit on the run page, and the command line.

`MlflowClient.create_run` adds none of these (only the fluent `mlflow.start_run` does), so the
sweep sets them on its parent run and on every trial run.
"""

import getpass
import os
import shlex
import subprocess
import sys
from pathlib import Path

from mlflow.utils.mlflow_tags import (
    MLFLOW_GIT_COMMIT,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
    MLFLOW_USER,
)

TAG_COMMAND = "command"  # the command line that started the sweep, as a shell could run it again
SOURCE_NAME = "orchestrator.sweep"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def git_commit(directory: Path = PROJECT_ROOT) -> str | None:
    """The commit checked out in `directory`, or None outside a git work tree (an installed copy)."""
    try:
        completed = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True,
                                   text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = completed.stdout.strip()
    return commit if completed.returncode == 0 and commit else None


def user() -> str:
    """The login name; a container's uid without a passwd entry has none, and is named by number."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def command_line(arguments: list[str] | None = None) -> str:
    """`python -m orchestrator.sweep ARGS`: the sweep is a module, so argv[0] (its file) says less."""
    return shlex.join(["python", "-m", SOURCE_NAME, *(sys.argv[1:] if arguments is None else arguments)])


def provenance_tags(arguments: list[str] | None = None) -> dict[str, str]:
    """The tags every run of a sweep gets: source, user, commit (when known) and command line."""
    tags = {MLFLOW_SOURCE_NAME: SOURCE_NAME, MLFLOW_SOURCE_TYPE: "LOCAL", MLFLOW_USER: user(),
            TAG_COMMAND: command_line(arguments)[:5000]}
    commit = git_commit()
    if commit:
        tags[MLFLOW_GIT_COMMIT] = commit
    return tags
