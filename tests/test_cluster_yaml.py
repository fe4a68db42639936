"""cluster.yaml is a valid Ray cluster-launcher config with GPU workers, an image that exists for
the installed Ray, and a cluster shut to strangers; the Dockerfile bakes the project on that image."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import ray
import tomllib
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
DOCKERFILE = ROOT / "Dockerfile"
# Ray's published tags ({version}-py{python}-{platform}), per its release scripts
# (ci/ray_ci/docker_container.py): the Python versions and CUDA platforms it builds rayproject/ray for.
RAY_IMAGE_TAG = re.compile(r"rayproject/ray:(?P<version>\d+\.\d+\.\d+)-py(?P<python>3\d+)"
                           r"-(?P<platform>gpu|cu11[78]|cu12[1-9])")


def test_cluster_yaml_validates_against_the_schema_shipped_with_ray() -> None:
    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    jsonschema.validate(config, json.loads(schema_path.read_text()))


def test_cluster_yaml_passes_rays_own_validation_as_ray_up_runs_it() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(yaml.safe_load(CLUSTER_YAML.read_text())))


def test_the_image_is_rays_gpu_image_of_the_installed_ray_and_python_not_ray_ml() -> None:
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    images = [config["docker"][key] for key in ("image", "head_image", "worker_image")
              if key in config["docker"]]
    assert "rayproject/ray-ml" not in CLUSTER_YAML.read_text() and not any("ray-ml" in i for i in images)
    image = config["docker"]["image"]
    match = RAY_IMAGE_TAG.fullmatch(image)
    assert match, image
    assert match["version"] == ray.__version__
    assert match["python"] == f"{sys.version_info.major}{sys.version_info.minor}"
    pin = next(Requirement(line) for line in tomllib.loads((ROOT / "pyproject.toml").read_text())
               ["project"]["dependencies"] if line.startswith("ray"))
    assert pin.specifier.contains(ray.__version__)


def test_the_dockerfile_bakes_the_projects_dependencies_on_the_same_image() -> None:
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    instructions = [line.split(maxsplit=1) for line in
                    DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    assert instructions[0] == ["FROM", config["docker"]["image"]]
    copied = [shlex.split(rest) for keyword, rest in instructions if keyword == "COPY"]
    assert any(args[-2] == "pyproject.toml" for args in copied)
    run = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "pip install" in run and "-r /tmp/ssl-priors/requirements.txt" in run
    # The RUN step's own program turns this pyproject.toml into the requirements pip installs.
    program = re.search(r'python -c "(.*?)" >', run).group(1).replace("/tmp/ssl-priors/", "")
    listed = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.splitlines()
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert listed == declared and any(line.startswith("torch") for line in listed)


def test_token_authentication_is_made_on_the_head_and_reaches_every_worker() -> None:
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    head_start = [command for command in config["head_start_ray_commands"] if "ray start" in command]
    worker_start = [command for command in config["worker_start_ray_commands"] if "ray start" in command]
    assert head_start and all("RAY_AUTH_MODE=token ray start" in command for command in head_start)
    assert worker_start and all("RAY_AUTH_MODE=token ray start" in command for command in worker_start)
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]  # the driver's shell too
    assert any("ray get-auth-token --generate" in command for command in config["head_setup_commands"])
    # Ray's default token path, copied head -> worker before each worker's container starts ...
    assert config["cluster_synced_files"] == ["/home/ray/.ray/auth_token"]
    # ... onto the worker's host under Ray's docker mount folder, which only the worker's own
    # run options bind into its container (the head makes its token inside its container).
    from ray.autoscaler.sdk import get_docker_host_mount_location

    host_copy = get_docker_host_mount_location(config["cluster_name"]) + config["cluster_synced_files"][0]
    mounts = [option.split()[1].split(":") for option in config["docker"]["worker_run_options"]
              if option.startswith("-v ")]
    assert [[host_copy, "/home/ray/ray_cluster_token", "ro"]] == mounts
    assert "--env RAY_AUTH_TOKEN_PATH=/home/ray/ray_cluster_token" in config["docker"]["worker_run_options"]
    assert "head_run_options" not in config["docker"]
    assert not any("auth_token" in command for command in config["setup_commands"])


def test_every_node_has_the_restricted_security_group_a_gpu_ami_and_a_bucket_scoped_profile() -> None:
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    setup = (ROOT / "aws" / "setup.sh").read_text()
    for name, spec in config["available_node_types"].items():
        node = spec["node_config"]
        assert node["SecurityGroupIds"] == ["SECURITY_GROUP_ID_FROM_AWS_SETUP"], name
        assert node["ImageId"] == "AMI_ID_FROM_AWS_SETUP", name
        role = "ssl-priors-head" if name == config["head_node_type"] else "ssl-priors-worker"
        assert node["IamInstanceProfile"] == {"Name": role}, name
    assert "--cidr \"$ssh_cidr\"" in setup and "--port 22" in setup and "0.0.0.0/0|::/0)" in setup
    worker = json.loads((ROOT / "aws" / "worker-policy.json").read_text())["Statement"]
    head = json.loads((ROOT / "aws" / "head-policy.json").read_text())["Statement"]
    bucket = {"arn:aws:s3:::BUCKET", "arn:aws:s3:::BUCKET/*"}
    assert {statement["Resource"] for statement in worker} == bucket
    assert all(action.startswith("s3:") for statement in worker for action in statement["Action"])
    s3 = [statement for statement in head if "s3:GetObject" in statement["Action"]]
    assert s3 and all(statement["Resource"] in bucket for statement in head
                      if any(action.startswith("s3:") for action in statement["Action"]))
    passes = [statement for statement in head if statement["Action"] == "iam:PassRole"]
    assert [statement["Resource"] for statement in passes] == ["arn:aws:iam::ACCOUNT:role/ssl-priors-worker"]


def test_aws_setup_refuses_ssh_from_anywhere_before_calling_aws() -> None:
    for arguments in (["--bucket", "b", "--ssh-cidr", "0.0.0.0/0"], ["--bucket", "b"], ["--frobnicate"]):
        completed = subprocess.run(["bash", str(ROOT / "aws" / "setup.sh"), *arguments], capture_output=True,
                                   text=True, env={"PATH": "/usr/bin:/bin"})
        assert completed.returncode == 2, arguments
        assert len(completed.stderr.strip().splitlines()) == 1 and "aws/setup.sh:" in completed.stderr


def test_cluster_yaml_has_a_gpu_worker_type_and_installs_this_project() -> None:
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    node_types = config["available_node_types"]
    assert config["head_node_type"] in node_types
    workers = [spec for name, spec in node_types.items() if name != config["head_node_type"]]
    assert any(spec["min_workers"] <= spec["max_workers"] and spec["max_workers"] > 0 for spec in workers)
    assert RAY_IMAGE_TAG.fullmatch(config["docker"]["image"])["platform"] != "cpu"
    assert any("pip install" in command for command in config["setup_commands"])


def test_gpu_workers_start_at_zero_with_a_spot_type_and_stated_resources() -> None:
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    workers = {name: spec for name, spec in config["available_node_types"].items()
               if name != config["head_node_type"]}
    assert all(spec["min_workers"] == 0 for spec in workers.values())
    assert all(spec["resources"]["GPU"] >= 1 and spec["resources"]["CPU"] >= 2 for spec in workers.values())
    assert any(spec["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"
               for spec in workers.values())
    # A multi-GPU type beside the single-GPU ones; the global max_workers binds the sum over types.
    assert any(spec["resources"]["GPU"] >= 4 for spec in workers.values())
    assert any(spec["resources"]["GPU"] == 1 for spec in workers.values())
    assert max(spec["max_workers"] for spec in workers.values()) <= config["max_workers"] \
        < sum(spec["max_workers"] for spec in workers.values())


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
    plan = plan_resources(shape.nodes, num_workers=1, num_trials=24, max_worker_nodes=shape.max_worker_nodes)
    # 12 worker nodes at most (max_workers): 2 x 4 GPUs + 10 single-GPU (on-demand, then spot),
    # 7 CPUs a worker (8 per GPU less one, the smallest of the GPU types).
    assert shape.max_worker_nodes == 12
    assert (plan.max_concurrent_trials, plan.gpus_per_worker, plan.cpus_per_worker) == (18, 1, 7)
    # A 4-worker trial goes whole on a 4-GPU node: two at once.
    packed = plan_resources(shape.nodes, num_workers=4, num_trials=24,
                            max_worker_nodes=shape.max_worker_nodes)
    assert (packed.placement_strategy, packed.max_concurrent_trials) == ("STRICT_PACK", 2)
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
