"""The pre-flight: every input a sweep depends on, checked before Ray starts and before any MLflow
store or run exists, so that a bad one is one line naming the fix, exit code 2, and nothing written.

The checks themselves live where their subject does (a trial config's keys and values in
trainables.config, a grid's axes in orchestrator.grid, a dataset's files in trainables.data, a
cluster config in orchestrator.cluster); this module is the one place that calls them all, in
order, and adds those that belong to no other module: the image size no GPU can hold (from the
memory planner), weights files, the storage path, the tracking URI and --resume's state.

- `check_arguments`: what the command line alone says (also for a dry run).
- `check_grid`: the trials' configs (also for a dry run).
- `check_inputs`: the files and services a real run reads and writes; returns the decoded data.
"""

import json
import os
import struct
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from orchestrator.cluster import (
    BOOTSTRAP_CONFIG,
    GPU_MEMORY_MIB_BY_ACCELERATOR,
    MIB,
    ClusterError,
    read_autoscaler_config,
)
from orchestrator.memory import BF16_AUTOCAST, GIB, trial_activation_profile
from trainables.batches import RESIDENT_MEMORY_FRACTION
from trainables.config import TrialConfig

# The largest GPU the planner knows: an image size whose one image does not fit it fits nowhere.
LARGEST_GPU_BYTES = max(GPU_MEMORY_MIB_BY_ACCELERATOR.values()) * MIB
IMAGE_SIZE_STEP = 16
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "file")
SERVER_TIMEOUT_SECONDS = 5.0
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar", ".safetensors", ".npz")


class PreflightError(ValueError):
    """An input the sweep cannot run with; the message is one line naming the fix."""


@dataclass(frozen=True)
class CheckedInputs:
    """What the pre-flight read on the way and the run uses: the decoded pools (orchestrator.datasets)."""

    decoded: dict


def check_arguments(args: Any) -> None:
    """The command line's own numbers and files (no service is asked anything)."""
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise PreflightError(f"bad --max-concurrent {args.max_concurrent}; it must be >= 1")
    if args.max_failures < 0:
        raise PreflightError(f"bad --max-failures {args.max_failures}; it must be >= 0")
    if args.cpus_per_worker is not None and args.cpus_per_worker < 1:
        raise PreflightError(f"bad --cpus-per-worker {args.cpus_per_worker}; give each worker at least 1 CPU")
    path = Path(args.cluster_config) if args.cluster_config else BOOTSTRAP_CONFIG.expanduser()
    if args.cluster_config or path.exists():
        read_autoscaler_config(path)  # its shape: a ClusterError names what is wrong


def check_grid(configs: Iterable[TrialConfig]) -> None:
    """What no TrialConfig check can see alone: the image size no GPU can hold."""
    for config in configs:
        check_image_size(config)  # the planner's profiles are cached per (method, backbone, size)


def check_image_size(config: TrialConfig) -> None:
    """One image per worker, with activation checkpointing, must fit the largest GPU there is:
    beyond that no plan can run the trial (and decoding alone would take S x S x 3 bytes an image)."""
    from trainables.methods import METHODS

    usable = LARGEST_GPU_BYTES * (1 - RESIDENT_MEMORY_FRACTION)
    pretrains = METHODS[config.method].pretrains
    profile = trial_activation_profile(config, checkpointing=True, pretraining=pretrains,
                                       precision=BF16_AUTOCAST)
    one_image = profile.peak(1, True) + profile.input_per_image
    if one_image <= usable:
        return
    # Activations grow with the pixels: the largest size that fits is about S * sqrt(usable / need).
    largest = int(config.image_size * (usable / one_image) ** 0.5) // IMAGE_SIZE_STEP * IMAGE_SIZE_STEP
    raise PreflightError(
        f"bad value {config.image_size} for image_size: one {config.backbone} image needs about "
        f"{one_image / GIB:,.0f} GiB even with activation checkpointing, more than the largest GPU "
        f"({LARGEST_GPU_BYTES / GIB:.0f} GiB); use image_size <= {max(largest, IMAGE_SIZE_STEP)}"
    )


def check_inputs(configs: list[TrialConfig], tracking_uri: str, storage_path: str, sweep_name: str,
                 resume: bool) -> CheckedInputs:
    """Everything a real run reads or writes, in the order a user would fix it."""
    check_tracking_uri(tracking_uri)
    fitted: set[tuple] = set()
    for config in configs:
        check_weights_file(config)
        key = (config.backbone, config.init, config.resolved_weights_path, config.norm,
               config.weight_standardization, config.cifar_stem, config.method)
        if key not in fitted:
            fitted.add(key)
            check_weights_fit(config)
    check_mlflow_weights(configs, tracking_uri)
    check_storage_path(storage_path)
    if resume:
        check_resume_state(tracking_uri, storage_path, sweep_name)
    from orchestrator.datasets import decode_pools

    try:
        decoded = decode_pools(configs)
    except (OSError, ValueError) as error:
        raise PreflightError(" ".join(str(error).split())) from None
    return CheckedInputs(decoded)


def sqlite_path(tracking_uri: str) -> Path | None:
    """The file of a sqlite:/// tracking URI (sqlite:///relative, sqlite:////absolute), else None."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme != "sqlite":
        return None
    return Path(unquote(parsed.path.removeprefix("/")))


def check_tracking_uri(tracking_uri: str) -> None:
    """A store MLflow can open: a SQLite file in a writable folder, or a server that answers."""
    scheme = urlparse(tracking_uri).scheme.split("+")[0]
    if scheme not in TRACKING_SCHEMES:
        raise PreflightError(f"bad --tracking-uri {tracking_uri!r}: MLflow has no store for "
                             f"{scheme + '://' if scheme else 'a plain path'}; use sqlite:///mlflow.db "
                             "or http://HOST:PORT of an `mlflow server`")
    if scheme == "file" and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
        raise PreflightError(f"--tracking-uri {tracking_uri}: MLflow 3.13+ refuses file stores; use "
                             "sqlite:///mlflow.db (or set MLFLOW_ALLOW_FILE_STORE=true)")
    path = sqlite_path(tracking_uri)
    if path is not None:
        folder = path.parent if str(path.parent) else Path(".")
        if path.exists() and not path.is_file():
            raise PreflightError(f"--tracking-uri {tracking_uri}: {path} is not a file; name a SQLite file")
        if not path.exists() and not (folder.is_dir() and os.access(folder, os.W_OK)):
            raise PreflightError(f"--tracking-uri {tracking_uri}: cannot create {path} ({folder} is not a "
                                 "writable folder); name a SQLite file in a folder you can write")
    if scheme in ("http", "https"):
        health = tracking_uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(health, timeout=SERVER_TIMEOUT_SECONDS) as response:
                answered = response.status == 200
        except (TimeoutError, urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise PreflightError(f"no MLflow server answers at --tracking-uri {tracking_uri} ({reason}); "
                                 "start one (`mlflow server`) or check the address") from None
        if not answered:
            raise PreflightError(f"{health} did not answer 200; is {tracking_uri} an MLflow server?")


def check_weights_file(config: TrialConfig) -> None:
    """A local weights_path is a file that torch reads without unpickling (or a safetensors file)."""
    from orchestrator.lineage import is_mlflow_uri
    from trainables.initializations.pretrained import is_url

    location = config.resolved_weights_path
    if location is None or is_mlflow_uri(location) or is_url(location):
        return
    if "://" in location:
        raise PreflightError(f"weights_path {location}: {location.split('://')[0]}:// is not read; give a "
                             "local file, an https:// URL, runs:/... or models:/...")
    path = Path(location).expanduser()
    if not path.exists():
        raise PreflightError(f"weights_path {location} does not exist; give the checkpoint file's path")
    if not path.is_file():
        raise PreflightError(f"weights_path {location} is not a file; give the checkpoint file in it")
    if path.suffix == ".npz":
        return  # BiT's numpy format (no pickles: numpy.load(allow_pickle=False))
    if path.suffix == ".safetensors":
        if not is_safetensors(path):
            raise PreflightError(f"weights_path {location} is not a safetensors file; check the file")
        return
    import torch

    try:
        torch.load(path, map_location="meta", weights_only=True)
    except Exception as error:  # a refused pickle, a text file, a truncated archive: torch raises any
        reason = " ".join(str(error).split())[:160]
        raise PreflightError(f"weights_path {location} cannot be read with torch.load(weights_only=True) "
                             f"({type(error).__name__}: {reason}); give a state dict saved with torch.save "
                             "or a .safetensors file") from None


def check_weights_fit(config: TrialConfig) -> None:
    """A local weights_path loads into the trial's backbone exactly as the trial will load it
    (trainables.training.build_trial_backbone, on this machine's CPU): a checkpoint of another
    architecture is refused here, not in every trial after Ray starts."""
    from orchestrator.lineage import is_mlflow_uri
    from trainables.initializations.pretrained import is_url
    from trainables.training import build_trial_backbone

    location = config.resolved_weights_path
    if location is None or is_mlflow_uri(location) or is_url(location):
        return
    try:
        build_trial_backbone(config)
    except Exception as error:  # the loaders' own words: missing/unexpected keys, shapes, format
        reason = " ".join(str(error).split())[:300]
        raise PreflightError(f"weights_path {location} does not fit backbone {config.backbone} with init "
                             f"{config.init} ({reason}); give that backbone's checkpoint, or set the "
                             "backbone it belongs to") from None


def is_safetensors(path: Path) -> bool:
    """The safetensors layout: an 8-byte little-endian header length, then that much JSON."""
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return False
        length = struct.unpack("<Q", head)[0]
        if length > min(path.stat().st_size - 8, 100 * 2**20):
            return False
        try:
            return isinstance(json.loads(handle.read(length)), dict)
        except ValueError:
            return False


def check_mlflow_weights(configs: Iterable[TrialConfig], tracking_uri: str) -> None:
    """A runs:/ or models:/ weights_path needs a store that exists: looking it up must not make one."""
    from orchestrator.lineage import is_mlflow_uri

    path = sqlite_path(tracking_uri)
    for config in configs:
        location = config.resolved_weights_path
        if is_mlflow_uri(location) and path is not None and not path.exists():
            raise PreflightError(f"weights_path {location} names an MLflow model but there is no MLflow "
                                 f"store at {tracking_uri}; pass the --tracking-uri that holds it")


def check_storage_path(storage_path: str) -> None:
    """A local storage path is (or can be made) a writable folder; a URI's file system answers."""
    if "://" in storage_path:
        check_remote_storage(storage_path)
        return
    path = Path(storage_path)
    if path.exists() and not path.is_dir():
        raise PreflightError(f"--storage-path {storage_path} is a file; name a folder")
    existing = next(parent for parent in (path, *path.parents) if parent.exists())
    if not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
        raise PreflightError(f"--storage-path {storage_path} cannot be written ({existing} is not writable); "
                             "name a folder you can write")


def check_remote_storage(storage_path: str) -> None:
    import concurrent.futures

    import pyarrow.fs

    def look() -> None:
        file_system, path = pyarrow.fs.FileSystem.from_uri(storage_path)
        file_system.get_file_info(path)

    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        executor.submit(look).result(timeout=30)
    except concurrent.futures.TimeoutError:
        raise PreflightError(f"--storage-path {storage_path} did not answer in 30 s; check the address and "
                             "credentials") from None
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError...: one line either way
        reason = " ".join(str(error).split())[:200]
        raise PreflightError(f"--storage-path {storage_path} cannot be reached ({type(error).__name__}: "
                             f"{reason}); check the URI and credentials") from None
    finally:
        executor.shutdown(wait=False)


def check_resume_state(tracking_uri: str, storage_path: str, sweep_name: str) -> None:
    """--resume needs both halves of the earlier run: its MLflow parent and its Tune state."""
    from orchestrator.tracking import ROLE_SWEEP, TAG_ROLE

    again = f"run it without --resume first: python -m orchestrator.sweep {sweep_name}"
    path = sqlite_path(tracking_uri)
    if path is not None and not path.exists():
        raise PreflightError(f"--resume: no MLflow store at {tracking_uri}, so no earlier run of "
                             f"{sweep_name!r} "
                             f"to resume; {again}")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(sweep_name)
    parents = [] if experiment is None else client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.{TAG_ROLE} = '{ROLE_SWEEP}'", max_results=1)
    if not parents:
        raise PreflightError(f"--resume: no earlier run of sweep {sweep_name!r} in {tracking_uri}; {again}")
    from orchestrator.tune_driver import can_restore, experiment_path

    experiment_folder = experiment_path(storage_path, sweep_name)
    if not can_restore(storage_path, sweep_name):
        raise PreflightError(f"--resume: MLflow has an earlier run of {sweep_name!r} but {experiment_folder} "
                             "holds no Tune state; pass the --storage-path it ran with, or run without "
                             "--resume")


__all__ = ["CheckedInputs", "ClusterError", "PreflightError", "check_arguments", "check_grid",
           "check_inputs", "check_tracking_uri"]
