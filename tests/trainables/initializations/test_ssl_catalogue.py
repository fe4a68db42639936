"""The catalogue of published ImageNet SSL checkpoints: every row is well-formed, every publisher's
key layout maps onto the backbone exactly, and a file in the cache is found, checked against its
checksum, and refused when the checksum differs.

The checkpoint files are written by the tests, with random weights under the key names each
publisher's own code writes (a ResNet-18 stands in for the ResNet-50: the names are the same).
Nothing touches the network: HF_HUB_OFFLINE=1 and torch's hub folder is a fresh folder.
"""

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from trainables.backbones import build_backbone
from trainables.initializations import build_initialized_backbone
from trainables.initializations import ssl_catalogue as catalogue
from trainables.initializations.availability import weights_availability
from trainables.methods import PRETRAINING_METHODS
from trainables.missing_weights import MissingWeightsError


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch_hub"))
    return tmp_path / "torch_hub" / "checkpoints"


def random_backbone(seed: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_backbone("resnet18")[0]
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor))  # BatchNorm statistics too: nothing left at default
    return model.state_dict()


EMPTY_OPTIMIZER = {"state": {}, "param_groups": []}


# How each publisher writes its file, from its own code (the comments in ssl_catalogue.py say where).
def moco(backbone: dict) -> dict:
    state = {f"module.encoder_q.{key}": value for key, value in backbone.items()}
    state |= {f"module.encoder_k.{key}": value + 1 for key, value in backbone.items()}
    state |= {"module.encoder_q.fc.0.weight": torch.randn(16, 512),
              "module.encoder_q.fc.2.weight": torch.randn(8, 16),
              "module.queue": torch.randn(8, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    return {"epoch": 800, "arch": "resnet50", "state_dict": state, "optimizer": EMPTY_OPTIMIZER}


def simsiam(backbone: dict) -> dict:
    state = {f"module.encoder.{key}": value for key, value in backbone.items()}
    state |= {"module.encoder.fc.0.weight": torch.randn(16, 512),
              "module.encoder.fc.1.running_mean": torch.randn(16),
              "module.predictor.0.weight": torch.randn(4, 16), "module.predictor.3.bias": torch.randn(16)}
    return {"epoch": 100, "arch": "resnet50", "state_dict": state, "optimizer": EMPTY_OPTIMIZER}


def swav(backbone: dict) -> dict:
    state = {f"module.{key}": value for key, value in backbone.items()}
    return state | {"module.projection_head.0.weight": torch.randn(16, 512),
                    "module.projection_head.1.running_var": torch.rand(16),
                    "module.prototypes.weight": torch.randn(30, 8)}


def backbone_only(backbone: dict) -> dict:
    return dict(backbone)


def openmmlab(backbone: dict) -> dict:
    state = {f"backbone.{key}": value for key, value in backbone.items()}
    state |= {"neck.mlp.0.weight": torch.randn(16, 512), "head.predictor.mlp.0.weight": torch.randn(8, 16),
              "target_net.module.0.conv1.weight": backbone["conv1.weight"] + 1,
              "target_net.module.1.mlp.0.weight": torch.randn(16, 512), "target_net.steps": torch.tensor(5)}
    return {"meta": {"mmengine_version": "0.8.0", "epoch": 200}, "state_dict": state}


WRITERS: dict[str, Callable[[dict], dict]] = {"mocov2": moco, "simsiam": simsiam, "swav": swav,
                                              "barlowtwins": backbone_only, "vicreg": backbone_only,
                                              "simclr": openmmlab, "byol": openmmlab}


def test_every_pretraining_method_has_a_row_or_is_named_here() -> None:
    assert {method for method, _ in catalogue.CATALOGUE} == set(PRETRAINING_METHODS) == set(WRITERS)


@pytest.mark.parametrize("entry", catalogue.CATALOGUE.values(), ids=lambda entry: entry.method)
def test_each_row_is_well_formed(entry: catalogue.CataloguedCheckpoint) -> None:
    assert entry.url.startswith("https://") and entry.file_name.endswith((".pth", ".pth.tar"))
    if entry.checksum is not None:
        assert entry.checksum.algorithm in ("sha256", "md5")
        assert re.fullmatch(r"[0-9a-f]{8,64}", entry.checksum.published)
    if "openmmlab" in entry.url:  # the publisher puts the first 8 hex digits of the sha256 in the name
        published = entry.url.rsplit("-", 1)[1].removesuffix(".pth")
        assert entry.checksum == catalogue.Checksum("sha256", published)
    assert "no published checksum" in entry.describe_checksum() or entry.checksum is not None


def test_file_names_in_the_cache_are_unique() -> None:
    names = [entry.file_name for entry in catalogue.CATALOGUE.values()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("entry", catalogue.CATALOGUE.values(), ids=lambda entry: entry.method)
def test_each_publishers_layout_loads_every_backbone_tensor_exactly(
    tmp_path: Path, entry: catalogue.CataloguedCheckpoint
) -> None:
    reference = random_backbone()
    path = tmp_path / entry.file_name
    torch.save(WRITERS[entry.method](reference), path)
    model = build_backbone("resnet18")[0]
    report = catalogue.load_catalogued_checkpoint(model, entry, path, "checked")
    state = model.state_dict()
    for key, value in reference.items():
        if not key.startswith("fc."):  # the publishers' files hold no classifier
            assert torch.equal(state[key], value), key
    assert f"loaded all {len([k for k in reference if not k.startswith('fc.')])} backbone tensors" in report


def test_a_file_that_does_not_fit_the_backbone_is_refused(tmp_path: Path) -> None:
    entry = catalogue.CATALOGUE["swav", "resnet50"]
    state = random_backbone()
    del state["layer4.1.bn2.weight"]
    torch.save(swav(state), tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"1 missing keys \['layer4.1.bn2.weight'\]"):
        catalogue.load_catalogued_checkpoint(build_backbone("resnet18")[0], entry, tmp_path / "partial.pth",
                                             "checked")


def entry_for(file: Path, algorithm: str, digits: int) -> catalogue.CataloguedCheckpoint:
    """A row for (simclr, cbr_nano) whose checksum is `file`'s, as a publisher would print it."""
    digest = hashlib.new(algorithm, file.read_bytes()).hexdigest()[:digits]
    return catalogue.CataloguedCheckpoint(
        "simclr", "cbr_nano", f"https://example.invalid/ssl/{file.name}", file.name,
        catalogue.Checksum(algorithm, digest), catalogue.OPENMMLAB, "a test publisher")


@pytest.fixture
def placed(cache: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[catalogue.CataloguedCheckpoint, dict]:
    """A catalogued checkpoint for cbr_nano, placed in the cache by hand (as one would offline)."""
    torch.manual_seed(11)
    reference = build_backbone("cbr_nano")[0].state_dict()
    reference = {key: value + torch.randn_like(value) if value.is_floating_point() else value
                 for key, value in reference.items()}
    cache.mkdir(parents=True)
    state = {f"backbone.{key}": value for key, value in reference.items()}
    state["neck.0.weight"] = torch.randn(4, 4)
    torch.save({"meta": {"epoch": 800}, "state_dict": state}, cache / "simclr_cbr_nano_test-0.pth")
    entry = entry_for(cache / "simclr_cbr_nano_test-0.pth", "sha256", 8)
    monkeypatch.setitem(catalogue.CATALOGUE, ("simclr", "cbr_nano"), entry)
    return entry, reference


def test_a_catalogued_checkpoint_in_the_cache_is_found_verified_and_loaded(placed) -> None:
    entry, reference = placed
    model, _, report = build_initialized_backbone("cbr_nano", "ssl-imagenet", method="simclr")
    assert all(torch.equal(model.state_dict()[key], value) for key, value in reference.items())
    assert (f"verified (sha256 digest prefix {entry.checksum.published}, as published; a corruption check "
            "only)") in report
    assert weights_availability("ssl-imagenet", "cbr_nano", "simclr", None, None).startswith("verified")


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_a_wrong_checksum_is_refused_with_one_line(
    placed, monkeypatch: pytest.MonkeyPatch, algorithm: str
) -> None:
    entry, _ = placed
    right = entry_for(catalogue.cache_folder() / entry.file_name, algorithm, 8).checksum.published
    wrong = f"{(int(right[0], 16) + 1) % 16:x}{right[1:]}"
    monkeypatch.setitem(catalogue.CATALOGUE, ("simclr", "cbr_nano"),
                        replace(entry, checksum=catalogue.Checksum(algorithm, wrong)))
    with pytest.raises(catalogue.WeightsChecksumError) as raised:
        build_initialized_backbone("cbr_nano", "ssl-imagenet", method="simclr")
    message = str(raised.value)
    assert "\n" not in message and isinstance(raised.value, MissingWeightsError)
    assert entry.file_name in message and f"published {wrong}" in message and entry.url in message
    assert weights_availability("ssl-imagenet", "cbr_nano", "simclr", None, None).startswith("refused")


def test_a_missing_checkpoint_offline_names_the_file_the_url_and_where_to_put_it(
    placed, cache: Path, tmp_path: Path
) -> None:
    entry, _ = placed
    os.remove(cache / entry.file_name)
    with pytest.raises(MissingWeightsError) as raised:
        build_initialized_backbone("cbr_nano", "ssl-imagenet", method="simclr",
                                   weights_dir=str(tmp_path / "w"))
    message = str(raised.value)
    assert "\n" not in message and entry.url in message
    assert str(cache / entry.file_name) in message and str(tmp_path / "w" / entry.file_name) in message
    assert weights_availability("ssl-imagenet", "cbr_nano", "simclr", None, None).startswith("missing")


def test_weights_dir_wins_over_the_cache(placed, cache: Path, tmp_path: Path) -> None:
    entry, _ = placed
    (tmp_path / "w").mkdir()
    os.replace(cache / entry.file_name, tmp_path / "w" / entry.file_name)
    _, _, report = build_initialized_backbone("cbr_nano", "ssl-imagenet", method="simclr",
                                              weights_dir=str(tmp_path / "w"))
    assert str(tmp_path / "w" / entry.file_name) in report


def test_a_method_without_a_row_is_told_to_set_weights_path() -> None:
    with pytest.raises(MissingWeightsError, match="weights_path") as raised:
        build_initialized_backbone("resnet18", "ssl-imagenet", method="simclr")
    assert "simclr/resnet50" in str(raised.value)


def test_a_whole_published_digest_is_checked_in_full(placed, monkeypatch: pytest.MonkeyPatch) -> None:
    entry, _ = placed
    whole = entry_for(catalogue.cache_folder() / entry.file_name, "sha256", 64)
    monkeypatch.setitem(catalogue.CATALOGUE, ("simclr", "cbr_nano"), whole)
    _, _, report = build_initialized_backbone("cbr_nano", "ssl-imagenet", method="simclr")
    assert f"verified (sha256 digest {whole.checksum.published})" in report
    # One digit off at the end, which a prefix check would never look at: refused.
    last = whole.checksum.published[-1]
    wrong = whole.checksum.published[:-1] + ("0" if last != "0" else "1")
    monkeypatch.setitem(catalogue.CATALOGUE, ("simclr", "cbr_nano"),
                        replace(whole, checksum=catalogue.Checksum("sha256", wrong)))
    with pytest.raises(catalogue.WeightsChecksumError):
        build_initialized_backbone("cbr_nano", "ssl-imagenet", method="simclr")


def test_a_planted_pickle_whose_checksum_prefix_matches_is_still_never_unpickled(
    placed, pickle_bomb, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry, _ = placed
    plant, marker = pickle_bomb
    path = plant(catalogue.cache_folder() / entry.file_name)  # over the placed file
    forged = entry_for(path, "sha256", 8)  # the prefix matches, as a forger would arrange
    monkeypatch.setitem(catalogue.CATALOGUE, ("simclr", "cbr_nano"), forged)
    with pytest.raises(ValueError) as raised:
        build_initialized_backbone("cbr_nano", "ssl-imagenet", method="simclr")
    assert "\n" not in str(raised.value) and "never unpickled" in str(raised.value)
    assert not marker.exists()
