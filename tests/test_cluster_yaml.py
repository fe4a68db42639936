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
