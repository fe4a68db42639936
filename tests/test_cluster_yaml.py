"""cluster.yaml is a valid Ray cluster-launcher config with GPU workers."""

import json
from pathlib import Path

import jsonschema
import ray
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def test_cluster_yaml_validates_against_the_schema_shipped_with_ray() -> None:
    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    jsonschema.validate(config, json.loads(schema_path.read_text()))


def test_cluster_yaml_has_a_gpu_worker_type_and_installs_this_project() -> None:
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    node_types = config["available_node_types"]
    assert config["head_node_type"] in node_types
    workers = [spec for name, spec in node_types.items() if name != config["head_node_type"]]
    assert any(spec["min_workers"] <= spec["max_workers"] and spec["max_workers"] > 0 for spec in workers)
    assert "gpu" in config["docker"]["image"]
    assert any("pip install" in command for command in config["setup_commands"])


def test_gpu_workers_start_at_zero_with_a_spot_type_and_stated_resources() -> None:
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    workers = {name: spec for name, spec in config["available_node_types"].items()
               if name != config["head_node_type"]}
    assert all(spec["min_workers"] == 0 for spec in workers.values())
    assert all(spec["resources"]["GPU"] >= 1 and spec["resources"]["CPU"] >= 2 for spec in workers.values())
    assert any(spec["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"
               for spec in workers.values())
    assert config["max_workers"] >= sum(spec["max_workers"] for spec in workers.values())


def test_mlflow_and_the_dashboard_listen_on_localhost_only_and_no_data_travels() -> None:
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    commands = " ".join(config["head_setup_commands"] + config["head_start_ray_commands"])
    assert "0.0.0.0" not in CLUSTER_YAML.read_text()
    assert "mlflow server" in commands and "--host 127.0.0.1" in commands
    assert "--dashboard-host=127.0.0.1" in commands
    assert "/data/" in config["rsync_exclude"]
    # rsync matches an unanchored pattern at any depth: none may name a folder of the code.
    code_folders = {path.name for package in ("orchestrator", "trainables", "search_spaces")
                    for path in (CLUSTER_YAML.parent / package).glob("**/") if path.is_dir()}
    assert "data" in code_folders
    for pattern in config["rsync_exclude"]:
        if not pattern.startswith(("/", "**/")):
            assert pattern.strip("/") not in code_folders, pattern


def test_the_sweep_plans_for_the_whole_autoscaling_cluster_from_this_file() -> None:
    from orchestrator.cluster import cluster_shape
    from orchestrator.resources import plan_resources

    shape = cluster_shape(str(CLUSTER_YAML), live=False)
    plan = plan_resources(shape.nodes, num_workers=1, num_trials=24)
    # 16 single-GPU workers (8 on-demand + 8 spot), 7 CPUs each (8 per GPU less one).
    assert (plan.max_concurrent_trials, plan.gpus_per_worker, plan.cpus_per_worker) == (16, 1, 7)
    assert shape.autoscaling and shape.multi_machine


def test_schema_check_rejects_a_broken_config() -> None:
    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    del config["provider"]
    try:
        jsonschema.validate(config, json.loads(schema_path.read_text()))
    except jsonschema.ValidationError as error:
        assert "provider" in error.message
    else:
        raise AssertionError("a config without a provider passed the schema")
