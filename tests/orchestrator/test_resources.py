"""Resource planning: every running trial's workers fit in the cluster at once."""

import pytest

from orchestrator.resources import plan_resources


def test_two_cpus_run_two_single_worker_trials_at_once() -> None:
    plan = plan_resources({"CPU": 2.0}, num_workers=1, num_trials=4)
    assert (plan.cpus_per_worker, plan.gpus_per_worker, plan.max_concurrent_trials) == (1, 0, 2)


def test_concurrency_never_oversubscribes_cpus() -> None:
    for cpus in range(1, 17):
        for workers in (1, 2, 3):
            for cpus_per_worker in (1, 2):
                try:
                    plan = plan_resources({"CPU": cpus}, workers, 100, cpus_per_worker=cpus_per_worker)
                except RuntimeError:
                    assert workers * cpus_per_worker > cpus
                    continue
                assert plan.max_concurrent_trials * workers * plan.cpus_per_worker <= cpus


def test_gpus_one_per_worker_and_concurrency_by_gpu_count() -> None:
    plan = plan_resources({"CPU": 32.0, "GPU": 4.0}, num_workers=2, num_trials=10)
    assert plan.gpus_per_worker == 1 and plan.use_gpu
    assert plan.max_concurrent_trials == 2
    assert plan.max_concurrent_trials * 2 * plan.cpus_per_worker <= 32


def test_max_concurrent_and_trial_count_cap_concurrency() -> None:
    assert plan_resources({"CPU": 16.0}, 1, num_trials=3).max_concurrent_trials == 3
    assert plan_resources({"CPU": 16.0}, 1, num_trials=30, max_concurrent=5).max_concurrent_trials == 5


def test_a_trial_larger_than_the_cluster_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="2 worker"):
        plan_resources({"CPU": 1.0}, num_workers=2, num_trials=1)
