"""The Ray cluster a sweep runs on: joining it, the nodes it may have, and storage all nodes reach.

- `connect` joins the cluster named by --address / $RAY_ADDRESS (or starts a local Ray) and
  turns Ray's connection failures into one line naming the fix.
- `cluster_shape` says which nodes the sweep can plan for: the autoscaler's node types and
  their maximum counts (from its config file, or from the GCS where the autoscaler reports it
  there), or, without an autoscaler, the resources present now.
- `gpu_memory` says how much memory one GPU of a node type has: the one place that maps AWS
  instance types, and Ray's accelerator types, to GPU memory.
- `check_storage` refuses, before anything starts, a storage path that other nodes cannot reach.
"""

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.resources import NodeType, PlanningError, present_nodes

# Where the cluster launcher (`ray up`) leaves the autoscaler's config on the head node.
BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")
# Providers whose "nodes" all live on this machine: a local path is then shared by all of them.
SINGLE_MACHINE_PROVIDERS = ("fake_multinode",)
# File systems every node of a cluster can mount: a storage path on one of them is shared.
SHARED_FILE_SYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "beegfs", "glusterfs", "ceph",
                       "cephfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.juicefs", "fuse.mountpoint-s3",
                       "fuse.sshfs", "efs", "9p", "virtiofs")


# Memory of one GPU as nvidia-smi reports it (memory.total, MiB: less than the marketing GB), by
# the AWS instance family of a node type's InstanceType and by Ray's `accelerator_type:` resource.
# A node type states its own, for other clouds and instance types, with a label:
#     labels: {gpu-memory-gib: "24"}
GPU_MEMORY_LABEL = "gpu-memory-gib"
GPU_MEMORY_MIB_BY_INSTANCE_FAMILY = {
    "g4dn": 15360,  # NVIDIA T4 16 GB
    "g5": 23028,  # NVIDIA A10G 24 GB
    "g6": 23034,  # NVIDIA L4 24 GB
    "g6e": 46068,  # NVIDIA L40S 48 GB
    "p3": 16160,  # NVIDIA V100 16 GB
    "p3dn": 32510,  # NVIDIA V100 32 GB
    "p4d": 40960,  # NVIDIA A100 40 GB
    "p4de": 81920,  # NVIDIA A100 80 GB
    "p5": 81559,  # NVIDIA H100 80 GB
    "p5e": 143771,  # NVIDIA H200 141 GB
    "p5en": 143771,
}
GPU_MEMORY_MIB_BY_ACCELERATOR = {"T4": 15360, "A10G": 23028, "L4": 23034, "L40S": 46068, "V100": 16160,
                                 "A100-40G": 40960, "A100-80G": 81920, "H100": 81559, "H200": 143771}
MIB = 1024**2

ADDRESS_FIX = ("check --address or $RAY_ADDRESS (the head's host:6379; `ray status` on the head shows it), "
               "or omit both to run on this machine")


class ClusterError(RuntimeError):
    """The cluster cannot be joined or used as asked; the message names the fix."""


@dataclass(frozen=True)
class ClusterShape:
    """What the sweep can plan for: node types (with max counts), whether they span machines."""

    nodes: list[NodeType]
    autoscaling: bool
    multi_machine: bool
    source: str  # where the node types came from, for the plan's printout
    max_worker_nodes: int | None = None  # the autoscaler's global max_workers; None: no such cap


# Environment of every task and actor the sweep starts, on every node. Ray Train V2 redirects a
# worker's print() to its logger and, because Ray's worker wraps sys.stdout, also prints it: each
# line reached the driver twice. Without the patch print() writes to the worker's stdout, once.
WORKER_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}


def connect(address: str | None) -> None:
    """ray.init for the sweep: a local Ray without an address, else the cluster at `address`."""
    import ray

    if ray.is_initialized():
        return
    runtime_env = {"env_vars": WORKER_ENV}
    if address in (None, "", "local"):
        ray.init(address="local" if address == "local" else None, runtime_env=runtime_env)
        return
    _check_reachable(address)
    try:
        ray.init(address=address, runtime_env=runtime_env)
    except Exception as error:  # Ray raises ConnectionError, AuthenticationError, RuntimeError...
        chain = []
        while error is not None:
            chain.append(f"{type(error).__name__}: {error}")
            error = error.__cause__ or error.__context__
        if "InvalidAuthToken" in " ".join(chain) or "AuthenticationError" in " ".join(chain):
            raise ClusterError(
                f"could not join the Ray cluster at {address}: it uses token authentication (Ray 2.59+ "
                "turns it on where ~/.ray/auth_token exists); set RAY_AUTH_MODE=token, with the cluster's "
                "token in ~/.ray/auth_token or $RAY_AUTH_TOKEN"
            ) from None
        raise ClusterError(
            f"could not join the Ray cluster at {address} ({' '.join(chain[0].split())[:200]}); {ADDRESS_FIX}"
        ) from None


def _check_reachable(address: str, timeout_seconds: float = 5.0) -> None:
    """Fail in seconds where nothing listens at host:port: ray.init would retry for minutes."""
    host, separator, port = address.removeprefix("ray://").rpartition(":")
    if not separator or not port.isdigit():
        return  # "auto" and other forms Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout_seconds).close()
    except OSError as error:
        raise ClusterError(f"nothing answers at {address} ({error.strerror or type(error).__name__}); "
                           f"{ADDRESS_FIX}") from None


def read_autoscaler_config(path: Path) -> tuple[list[NodeType], str, int | None]:
    """Node types and maximum counts from a cluster-launcher / autoscaler config file.

    The head counts once; each worker type up to its own max_workers and the config's. Returns
    the node types, the provider type and the config's max_workers, which caps the worker nodes
    of all types together (the planner applies it to the sum; None where the config has none).
    """
    try:
        config = yaml.safe_load(path.expanduser().read_text())
        types: Mapping[str, Any] = config["available_node_types"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as error:
        raise ClusterError(f"cannot read node types from the cluster config {path}: "
                           f"{type(error).__name__}: {' '.join(str(error).split())}") from None
    if not isinstance(types, Mapping) or not all(isinstance(spec, Mapping) for spec in types.values()):
        raise ClusterError(f"available_node_types in {path} must map each node type's name to its settings "
                           "(name: {resources: ..., max_workers: ...}), as in cluster.yaml")
    head = config.get("head_node_type")
    stated_max = config.get("max_workers")  # the global cap on the sum over node types, if stated
    cluster_max = _count(2**31 if stated_max is None else stated_max, "max_workers", path)
    nodes = []
    for name, spec in types.items():
        resources = spec.get("resources") or {}
        if not isinstance(resources, Mapping):
            raise ClusterError(f"resources of node type {name!r} in {path} must be a mapping, e.g. "
                               "{CPU: 8, GPU: 1}")
        count = 1 if name == head else min(_count(spec.get("max_workers", 0), f"{name}.max_workers", path),
                                           cluster_max)
        if name != head and count > 0 and not {"CPU", "GPU"} & set(resources):
            raise ClusterError(f"node type {name!r} in {path} states no CPU/GPU resources; add "
                               f"resources: {{CPU: ..., GPU: ...}} to it so the sweep can plan for it")
        nodes.append(NodeType(name, int(resources.get("CPU", 0)), int(resources.get("GPU", 0)), count,
                              gpu_memory_bytes=gpu_memory(name, spec, path), head=name == head))
    provider = str((config.get("provider") or {}).get("type", ""))
    return nodes, provider, None if stated_max is None else cluster_max


def _count(value: Any, key: str, path: Path) -> int:
    """A whole number >= 0 from the cluster config, or a ClusterError naming the key."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != int(value):
        raise ClusterError(f"{key} in {path} is {value!r}; it must be a whole number >= 0")
    return int(value)


def gpu_memory(name: str, spec: Mapping[str, Any], path: Path) -> int | None:
    """Bytes of one GPU of a node type: its `gpu-memory-gib` label, else its AWS instance family,
    else its `accelerator_type:` resource; None where none of them says."""
    label = (spec.get("labels") or {}).get(GPU_MEMORY_LABEL)
    if label is not None:
        try:
            return int(float(label) * 1024**3)
        except ValueError:
            raise ClusterError(f"node type {name!r} in {path} has {GPU_MEMORY_LABEL}: {label!r}; "
                               "state the GiB of one GPU as a number, e.g. \"24\"") from None
    instance = str((spec.get("node_config") or {}).get("InstanceType", ""))
    family = instance.split(".")[0]
    if family in GPU_MEMORY_MIB_BY_INSTANCE_FAMILY:
        return GPU_MEMORY_MIB_BY_INSTANCE_FAMILY[family] * MIB
    return accelerator_memory(spec.get("resources") or {})


def accelerator_memory(resources: Mapping[str, float]) -> int | None:
    """Bytes of one GPU from Ray's `accelerator_type:NAME` resource, where the table knows NAME."""
    for key in resources:
        accelerator = key.removeprefix("accelerator_type:")
        if key.startswith("accelerator_type:") and accelerator in GPU_MEMORY_MIB_BY_ACCELERATOR:
            return GPU_MEMORY_MIB_BY_ACCELERATOR[accelerator] * MIB
    return None


def reported_node_types() -> list[NodeType] | None:
    """The node groups the autoscaler reported to the GCS (autoscaler v2, KubeRay), if any."""
    import ray._private.state

    config = ray._private.state.state.get_cluster_config()
    if config is None or not config.node_group_configs:
        return None
    return [NodeType(group.name, int(group.resources.get("CPU", 0)), int(group.resources.get("GPU", 0)),
                     group.max_count if group.max_count >= 0 else 2**31,
                     gpu_memory_bytes=accelerator_memory(group.resources))
            for group in config.node_group_configs]


def cluster_shape(cluster_config: str | None, live: bool) -> ClusterShape:
    """What the sweep can plan for. `cluster_config` is the user's statement (a launcher or
    autoscaler YAML); else the launcher's bootstrap file on this head; else, with a live Ray,
    what the GCS reports; else the resources present now."""
    path = Path(cluster_config) if cluster_config else BOOTSTRAP_CONFIG.expanduser()
    if cluster_config or path.exists():
        nodes, provider, max_worker_nodes = read_autoscaler_config(path)
        workers = [node for node in nodes if node.max_count > 0 and (node.cpus or node.gpus)]
        return ClusterShape(nodes, autoscaling=True,
                            multi_machine=len(workers) > 0 and provider not in SINGLE_MACHINE_PROVIDERS,
                            source=f"autoscaler config {path}", max_worker_nodes=max_worker_nodes)
    if live:
        import ray

        reported = reported_node_types()
        if reported:
            return ClusterShape(reported, autoscaling=True, multi_machine=True,
                                source="the autoscaler's node groups")
        hosts = {node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}
        resources = ray.cluster_resources()
        return ClusterShape(present_nodes(resources, accelerator_memory(resources)), autoscaling=False,
                            multi_machine=len(hosts) > 1, source="the resources present now")
    return ClusterShape(present_nodes(local_resources(), local_gpu_memory()), autoscaling=False,
                        multi_machine=False, source="this machine")


def local_resources() -> dict[str, float]:
    """What a local Ray would see, without starting one."""
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def local_gpu_memory() -> int | None:
    """Bytes of this machine's smallest GPU, None without one."""
    import torch

    sizes = [torch.cuda.get_device_properties(index).total_memory
             for index in range(torch.cuda.device_count())]
    return min(sizes) if sizes else None


def check_storage(storage_path: str, shape: ClusterShape) -> None:
    """On several machines, checkpoints must go where every node can read and write them."""
    if not shape.multi_machine or "://" in storage_path:
        return
    file_system = mount_type(Path(storage_path).expanduser().resolve())
    if file_system in SHARED_FILE_SYSTEMS or file_system.startswith("fuse."):
        return
    raise PlanningError(
        f"--storage-path {storage_path} is on this machine's local disk ({file_system or 'unknown'} file "
        "system) but trials run on other nodes too; use shared storage: s3://BUCKET/PATH, gs://..., "
        "or a folder on a file system every node mounts (NFS, EFS)"
    )


def mount_type(path: Path) -> str:
    """The file system type of the mount that holds `path` (Linux /proc/mounts), or ''."""
    best, best_type = "", ""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = fields[1].replace("\\040", " ")
        inside = str(path) == mount_point or str(path).startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fields[2]
    return best_type
