"""The driver finds a trial's prior files (downloading what is missing once), ships their bytes,
and the worker starts from those weights with the driver's copies gone (orchestrator.priors,
trainables.shipped_priors). Downloads come from a hub server the test runs on localhost."""

import dataclasses
import hashlib
import http.server
import pickle
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import constants as hub_constants
from safetensors.torch import save_file
from timm.models import save_for_hf

from orchestrator.priors import prior_files, resolve_priors
from trainables.config import TrialConfig
from trainables.initializations import build_initialized_backbone
from trainables.shipped_priors import PriorKey, local_prior_file
from trainables.training import build_trial_backbone


def write_cbr_nano_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The CBR networks have no public ImageNet weights: a user's own file, as weights_dir holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    state_dict = build_initialized_backbone("cbr_nano", "random", seed=5)[0].state_dict()
    torch.save(state_dict, folder / "cbr_nano.in1k.pth")
    return state_dict


def assert_same_weights(backbone: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    loaded = backbone.state_dict()
    assert expected.keys() <= loaded.keys()
    assert all(torch.equal(loaded[name], tensor) for name, tensor in expected.items())


def test_a_weights_dir_prior_loads_on_the_worker_after_the_drivers_folder_is_gone(tmp_path: Path) -> None:
    expected = write_cbr_nano_weights(tmp_path / "weights")
    config = TrialConfig(init="imagenet", backbone="cbr_nano", weights_dir=str(tmp_path / "weights"), seed=1)
    other_seed = dataclasses.replace(config, seed=2)
    priors = resolve_priors([config, other_seed])
    assert list(priors) == [PriorKey.of(config)]  # one copy for both trials
    shipped = pickle.loads(pickle.dumps(priors[PriorKey.of(config)]))  # as Ray's object store carries it
    shutil.rmtree(tmp_path / "weights")

    with local_prior_file(config, shipped) as local:
        assert local.weights_dir != config.weights_dir
        backbone, _, report = build_trial_backbone(local)
    assert "cbr_nano.in1k" in report and "shipped-prior-" in report
    assert_same_weights(backbone, expected)
    assert not Path(local.weights_dir).exists()  # removed with the block


def test_a_weights_path_file_ships_under_its_own_name(tmp_path: Path) -> None:
    expected = write_cbr_nano_weights(tmp_path / "mine")
    weights_path = tmp_path / "mine" / "cbr_nano.in1k.pth"
    config = TrialConfig(init="imagenet", backbone="cbr_nano", weights_path=str(weights_path))
    assert prior_files(config) == [("weights_path", "cbr_nano.in1k.pth", weights_path)]
    shipped = resolve_priors([config])[PriorKey.of(config)]
    weights_path.unlink()
    with local_prior_file(config, shipped) as local:
        assert Path(local.weights_path).name == "cbr_nano.in1k.pth"
        backbone, _, _ = build_trial_backbone(local)
    assert_same_weights(backbone, expected)


def test_nothing_is_shipped_for_random_init_or_a_file_the_driver_lacks(tmp_path: Path) -> None:
    random = TrialConfig(init="random")
    missing = TrialConfig(init="imagenet", backbone="cbr_nano", weights_dir=str(tmp_path / "empty"))
    assert resolve_priors([random, missing]) == {}
    with local_prior_file(random, None) as local:
        assert local is random


class FakeHub(http.server.ThreadingHTTPServer):
    """The Hugging Face hub's file endpoint (`/ORG/NAME/resolve/main/FILE`), serving `files`
    {(repo_id, file name): bytes} and counting the downloads (GETs) of each."""

    def __init__(self, files: dict[tuple[str, str], bytes]) -> None:
        self.files, self.downloads = files, dict.fromkeys(files, 0)
        super().__init__(("127.0.0.1", 0), FakeHubHandler)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FakeHubHandler(http.server.BaseHTTPRequestHandler):
    server: FakeHub

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's name)
        self.answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self.answer(body=True)

    def answer(self, body: bool) -> None:
        org, name, _, _, file_name = self.path.lstrip("/").split("/", 4)
        data = self.server.files.get((f"{org}/{name}", file_name))
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", "c0" * 20)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.server.downloads[f"{org}/{name}", file_name] += 1
            self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """An empty hub cache and torch hub folder, and a hub server on localhost to fill `files` of."""
    hub = FakeHub({})
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(hub_constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch_hub"))
    yield hub
    hub.shutdown()


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Weights no initialization gives: loading them is the only way to have them."""
    torch.manual_seed(0)
    with torch.no_grad():
        for tensor in model.parameters():
            tensor.add_(torch.randn_like(tensor) * 0.05)
    return model


def serve_hub_model(hub: FakeHub, repo_id: str, folder: Path) -> dict[str, torch.Tensor]:
    """timm's test_resnet (372k parameters), perturbed, as `save_for_hf` publishes it on the hub."""
    model = perturbed(timm.create_model("test_resnet", num_classes=0))
    save_for_hf(model, str(folder), safe_serialization=True)
    for file_name in ("config.json", "model.safetensors"):
        hub.files[repo_id, file_name] = (folder / file_name).read_bytes()
        hub.downloads[repo_id, file_name] = 0
    return model.state_dict()


def built_offline(config: TrialConfig, shipped: object, monkeypatch: pytest.MonkeyPatch) -> torch.nn.Module:
    """The worker's side: no network (HF_HUB_OFFLINE), only the shipped bytes."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with local_prior_file(config, pickle.loads(pickle.dumps(shipped))) as local:
        return build_trial_backbone(local)[0]


def test_an_hf_hub_prior_missing_here_is_downloaded_once_by_the_driver_and_shipped(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo_id = "testorg/tiny-resnet"
    expected = serve_hub_model(fake_hub, repo_id, tmp_path / "published")
    config = TrialConfig(init="pretrained", backbone=f"hf-hub:{repo_id}", seed=1)
    priors = resolve_priors([config, dataclasses.replace(config, seed=2)])
    assert list(priors) == [PriorKey.of(config)]
    shipped = priors[PriorKey.of(config)]
    assert sorted(file.name for file in shipped.files) == [
        "testorg--tiny-resnet/config.json", "testorg--tiny-resnet/model.safetensors"]
    assert set(fake_hub.downloads.values()) == {1}  # each file fetched once, by the driver
    fake_hub.shutdown()
    shutil.rmtree(tmp_path / "hf_cache")  # nothing left on "the worker" but what was shipped
    assert_same_weights(built_offline(config, shipped, monkeypatch), expected)


def test_an_hf_hub_architecture_ships_its_config_even_at_random_init(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo_id = "testorg/tiny-resnet"
    expected = serve_hub_model(fake_hub, repo_id, tmp_path / "published")
    config = TrialConfig(init="random", backbone=f"hf-hub:{repo_id}")
    shipped = resolve_priors([config])[PriorKey.of(config)]
    assert [file.name for file in shipped.files] == ["testorg--tiny-resnet/config.json"]
    assert fake_hub.downloads[repo_id, "model.safetensors"] == 0  # random init needs no weights
    shutil.rmtree(tmp_path / "hf_cache")
    backbone = built_offline(config, shipped, monkeypatch)
    assert backbone.state_dict().keys() == expected.keys()  # the published architecture
    first_conv = next(name for name, tensor in expected.items() if tensor.ndim == 4)
    assert not torch.equal(backbone.state_dict()[first_conv], expected[first_conv])  # not the weights


def test_a_timm_tag_in_weights_dir_ships_under_its_tag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = perturbed(timm.create_model("test_resnet", num_classes=0))
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    save_file(model.state_dict(), weights_dir / "test_resnet.r160_in1k.safetensors")
    config = TrialConfig(init="pretrained", backbone="timm:test_resnet.r160_in1k",
                         weights_dir=str(weights_dir))
    shipped = resolve_priors([config])[PriorKey.of(config)]
    assert [file.name for file in shipped.files] == ["test_resnet.r160_in1k.safetensors"]
    shutil.rmtree(weights_dir)
    assert_same_weights(built_offline(config, shipped, monkeypatch), model.state_dict())


def test_supervised_weights_missing_here_are_downloaded_by_the_driver_once(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """imagenet on resnet18 is timm's resnet18.tv_in1k: the worker gets the driver's download."""
    state_dict = perturbed(timm.create_model("resnet18", num_classes=0)).state_dict()
    save_file(state_dict, tmp_path / "model.safetensors")
    published = "timm/resnet18.tv_in1k", "model.safetensors"
    fake_hub.files[published] = (tmp_path / "model.safetensors").read_bytes()
    fake_hub.downloads[published] = 0
    configs = [TrialConfig(init=init, backbone="resnet18", seed=seed)
               for init in ("imagenet", "meanvar") for seed in (1, 2)]
    priors = resolve_priors(configs)
    assert len(priors) == 2  # one per init; both read the one download
    assert fake_hub.downloads[published] == 1
    shipped = priors[PriorKey.of(configs[0])]
    assert [file.name for file in shipped.files] == ["resnet18.tv_in1k.safetensors"]
    fake_hub.shutdown()
    shutil.rmtree(tmp_path / "hf_cache")
    assert_same_weights(built_offline(configs[0], shipped, monkeypatch), state_dict)


def test_offline_the_driver_asks_no_hub_and_leaves_a_missing_prior_to_the_worker(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    serve_hub_model(fake_hub, "testorg/tiny-resnet", tmp_path / "published")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    configs = [TrialConfig(init="pretrained", backbone="hf-hub:testorg/tiny-resnet"),
               TrialConfig(init="imagenet", backbone="resnet18")]
    assert resolve_priors(configs) == {}
    assert set(fake_hub.downloads.values()) == {0}
    assert "shipped" not in capsys.readouterr().out
