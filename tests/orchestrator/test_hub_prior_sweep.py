"""A hub backbone as a prior, as a user runs it: a sweep offline, its model in the Hugging Face
cache in the hub's own layout; and the dry run's word on which arms have their weights here."""

import os
import re
from pathlib import Path

import pytest
import timm
import torch
from mlflow.tracking import MlflowClient
from timm.models import save_for_hf

from orchestrator.sweep import main
from tests.orchestrator.test_autoscaling_cluster import sweep_deleting_once_shipped
from trainables import metrics
from trainables.initializations import ssl_catalogue

REPO = "testorg/tiny-resnet"


def save_in_hub_cache(cache: Path, repo_id: str) -> Path:
    """timm's test_resnet (372k parameters), perturbed, where `hf download` would leave it."""
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10)
    with torch.no_grad():
        for tensor in model.parameters():
            tensor.add_(torch.randn_like(tensor) * 0.05)
    repo_folder = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_folder / "snapshots" / ("ab" * 20)
    save_for_hf(model, str(snapshot), safe_serialization=True)
    (repo_folder / "refs").mkdir()
    (repo_folder / "refs" / "main").write_text(snapshot.name)
    return snapshot


def test_a_sweep_trains_from_an_hf_hub_prior_in_the_hub_cache_offline(tmp_path: Path) -> None:
    """The driver ships the snapshot's files: the cache is deleted before any trial starts."""
    snapshot = save_in_hub_cache(tmp_path / "hf_cache", REPO)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf_cache"),
                   "TORCH_HOME": str(tmp_path / "torch"), "RAY_ADDRESS": "local"}
    returncode, output = sweep_deleting_once_shipped(
        ["smoke", "--set", f"backbone=hf-hub:{REPO}",
         "--set", "init=pretrained", "--set", "norm=groupnorm", "--set", "method=simclr",
         "--set", "batch_size=64", "--set", "epochs=1", "--set", "image_size=16", "--set", "probe_epochs=5",
         "--set", "probe_repeats=1", "--set", "method_params.projection_dim=64",
         "--tracking-uri", tracking_uri, "--storage-path", str(tmp_path / "ray_results"),
         "--verbose"],  # the worker's initialization line is read from Ray's output below
        tmp_path, environment, tmp_path / "hf_cache", timeout=600)
    assert returncode == 0, output[-5000:]
    assert f"weights: {snapshot / 'model.safetensors'} shipped to the workers" in output
    assert f"weights: {snapshot / 'config.json'} shipped to the workers" in output
    assert not (tmp_path / "hf_cache").exists()
    loaded = re.search(rf"pretrained: hf-hub:{REPO} from (\S+)", output)
    assert loaded and "shipped-prior-" in loaded.group(1), output[-3000:]
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    child = children[0]
    assert (child.data.params["backbone"], child.data.params["init"]) == (f"hf-hub:{REPO}", "pretrained")
    losses = client.get_metric_history(child.info.run_id, metrics.PRETRAIN_LOSS)
    assert [point.step for point in losses] == [1]
    assert 0.0 <= child.data.metrics[metrics.LINEAR_TEST_ACCURACY] <= 1.0


def test_the_dry_run_says_which_arms_have_their_checkpoints_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch_hub"))
    cache = ssl_catalogue.cache_folder()
    cache.mkdir(parents=True)
    swav = ssl_catalogue.CATALOGUE["swav", "resnet50"]
    simclr = ssl_catalogue.CATALOGUE["simclr", "resnet50"]
    (cache / swav.file_name).write_bytes(b"SwAV publishes no checksum")
    (cache / simclr.file_name).write_bytes(b"not the published file")

    assert main(["ablation_batchsize", "--dry-run"]) == 0
    lines = capsys.readouterr().out.split("weights (on this machine", 1)[1].splitlines()[1:]
    by_method = {line.split()[2]: line for line in lines}
    assert set(by_method) == {"simclr", "swav", "byol"}
    assert "not verified: no published checksum" in by_method["swav"]
    assert by_method["simclr"].split()[3] == "refused:" and "85fcc4de" in by_method["simclr"]
    byol = ssl_catalogue.CATALOGUE["byol", "resnet50"]
    assert "missing:" in by_method["byol"] and byol.url in by_method["byol"]
