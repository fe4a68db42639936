"""`timm:` and `hf-hub:` backbones: built by timm, their weights read from the places a user puts
them (the Hugging Face cache in its own layout, a weights_dir folder), offline, exactly.

Nothing touches the network: HF_HUB_OFFLINE=1 and the caches point at folders the tests fill.
The "published" models are tiny timm test models with every tensor perturbed and a 10-class
classifier, saved the way the hub holds them (timm's save_for_hf: config.json + model.safetensors).
"""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
from timm.models import save_for_hf
from torch import nn

from tests.trainables.published_weights import published_stand_in
from trainables.config import ConfigError, TrialConfig
from trainables.initializations import build_initialized_backbone
from trainables.initializations.availability import weights_availability
from trainables.methods import PRETRAINING_METHODS, build_method, method_parameters
from trainables.missing_weights import MissingWeightsError

REPO = "testorg/tiny-resnet"


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty Hugging Face cache and torch hub folder, offline; yields the hub cache."""
    import huggingface_hub.constants

    cache = tmp_path / "hf_cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch_hub"))
    yield cache


def published_model(architecture: str = "test_resnet", seed: int = 5) -> nn.Module:
    return published_stand_in(lambda: timm.create_model(architecture, num_classes=10), seed)


def save_in_hub_cache(model: nn.Module, cache: Path, repo_id: str,
                      files: tuple[str, ...] | None = None) -> Path:
    """The hub cache's layout: models--ORG--NAME/refs/main names a snapshot folder holding the files."""
    repo_folder = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_folder / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    save_for_hf(model, str(snapshot), safe_serialization=True)
    for path in list(snapshot.iterdir()):
        if files is not None and path.name not in files:
            path.unlink()
    (repo_folder / "refs").mkdir()
    (repo_folder / "refs" / "main").write_text(snapshot.name)
    return snapshot


def without_classifier(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value for key, value in model.state_dict().items() if not key.startswith("fc.")}


def assert_same_tensors(model: nn.Module, reference: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert set(state) == set(reference)
    for key, value in reference.items():
        assert torch.equal(state[key], value), key


def test_an_hf_hub_model_in_the_hub_cache_loads_offline_exactly(offline: Path) -> None:
    published = published_model()
    snapshot = save_in_hub_cache(published, offline, REPO)
    model, feature_dim, report = build_initialized_backbone(f"hf-hub:{REPO}", "pretrained")
    assert_same_tensors(model, without_classifier(published))
    assert feature_dim == published.num_features and str(snapshot) in report
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, feature_dim)


def test_an_hf_hub_model_in_a_weights_dir_folder_loads_and_takes_the_surgeries(tmp_path: Path) -> None:
    published = published_model(seed=6)
    save_for_hf(published, str(tmp_path / "weights" / "testorg--tiny-resnet"), safe_serialization=True)
    model, _, report = build_initialized_backbone(
        f"hf-hub:{REPO}", "pretrained", weights_dir=str(tmp_path / "weights"),
        norm="groupnorm", dead_filters="copy")
    assert "norm=groupnorm" in report and "dead_filters=copy" in report
    assert not any(isinstance(module, nn.BatchNorm2d) for module in model.modules())
    convs = {name: value for name, value in without_classifier(published).items()
             if name.endswith("weight") and value.ndim == 4}
    state = model.state_dict()
    # Only the norms were replaced: every conv weight is the published one.
    assert convs and all(torch.equal(state[name], value) for name, value in convs.items())


def test_a_timm_tag_in_the_hub_cache_loads_offline_exactly(offline: Path) -> None:
    published = published_model()
    save_in_hub_cache(published, offline, "timm/test_resnet.r160_in1k", files=("model.safetensors",))
    model, _, report = build_initialized_backbone("timm:test_resnet.r160_in1k", "pretrained")
    assert_same_tensors(model, without_classifier(published))
    assert "model.safetensors" in report


@pytest.mark.parametrize(("backbone", "names"), [
    (f"hf-hub:{REPO}",
     ["config.json", "model.safetensors", "testorg--tiny-resnet", "models--testorg--tiny-resnet"]),
    ("timm:test_resnet.r160_in1k", ["test_resnet.r160_in1k.safetensors", "timm/test_resnet.r160_in1k"]),
])
def test_missing_hub_weights_offline_are_one_line_naming_the_files_and_where_to_put_them(
    tmp_path: Path, backbone: str, names: list[str]
) -> None:
    with pytest.raises(MissingWeightsError) as raised:
        build_initialized_backbone(backbone, "pretrained", weights_dir=str(tmp_path / "weights"))
    message = str(raised.value)
    assert "\n" not in message and "HF_HUB_OFFLINE" in message and str(tmp_path / "weights") in message
    assert all(name in message for name in names), message


def test_an_hf_hub_architecture_needs_its_config_even_at_random_init(offline: Path) -> None:
    with pytest.raises(MissingWeightsError, match="config.json"):
        build_initialized_backbone(f"hf-hub:{REPO}", "random")
    save_in_hub_cache(published_model(), offline, REPO, files=("config.json",))  # no weights needed
    model, feature_dim, _ = build_initialized_backbone(f"hf-hub:{REPO}", "random")
    assert feature_dim == model.num_features


@pytest.mark.parametrize("method_name", PRETRAINING_METHODS)
def test_every_method_trains_on_a_timm_backbone_whose_features_are_its_pre_logits(method_name: str) -> None:
    # MobileNetV3 pools into a 1024-wide pre-logits layer: its features are not num_features (288).
    backbone, feature_dim, _ = build_initialized_backbone("timm:mobilenetv3_small_050", "random")
    assert (feature_dim, backbone.num_features) == (1024, 288)
    small = {name: 32 for name, default in method_parameters(method_name).items()
             if name.endswith("_dim") and isinstance(default, int)}
    method = build_method(method_name, backbone, feature_dim, small)
    output = method([torch.randn(4, 3, spec.size, spec.size) for spec in method.views(32)])
    output.loss.backward()
    assert torch.isfinite(output.loss)
    assert all(parameter.grad is not None for parameter in backbone.parameters() if parameter.requires_grad)


def test_a_vision_transformer_takes_the_trials_image_size() -> None:
    # Built at 224 px; timm refuses other sizes unless the position embeddings are dynamic.
    backbone, feature_dim, _ = build_initialized_backbone("timm:vit_tiny_patch16_224", "random")
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, feature_dim)


@pytest.mark.parametrize(("values", "words"), [
    ({"backbone": "timm:no_such_model"}, ["timm", "no_such_model"]),
    ({"backbone": "hf-hub:no-org"}, ["hf-hub:ORG/NAME"]),
    ({"backbone": "resnet18", "init": "pretrained"}, ["pretrained", "imagenet"]),
    ({"backbone": "timm:resnet18", "init": "imagenet"}, ["imagenet", "pretrained"]),
    ({"backbone": "timm:resnet18", "init": "transfusion-2"}, ["transfusion-2", "registered"]),
    ({"backbone": "timm:resnet18", "cifar_stem": True}, ["cifar_stem"]),
])
def test_hub_backbones_are_checked_with_the_config(values: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as raised:
        TrialConfig.from_dict(values)
    assert all(word in str(raised.value) for word in words), raised.value


def test_hub_names_are_valid_backbones_and_listed_in_the_errors() -> None:
    config = TrialConfig.from_dict({"backbone": f"hf-hub:{REPO}", "init": "pretrained"})
    assert config.backbone == f"hf-hub:{REPO}"
    with pytest.raises(ConfigError) as raised:
        TrialConfig.from_dict({"backbone": "typo"})
    assert re.search(r"timm:NAME.*hf-hub:ORG/NAME", str(raised.value))


def test_availability_says_whether_the_hub_weights_are_here(offline: Path) -> None:
    assert "not on this machine" in weights_availability("pretrained", f"hf-hub:{REPO}", "simclr", None, None)
    snapshot = save_in_hub_cache(published_model(), offline, REPO)
    assert weights_availability("pretrained", f"hf-hub:{REPO}", "simclr", None, None) == \
        f"on disk: {snapshot}"
