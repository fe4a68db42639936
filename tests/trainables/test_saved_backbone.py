"""The backbone as data (safetensors + architecture JSON), and no weights file unpickled: a pickle
planted where weights or a checkpoint are read is refused with one line, and no code in it runs."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from trainables.config import TrialConfig
from trainables.initializations import build_architecture, build_initialized_backbone
from trainables.initializations import load_saved_backbone as load_backbone
from trainables.saved_backbone import (
    ARCHITECTURE_FILE,
    WEIGHTS_FILE,
    BackboneArchitecture,
    save_backbone,
)
from trainables.trial_checkpoint import CHECKPOINT_FILE, load_state


@pytest.mark.parametrize("options", [
    dict(backbone="cbr_nano"),
    dict(backbone="resnet18", cifar_stem=True, norm="groupnorm"),
    dict(backbone="resnetv2_50x1_bit", weight_standardization="drop", norm="batchnorm"),
])
def test_a_saved_backbone_comes_back_with_the_same_forward(tmp_path: Path, options: dict) -> None:
    config = TrialConfig(init="random", seed=3, **options)
    backbone, _, _ = build_initialized_backbone(
        config.backbone, "random", norm=config.norm, weight_standardization=config.weight_standardization,
        cifar_stem=config.cifar_stem, seed=3)
    save_backbone(backbone, BackboneArchitecture.of_trial(config), tmp_path)
    assert json.loads((tmp_path / ARCHITECTURE_FILE).read_text())["backbone"] == config.backbone
    rebuilt = load_backbone(tmp_path)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(images), backbone.eval()(images))
    assert type(rebuilt) is type(backbone)


def test_slim_is_rebuilt_at_half_width(tmp_path: Path) -> None:
    architecture = BackboneArchitecture("cbr_nano", slim=True)
    model = build_architecture(architecture)
    save_backbone(model, architecture, tmp_path)
    assert load_backbone(tmp_path).num_features == 128  # 256 // 2


@pytest.mark.parametrize("text", ['{"backbone": "cbr_nano", "extra": 1}', '{"slim": true}', "[1]", "not json",
                                  '{"backbone": "cbr_nano", "slim": "yes"}'])
def test_a_bad_architecture_file_is_one_line(text: str) -> None:
    with pytest.raises(ValueError) as raised:
        BackboneArchitecture.from_json(text, "backbone.json")
    assert "\n" not in str(raised.value) and "backbone.json" in str(raised.value)


def one_line_refusal(raised: pytest.ExceptionInfo, path: Path) -> None:
    message = str(raised.value)
    assert "\n" not in message and str(path) in message
    assert "refused" in message or "not a safetensors file" in message


@pytest.mark.parametrize("init, backbone, file_name", [
    ("ssl-imagenet", "cbr_nano", "planted.pt"),
    ("imagenet", "resnet18", "planted.pth"),
    ("ssl-imagenet", "cbr_nano", "planted.safetensors"),  # a pickle named as safetensors
])
def test_a_pickle_planted_as_weights_path_is_refused_and_never_runs(pickle_bomb, tmp_path, init, backbone,
                                                                     file_name) -> None:
    plant, marker = pickle_bomb
    path = plant(tmp_path / file_name)
    with pytest.raises(ValueError) as raised:
        build_initialized_backbone(backbone, init, weights_path=str(path))
    one_line_refusal(raised, path)
    assert not marker.exists()


def test_a_pickle_planted_as_a_trial_checkpoint_is_refused_and_never_runs(pickle_bomb, tmp_path) -> None:
    plant, marker = pickle_bomb
    path = plant(tmp_path / "checkpoint" / CHECKPOINT_FILE)
    with pytest.raises(ValueError) as raised:
        load_state(SimpleNamespace(), path.parent)
    one_line_refusal(raised, path)
    assert not marker.exists()


def test_a_pickle_planted_as_the_final_backbone_is_refused_and_never_runs(pickle_bomb, tmp_path) -> None:
    plant, marker = pickle_bomb
    plant(tmp_path / WEIGHTS_FILE)
    (tmp_path / ARCHITECTURE_FILE).write_text(BackboneArchitecture("cbr_nano").to_json())
    with pytest.raises(ValueError) as raised:
        load_backbone(tmp_path)
    one_line_refusal(raised, tmp_path / WEIGHTS_FILE)
    assert not marker.exists()
