"""Per-trial resources and concurrency, derived from what the Ray cluster has.

Each Tune trial runs a driver that waits while its TorchTrainer gathers all of its workers at
once. If drivers hold CPUs the workers need, trials can wait on each other forever; so the
driver asks for no CPU and concurrency is capped so that every running trial's workers fit.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourcePlan:
    num_workers: int  # Ray Train workers per trial
    cpus_per_worker: int
    gpus_per_worker: int
    max_concurrent_trials: int

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    def describe(self) -> str:
        device = f"{self.gpus_per_worker} GPU + " if self.use_gpu else ""
        return (f"{self.num_workers} worker(s) x ({device}{self.cpus_per_worker} CPU) per trial, "
                f"up to {self.max_concurrent_trials} trial(s) at once")


def plan_resources(cluster: dict[str, float], num_workers: int, num_trials: int,
                   max_concurrent: int | None = None, cpus_per_worker: int | None = None) -> ResourcePlan:
    """Resources for each trial's workers and how many trials can run at once without deadlock.

    With GPUs, each worker gets one GPU and an even share of the CPUs per GPU; without, each
    worker gets `cpus_per_worker` CPUs (default 1, so a 2-core machine runs two trials at once).
    """
    total_cpus = int(cluster.get("CPU", 0))
    total_gpus = int(cluster.get("GPU", 0))
    if total_cpus < 1:
        raise RuntimeError(f"the Ray cluster reports {total_cpus} CPUs; a trial needs at least one")
    if total_gpus > 0:
        gpus_per_worker = 1
        cpus_per_worker = cpus_per_worker or max(1, total_cpus // total_gpus - 1)
        fits = min(total_gpus // num_workers, total_cpus // (num_workers * cpus_per_worker))
    else:
        gpus_per_worker = 0
        cpus_per_worker = cpus_per_worker or 1
        fits = total_cpus // (num_workers * cpus_per_worker)
    if fits < 1:
        raise RuntimeError(
            f"one trial needs {num_workers} worker(s) x {cpus_per_worker} CPU"
            + (" + 1 GPU" if gpus_per_worker else "")
            + f" but the cluster has {total_cpus} CPU / {total_gpus} GPU; "
            "lower num_workers or --cpus-per-worker"
        )
    concurrent = min(fits, num_trials, max_concurrent or fits)
    return ResourcePlan(num_workers, cpus_per_worker, gpus_per_worker, max(1, concurrent))
