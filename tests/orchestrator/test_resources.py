"""Resource planning: every running trial's workers fit in the cluster the sweep can have."""

import pytest

from orchestrator.cluster import (
    ClusterError,
    check_storage,
    cluster_shape,
    mount_type,
    read_autoscaler_config,
)
from orchestrator.resources import NodeType, PlanningError, plan_resources, present_nodes


def test_two_cpus_run_two_single_worker_trials_at_once() -> None:
    plan = plan_resources(present_nodes({"CPU": 2.0}), num_workers=1, num_trials=4)
    assert (plan.cpus_per_worker, plan.gpus_per_worker, plan.max_concurrent_trials) == (1, 0, 2)


def test_concurrency_never_oversubscribes_cpus() -> None:
    for cpus in range(1, 17):
        for workers in (1, 2, 3):
            for cpus_per_worker in (1, 2):
                try:
                    plan = plan_resources(present_nodes({"CPU": cpus}), workers, 100,
                                          cpus_per_worker=cpus_per_worker)
                except PlanningError:
                    assert workers * cpus_per_worker > cpus
                    continue
                assert plan.max_concurrent_trials * workers * plan.cpus_per_worker <= cpus


def test_gpus_one_per_worker_and_concurrency_by_gpu_count() -> None:
    plan = plan_resources(present_nodes({"CPU": 32.0, "GPU": 4.0}), num_workers=2, num_trials=10)
    assert plan.gpus_per_worker == 1 and plan.use_gpu
    assert plan.max_concurrent_trials == 2
    assert plan.max_concurrent_trials * 2 * plan.cpus_per_worker <= 32


def test_the_global_max_workers_caps_the_sum_over_node_types_spent_on_the_largest_first(tmp_path) -> None:
    config = tmp_path / "autoscaler.yaml"
    config.write_text("""
max_workers: 5
head_node_type: head
provider: {type: aws}
available_node_types:
  head: {resources: {CPU: 0}, node_config: {}}
  one: {resources: {CPU: 8, GPU: 1}, min_workers: 0, max_workers: 4, node_config: {}}
  spot: {resources: {CPU: 8, GPU: 1}, min_workers: 0, max_workers: 4, node_config: {}}
  four: {resources: {CPU: 32, GPU: 4}, min_workers: 0, max_workers: 2, node_config: {}}
""")
    shape = cluster_shape(str(config), live=False)
    assert shape.max_worker_nodes == 5
    # Each type alone allows 4 + 4 + 2 nodes (16 GPUs); 5 nodes at most: 2 x four + 3 x one-GPU = 11.
    capped = plan_resources(shape.nodes, 1, 100, max_worker_nodes=shape.max_worker_nodes)
    assert (capped.max_concurrent_trials, capped.worker_slots) == (11, 11)
    assert plan_resources(shape.nodes, 1, 100).max_concurrent_trials == 16  # without the cap
    assert "2 x four" in capped.capacity and "5 x" not in capped.capacity
    # A cap below the head-less count of one type alone: the head never counts against it.
    head_only = [NodeType("head", 0, 0, 1, head=True), NodeType("one", 8, 1, 4)]
    assert plan_resources(head_only, 1, 100, max_worker_nodes=1).max_concurrent_trials == 1


def test_a_multi_worker_trial_is_packed_on_one_multi_gpu_node() -> None:
    nodes = [NodeType("head", 0, 0, 1, head=True), NodeType("one", 8, 1, 10), NodeType("four", 48, 4, 2)]
    single = plan_resources(nodes, num_workers=1, num_trials=100, max_worker_nodes=12)
    assert (single.placement_strategy, single.max_concurrent_trials) == ("PACK", 18)
    # Two workers: only the 4-GPU nodes hold a whole trial, two trials each; the 1-GPU nodes
    # would join a trial's workers over the network, so they are not planned for it.
    packed = plan_resources(nodes, num_workers=2, num_trials=100, max_worker_nodes=12)
    assert packed.placement_strategy == "STRICT_PACK"
    assert (packed.max_concurrent_trials, packed.worker_slots) == (4, 4)
    assert "each trial on one node" in packed.describe()
    # Wider than any node: spread over the nodes again, every GPU counted.
    spread = plan_resources(nodes, num_workers=6, num_trials=100, max_worker_nodes=12)
    assert (spread.placement_strategy, spread.max_concurrent_trials) == ("PACK", 3)
    # No multi-GPU node type: spread as before.
    assert plan_resources(nodes[:2], num_workers=2, num_trials=100).placement_strategy == "PACK"


def test_max_concurrent_and_trial_count_cap_concurrency() -> None:
    assert plan_resources(present_nodes({"CPU": 16.0}), 1, num_trials=3).max_concurrent_trials == 3
    assert plan_resources(present_nodes({"CPU": 16.0}), 1, num_trials=30,
                          max_concurrent=5).max_concurrent_trials == 5


def test_a_trial_larger_than_the_cluster_is_a_clear_error() -> None:
    with pytest.raises(PlanningError, match="2 worker"):
        plan_resources(present_nodes({"CPU": 1.0}), num_workers=2, num_trials=1)


def test_an_autoscaling_cluster_with_no_workers_up_plans_for_its_node_types() -> None:
    head = NodeType("head", cpus=0, gpus=0, max_count=1)
    workers = NodeType("gpu_worker", cpus=8, gpus=1, max_count=8)
    plan = plan_resources([head, workers], num_workers=1, num_trials=24)
    assert (plan.max_concurrent_trials, plan.cpus_per_worker, plan.gpus_per_worker) == (8, 7, 1)
    # Two GPUs per worker node: two workers per node, each with half the CPUs less one.
    plan = plan_resources([head, NodeType("big", cpus=16, gpus=2, max_count=3)], num_workers=2, num_trials=24)
    assert (plan.max_concurrent_trials, plan.cpus_per_worker) == (3, 7)


def test_cpu_only_nodes_serve_cpu_workers_and_are_ignored_beside_gpu_nodes() -> None:
    cpu_nodes = NodeType("cpu", cpus=4, gpus=0, max_count=2)
    assert plan_resources([cpu_nodes], 1, 100).max_concurrent_trials == 8
    plan = plan_resources([cpu_nodes, NodeType("gpu", cpus=4, gpus=1, max_count=1)], 1, 100)
    assert (plan.max_concurrent_trials, plan.gpus_per_worker) == (1, 1)


def test_a_worker_that_fits_no_node_type_and_an_empty_cluster_are_planning_errors() -> None:
    with pytest.raises(PlanningError, match="fits no node type"):
        plan_resources([NodeType("small", cpus=2, gpus=0, max_count=4)], 1, 1, cpus_per_worker=4)
    with pytest.raises(PlanningError, match="no CPUs or GPUs"):
        plan_resources([NodeType("head", cpus=0, gpus=0, max_count=1)], 1, 1)


def test_autoscaler_config_gives_node_types_capped_by_the_cluster_max(tmp_path) -> None:
    config = tmp_path / "autoscaler.yaml"
    config.write_text("""
max_workers: 3
head_node_type: head
provider: {type: aws}
available_node_types:
  head: {resources: {CPU: 0}, node_config: {}}
  gpu: {resources: {CPU: 8, GPU: 1}, min_workers: 0, max_workers: 8, node_config: {}}
""")
    nodes, provider, max_worker_nodes = read_autoscaler_config(config)
    assert provider == "aws" and max_worker_nodes == 3
    assert {node.name: node.max_count for node in nodes} == {"head": 1, "gpu": 3}
    shape = cluster_shape(str(config), live=False)
    assert shape.autoscaling and shape.multi_machine
    assert plan_resources(shape.nodes, 1, 10).max_concurrent_trials == 3


def test_gpu_memory_of_a_node_type_from_its_label_instance_type_or_accelerator(tmp_path) -> None:
    config = tmp_path / "autoscaler.yaml"
    config.write_text("""
head_node_type: head
provider: {type: aws}
available_node_types:
  head: {resources: {CPU: 0}, node_config: {InstanceType: m6i.2xlarge}}
  a10g: {resources: {CPU: 8, GPU: 1}, max_workers: 2, node_config: {InstanceType: g5.12xlarge}}
  stated: {resources: {CPU: 8, GPU: 1}, max_workers: 2, labels: {gpu-memory-gib: "48"},
           node_config: {InstanceType: g5.2xlarge}}
  by_accelerator: {resources: {CPU: 8, GPU: 1, "accelerator_type:H100": 1}, max_workers: 1, node_config: {}}
  unknown: {resources: {CPU: 8, GPU: 1}, max_workers: 1, node_config: {InstanceType: x9.large}}
""")
    memory = {node.name: node.gpu_memory_bytes for node in read_autoscaler_config(config)[0]}
    assert memory == {"head": None, "a10g": 23028 * 2**20, "stated": 48 * 2**30,
                      "by_accelerator": 81559 * 2**20, "unknown": None}
    # The plan sizes for the smallest GPU a worker may land on; unknown anywhere means unknown.
    nodes = read_autoscaler_config(config)[0]
    known = [node for node in nodes if node.name != "unknown"]
    assert plan_resources(known, 1, 1).gpu_memory_bytes == 23028 * 2**20
    assert plan_resources(nodes, 1, 1).gpu_memory_bytes is None
    config.write_text(config.read_text().replace('"48"', '"lots"'))
    with pytest.raises(ClusterError, match="gpu-memory-gib.*'lots'"):
        read_autoscaler_config(config)


def test_a_worker_type_without_stated_resources_is_a_clear_error(tmp_path) -> None:
    config = tmp_path / "autoscaler.yaml"
    config.write_text("head_node_type: h\navailable_node_types:\n  h: {resources: {}}\n"
                      "  w: {resources: {}, max_workers: 2}\n")
    with pytest.raises(ClusterError, match="'w'.*states no CPU/GPU"):
        read_autoscaler_config(config)
    with pytest.raises(ClusterError, match="cannot read node types"):
        read_autoscaler_config(tmp_path / "missing.yaml")


def test_local_storage_is_refused_only_where_trials_run_on_other_machines(tmp_path) -> None:
    config = tmp_path / "autoscaler.yaml"
    config.write_text("head_node_type: h\nprovider: {type: aws}\navailable_node_types:\n"
                      "  h: {resources: {CPU: 0}}\n  w: {resources: {CPU: 4, GPU: 1}, max_workers: 2}\n")
    multi = cluster_shape(str(config), live=False)
    assert mount_type(tmp_path) not in ("nfs", "nfs4")  # a local disk here
    with pytest.raises(PlanningError, match="local disk.*s3://"):
        check_storage(str(tmp_path / "ray_results"), multi)
    check_storage("s3://bucket/ssl-priors", multi)  # a URI every node reaches
    check_storage(str(tmp_path), cluster_shape(None, live=False))  # this machine alone
    fake = tmp_path / "fake.yaml"
    fake.write_text(config.read_text().replace("aws", "fake_multinode"))
    check_storage(str(tmp_path), cluster_shape(str(fake), live=False))  # all nodes on this machine
