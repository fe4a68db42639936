"""Per-trial resources and concurrency, derived from the cluster the sweep can have.

Each Tune trial runs a driver that waits while its TorchTrainer gathers all of its workers at
once. If drivers hold CPUs the workers need, trials can wait on each other forever; so the
driver asks for no CPU and concurrency is capped so that every running trial's workers fit.

On an autoscaling cluster the plan is made for the nodes the autoscaler may start, not for the
nodes that happen to be up: a cluster that starts with no workers still plans N trials at once,
their pending resource requests make the autoscaler add nodes, and idle nodes go away again.
Without an autoscaler the plan is made for the resources present now.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class PlanningError(ValueError):
    """The sweep cannot be placed on this cluster; the message names the reason and the fix."""


@dataclass(frozen=True)
class NodeType:
    """A kind of node the cluster has or may start: its resources and at most how many of it."""

    name: str
    cpus: int
    gpus: int
    max_count: int
    gpu_memory_bytes: int | None = None  # of one GPU; None: not known (orchestrator/cluster.py)


@dataclass(frozen=True)
class ResourcePlan:
    num_workers: int  # Ray Train workers per trial
    cpus_per_worker: int
    gpus_per_worker: int
    max_concurrent_trials: int
    capacity: str = ""  # what the plan was made for, in words
    worker_slots: int = 0  # workers the whole cluster can hold at once: the most one trial can have
    gpu_memory_bytes: int | None = None  # of the smallest GPU a worker may get; None: not known

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    def describe(self) -> str:
        device = f"{self.gpus_per_worker} GPU + " if self.use_gpu else ""
        planned_for = f" ({self.capacity})" if self.capacity else ""
        return (f"{self.num_workers} worker(s) x ({device}{self.cpus_per_worker} CPU) per trial, "
                f"up to {self.max_concurrent_trials} trial(s) at once{planned_for}")


def present_nodes(cluster: Mapping[str, float], gpu_memory_bytes: int | None = None) -> list[NodeType]:
    """The resources present now, as one node (no autoscaler: nothing more will come)."""
    return [NodeType("present", int(cluster.get("CPU", 0)), int(cluster.get("GPU", 0)), max_count=1,
                     gpu_memory_bytes=gpu_memory_bytes)]


def plan_resources(nodes: Sequence[NodeType], num_workers: int, num_trials: int,
                   max_concurrent: int | None = None, cpus_per_worker: int | None = None) -> ResourcePlan:
    """Resources for each trial's workers and how many trials can run at once without deadlock.

    With GPUs, each worker gets one GPU and the CPUs per GPU of the GPU node types less one (for
    the node's other processes); without, `cpus_per_worker` CPUs (default 1, so a 2-core machine
    runs two trials at once). Worker slots are counted per node, since a worker cannot span two.
    """
    gpu_nodes = [node for node in nodes if node.gpus > 0 and node.max_count > 0]
    usable = gpu_nodes or [node for node in nodes if node.cpus > 0 and node.max_count > 0]
    if not usable:
        raise PlanningError(
            "the Ray cluster has no CPUs or GPUs and no autoscaler node type that could add them; "
            "start worker nodes, or give --cluster-config the autoscaler's config (max_workers > 0)"
        )
    gpus_per_worker = 1 if gpu_nodes else 0
    if cpus_per_worker is None:
        cpus_per_worker = min(max(1, node.cpus // node.gpus - 1) for node in gpu_nodes) if gpu_nodes else 1

    def slots(node: NodeType) -> int:
        by_cpu = node.cpus // cpus_per_worker
        return min(node.gpus, by_cpu) if gpus_per_worker else by_cpu

    total_slots = sum(slots(node) * node.max_count for node in usable)
    shape = f"{cpus_per_worker} CPU" + (" + 1 GPU" if gpus_per_worker else "")
    if total_slots == 0:
        sizes = ", ".join(f"{node.name}: {node.cpus} CPU / {node.gpus} GPU" for node in usable)
        raise PlanningError(f"a worker needs {shape}, which fits no node type ({sizes}); "
                            "lower --cpus-per-worker or add a larger node type")
    fits = total_slots // num_workers
    if fits < 1:
        raise PlanningError(f"one trial needs {num_workers} worker(s) x {shape} but the cluster can hold "
                            f"{total_slots} such worker(s) at most; lower num_workers or add nodes")
    capacity = " + ".join(f"{node.max_count} x {node.name}" for node in usable if slots(node))
    concurrent = min(fits, num_trials, max_concurrent or fits)
    memories = [node.gpu_memory_bytes for node in usable if slots(node) and gpus_per_worker]
    gpu_memory = min(memories) if memories and None not in memories else None  # type: ignore[type-var]
    return ResourcePlan(num_workers, cpus_per_worker, gpus_per_worker, max(1, concurrent),
                        capacity=f"{total_slots} worker slot(s) on {capacity}", worker_slots=total_slots,
                        gpu_memory_bytes=gpu_memory)
