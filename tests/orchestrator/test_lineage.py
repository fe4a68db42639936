"""The backbone as an MLflow model and back, registered versions, dataset inputs, weights URIs,
through a real SQLite MLflow store (no Ray: the sweep's end-to-end test covers that path)."""

import json
import subprocess
import sys
from pathlib import Path

import mlflow.pytorch
import pytest
import torch
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

from orchestrator.lineage import (
    MODEL_NAME,
    fetch_weights,
    is_mlflow_uri,
    log_backbone_model,
    log_dataset_input,
    log_pretraining_input,
    resolve_weights,
)
from trainables import metrics
from trainables.config import TrialConfig
from trainables.initializations import build_initialized_backbone
from trainables.resource_usage import peak_memory
from trainables.saved_backbone import WEIGHTS_FILE, BackboneArchitecture, save_backbone
from trainables.shipped_weights import local_weights_file


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, MlflowClient, str]:
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("lineage", artifact_location=str(tmp_path / "artifacts"))
    return tracking_uri, client, experiment_id


def trained_looking_backbone(seed: int) -> torch.nn.Module:
    """A cbr_nano whose weights are not its random init's (as after pretraining)."""
    backbone, _, _ = build_initialized_backbone("cbr_nano", "random", seed=seed)
    with torch.no_grad():
        for parameter in backbone.parameters():
            parameter.add_(0.01 * seed)
    return backbone


def checkpoint_with(backbone: torch.nn.Module, directory: Path) -> Path:
    directory.mkdir()
    save_backbone(backbone, BackboneArchitecture("cbr_nano"), directory)
    return directory


def test_registered_backbones_are_versions_that_load_and_carry_the_trials_weights(store, tmp_path) -> None:
    tracking_uri, client, experiment_id = store
    config = TrialConfig(backbone="cbr_nano", image_size=16, dataset="digits")
    backbones = [trained_looking_backbone(seed) for seed in (1, 2)]
    run_ids = []
    for number, backbone in enumerate(backbones):
        run_id = client.create_run(experiment_id).info.run_id
        run_ids.append(run_id)
        checkpoint = checkpoint_with(backbone, tmp_path / f"c{number}")
        log_backbone_model(tracking_uri, experiment_id, run_id, checkpoint, config, step=config.epochs,
                           registered_model_name="ssl-backbones")
    versions = client.search_model_versions("name = 'ssl-backbones'")
    assert sorted(int(version.version) for version in versions) == [1, 2]
    assert {version.run_id for version in versions} == set(run_ids)
    images = torch.rand(3, 3, 16, 16)
    for version, backbone in zip(("1", "2"), backbones, strict=True):
        loaded = mlflow.pytorch.load_model(f"models:/ssl-backbones/{version}")
        with torch.no_grad():
            expected = backbone.eval()(images)
            assert loaded(images).shape == (3, 256)
            torch.testing.assert_close(loaded(images), expected)
    # The model carries what it takes to use it.
    info = mlflow.models.get_model_info(f"runs:/{run_ids[0]}/{MODEL_NAME}")
    assert info.metadata["feature_dim"] == 256 and info.metadata["input_size"] == [3, 16, 16]
    assert info.metadata["normalization"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert (info.metadata["backbone"], info.metadata["method"], info.metadata["init"]) == (
        "cbr_nano", "simclr", "random")


def test_a_runs_uri_ships_the_exact_weights_that_ssl_imagenet_then_loads(store, tmp_path) -> None:
    tracking_uri, client, experiment_id = store
    backbone = trained_looking_backbone(3)
    run_id = client.create_run(experiment_id).info.run_id
    log_backbone_model(tracking_uri, experiment_id, run_id, checkpoint_with(backbone, tmp_path / "c"),
                       TrialConfig(image_size=16), step=1)
    location = f"runs:/{run_id}/{MODEL_NAME}"
    config = TrialConfig(init="ssl-imagenet", weights_path=location, image_size=16)
    assert is_mlflow_uri(location) and not is_mlflow_uri("weights/simclr.pth") and not is_mlflow_uri(None)
    resolved = resolve_weights([config, config], tracking_uri)
    assert list(resolved) == [location]
    assert resolved[location] == fetch_weights(location, tracking_uri)
    with local_weights_file(config, resolved[location]) as local:
        assert Path(local.weights_path).is_file()
        started, _, report = build_initialized_backbone("cbr_nano", "ssl-imagenet",
                                                        weights_path=local.weights_path)
    assert not Path(local.weights_path).exists()  # the temporary file is gone with the block
    assert "loaded 24 of the model's 24 tensors" in report
    for key, value in backbone.state_dict().items():
        assert torch.equal(started.state_dict()[key], value), key


def test_a_dataset_input_carries_the_split_hash_as_its_digest(store) -> None:
    _, client, experiment_id = store
    run_id = client.create_run(experiment_id).info.run_id
    config = TrialConfig(dataset="shapes", split="random", seed=2)
    for _ in range(2):  # a resumed trial logs it again: still one input
        log_dataset_input(client, run_id, config, "0123456789abcdef")
    inputs = client.get_run(run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    assert (inputs[0].dataset.name, inputs[0].dataset.digest) == ("shapes", "0123456789abcdef")
    assert {tag.key: tag.value for tag in inputs[0].tags}["mlflow.data.context"] == "evaluation"
    profile = json.loads(inputs[0].dataset.profile)
    assert profile == {"image_size": config.image_size, "split": "random", "seed": 2}


def test_a_separate_pretraining_pool_is_a_second_dataset_input(store, tmp_path: Path) -> None:
    _, client, experiment_id = store
    run_id = client.create_run(experiment_id).info.run_id
    config = TrialConfig(dataset="imagefolder", data_root=str(tmp_path / "labeled"),
                         pretrain_dataset="unlabeled", pretrain_data_root=str(tmp_path / "scans"))
    log_dataset_input(client, run_id, config, "aaaaaaaaaaaaaaaa")
    log_pretraining_input(client, run_id, config, "bbbbbbbbbbbbbbbb")
    inputs = {(entry.dataset.name, entry.dataset.digest): {tag.key: tag.value for tag in entry.tags}
              for entry in client.get_run(run_id).inputs.dataset_inputs}
    assert set(inputs) == {("imagefolder", "aaaaaaaaaaaaaaaa"), ("unlabeled", "bbbbbbbbbbbbbbbb")}
    assert inputs[("unlabeled", "bbbbbbbbbbbbbbbb")]["mlflow.data.context"] == "pretraining"
    assert inputs[("imagefolder", "aaaaaaaaaaaaaaaa")]["mlflow.data.context"] == "evaluation"
    sources = {entry.dataset.name: json.loads(entry.dataset.source)["uri"]
               for entry in client.get_run(run_id).inputs.dataset_inputs}
    # Your own folders are data_root itself, not a folder named for the layout under it.
    assert sources == {"imagefolder": str((tmp_path / "labeled").resolve()),
                       "unlabeled": str((tmp_path / "scans").resolve())}


@pytest.mark.parametrize("location", ["runs:/0123456789abcdef0123456789abcdef/backbone",
                                      "models:/no-such-model/1"])
def test_a_bad_weights_uri_is_one_line_and_exit_2_before_anything_starts(tmp_path, location) -> None:
    # A store that exists but has no such run or model (with no store at all the pre-flight says
    # so: tests/orchestrator/test_preflight.py).
    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()
    completed = subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", "smoke", "--set", "image_size=16",
         "--set", "init=ssl-imagenet", "--set", f"weights_path={location}",
         "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage-path", str(tmp_path / "ray")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 2, completed.stderr[-2000:]
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, completed.stderr[-2000:]
    assert f"weights_path {location} cannot be loaded" in errors[0]
    assert "sweep smoke:" not in completed.stdout  # no trial table: Ray never started
    assert not (tmp_path / "ray").exists()


def test_peak_memory_on_a_cpu_is_the_process_peak_resident_set() -> None:
    status = Path("/proc/self/status").read_text()
    resident_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    resident_now = resident_kib / 1024
    measured = peak_memory(torch.device("cpu"))
    assert set(measured) == {metrics.PEAK_PROCESS_RSS_MIB}
    assert measured[metrics.PEAK_PROCESS_RSS_MIB] >= resident_now


def plant_model(client: MlflowClient, experiment_id: str, files: dict[str, Path]) -> str:
    """A run whose model `backbone` holds `files` (name -> local file): what anyone who can log
    to the tracking server can leave there. Returns its runs:/ URI."""
    run_id = client.create_run(experiment_id).info.run_id
    model = client.create_logged_model(experiment_id, name=MODEL_NAME, source_run_id=run_id)
    folder = Path(files[next(iter(files))]).parent / "to-log"
    folder.mkdir()
    for name, path in files.items():
        (folder / name).write_bytes(path.read_bytes())
    client.log_model_artifacts(model.model_id, str(folder))
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    return f"runs:/{run_id}/{MODEL_NAME}"


def test_a_pickle_planted_in_a_runs_model_is_refused_with_one_line_and_never_runs(
        store, tmp_path, pickle_bomb) -> None:
    tracking_uri, client, experiment_id = store
    plant, marker = pickle_bomb
    # A pickle under the safetensors file's name, and a model with only a pickled torch file.
    disguised = plant_model(client, experiment_id, {WEIGHTS_FILE: plant(tmp_path / "a" / "x.pt")})
    pickled = plant_model(client, experiment_id, {"model.pth": plant(tmp_path / "b" / "model.pth")})
    for location, expected in ((disguised, "is not a safetensors file"), (pickled, f"has no {WEIGHTS_FILE}")):
        with pytest.raises(ValueError) as raised:
            fetch_weights(location, tracking_uri)
        assert expected in str(raised.value) and "\n" not in str(raised.value), str(raised.value)
        assert not marker.exists()
    # Through the command line: one line, exit 2, before Ray starts.
    completed = subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", "smoke", "--set", "image_size=16",
         "--set", "init=ssl-imagenet", "--set", f"weights_path={disguised}",
         "--tracking-uri", tracking_uri, "--storage-path", str(tmp_path / "ray")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 2, completed.stderr[-2000:]
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "is not a safetensors file" in errors[0], completed.stderr[-2000:]
    assert not marker.exists() and not (tmp_path / "ray").exists()
