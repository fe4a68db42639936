"""Per-trial resources and concurrency, derived from the cluster the sweep can have.

Each Tune trial runs a driver that waits while its TorchTrainer gathers all of its workers at
once. If drivers hold CPUs the workers need, trials can wait on each other forever; so the
driver asks for no CPU and concurrency is capped so that every running trial's workers fit.

On an autoscaling cluster the plan is made for the nodes the autoscaler may start, not for the
nodes that happen to be up: a cluster that starts with no workers still plans N trials at once,
their pending resource requests make the autoscaler add nodes, and idle nodes go away again.
Without an autoscaler the plan is made for the resources present now.

The autoscaler's global max_workers caps the worker nodes of all types together: the plan fills
that budget with the node types that hold the most first. A trial of several workers is packed
on one node (STRICT_PACK) where a node type holds all of them: its gradient all-reduce then stays
inside the machine instead of crossing the network (ResNet-50 over 10 Gbps TCP: ~100-180 ms a
step), and only as many such trials run at once as there are such nodes to hold them.
"""

from collections.abc import Callable, Mapping, Sequence
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
    head: bool = False  # the head node: not counted against the cluster's max_workers


@dataclass(frozen=True)
class ResourcePlan:
    num_workers: int  # Ray Train workers per trial
    cpus_per_worker: int
    gpus_per_worker: int
    max_concurrent_trials: int
    capacity: str = ""  # what the plan was made for, in words
    worker_slots: int = 0  # workers the whole cluster can hold at once: the most one trial can have
    gpu_memory_bytes: int | None = None  # of the smallest GPU a worker may get; None: not known
    placement_strategy: str = "PACK"  # Ray Train's; STRICT_PACK: all of a trial's workers on one node

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    def describe(self) -> str:
        device = f"{self.gpus_per_worker} GPU + " if self.use_gpu else ""
        planned_for = f" ({self.capacity})" if self.capacity else ""
        packed = ", each trial on one node" if self.placement_strategy == "STRICT_PACK" else ""
        return (f"{self.num_workers} worker(s) x ({device}{self.cpus_per_worker} CPU) per trial{packed}, "
                f"up to {self.max_concurrent_trials} trial(s) at once{planned_for}")


def present_nodes(cluster: Mapping[str, float], gpu_memory_bytes: int | None = None) -> list[NodeType]:
    """The resources present now, as one node (no autoscaler: nothing more will come)."""
    return [NodeType("present", int(cluster.get("CPU", 0)), int(cluster.get("GPU", 0)), max_count=1,
                     gpu_memory_bytes=gpu_memory_bytes)]


def capped_counts(nodes: Sequence[NodeType], value: Callable[[NodeType], int],
                  max_worker_nodes: int | None) -> dict[str, int]:
    """How many of each node type to plan for: each up to its own max_count, and the worker types
    together up to `max_worker_nodes` (the autoscaler's global max_workers), spent on the types
    worth the most `value` per node first (every node costs one of the budget, so this is best)."""
    budget = max_worker_nodes if max_worker_nodes is not None else sum(node.max_count for node in nodes)
    counts = {}
    for node in sorted(nodes, key=lambda node: (not node.head, -value(node))):
        counts[node.name] = node.max_count if node.head else max(0, min(node.max_count, budget))
        budget -= 0 if node.head else counts[node.name]
    return counts


def plan_resources(nodes: Sequence[NodeType], num_workers: int, num_trials: int,
                   max_concurrent: int | None = None, cpus_per_worker: int | None = None,
                   max_worker_nodes: int | None = None) -> ResourcePlan:
    """Resources for each trial's workers and how many trials can run at once without deadlock.

    With GPUs, each worker gets one GPU and the CPUs per GPU of the GPU node types less one (for
    the node's other processes); without, `cpus_per_worker` CPUs (default 1, so a 2-core machine
    runs two trials at once). Worker slots are counted per node, since a worker cannot span two;
    `max_worker_nodes` caps the worker nodes of all types together. A trial of several workers
    is packed on one node where some node type holds them all (module docstring).
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

    counts = capped_counts(usable, slots, max_worker_nodes)
    total_slots = sum(slots(node) * counts[node.name] for node in usable)
    shape = f"{cpus_per_worker} CPU" + (" + 1 GPU" if gpus_per_worker else "")
    if total_slots == 0:
        sizes = ", ".join(f"{node.name}: {node.cpus} CPU / {node.gpus} GPU" for node in usable)
        raise PlanningError(f"a worker needs {shape}, which fits no node type ({sizes}); "
                            "lower --cpus-per-worker or add a larger node type")
    fits = total_slots // num_workers
    if fits < 1:
        raise PlanningError(f"one trial needs {num_workers} worker(s) x {shape} but the cluster can hold "
                            f"{total_slots} such worker(s) at most; lower num_workers or add nodes")
    strategy = "PACK"
    whole = [node for node in usable if slots(node) >= num_workers]
    if num_workers > 1 and whole:
        # Only nodes that hold a whole trial count: the others cannot take part in a packed one.
        counts = capped_counts(whole, lambda node: slots(node) // num_workers, max_worker_nodes)
        fits = sum(slots(node) // num_workers * counts[node.name] for node in whole)
        total_slots = max(slots(node) for node in whole)  # the most one packed trial can have
        usable, strategy = whole, "STRICT_PACK"
    capacity = " + ".join(f"{counts[node.name]} x {node.name}" for node in usable
                          if slots(node) and counts[node.name])
    capacity = (f"{fits} trial(s) of {num_workers} packed on {capacity}" if strategy == "STRICT_PACK"
                else f"{total_slots} worker slot(s) on {capacity}")
    concurrent = min(fits, num_trials, max_concurrent or fits)
    memories = [node.gpu_memory_bytes for node in usable
                if slots(node) and counts[node.name] and gpus_per_worker]
    gpu_memory = min(memories) if memories and None not in memories else None  # type: ignore[type-var]
    return ResourcePlan(num_workers, cpus_per_worker, gpus_per_worker, max(1, concurrent),
                        capacity=capacity, worker_slots=total_slots,
                        gpu_memory_bytes=gpu_memory, placement_strategy=strategy)
