"""Initializations: every init loads exactly the tensors it should, from files these tests write.

Nothing touches the network: HF_HUB_OFFLINE=1, and the hub and torch caches point at empty
folders. "Pretrained" weights are randomly initialized models with every tensor perturbed, so
that they differ from any default initialization and their BatchNorm statistics are not trivial.
"""

import copy
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from timm.layers import StdConv2d
from torch import nn

from tests.trainables.published_weights import published_stand_in
from trainables.backbones import BACKBONES
from trainables.initializations import (
    DEAD_FILTERS,
    INITIALIZATIONS,
    NORMS,
    WEIGHT_SCALINGS,
    WEIGHT_STANDARDIZATIONS,
    build_initialized_backbone,
    check_combination,
    surgery,
)
from trainables.initializations.pretrained import supervised_weights
from trainables.initializations.ssl_checkpoint import clean_ssl_state_dict
from trainables.missing_weights import MissingWeightsError

BIT = "resnetv2_50x1_bit"
SMALL = ("cbr_nano", "cbr_small", "cbr_tiny", "resnet18")


@pytest.fixture(scope="module", autouse=True)
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf_cache")))
        patch.setattr(torch.hub, "_hub_dir", str(tmp_path_factory.mktemp("torch_hub")))
        yield


def make_pretrained(backbone: str, seed: int = 1234) -> nn.Module:
    """A stand-in for published weights: a model with a classifier and every tensor perturbed."""
    spec = BACKBONES[backbone]

    def build() -> nn.Module:
        return timm.create_model(spec.timm_name, num_classes=10) if spec.timm_name else spec.build(False)
    return published_stand_in(build, seed)


def backbone_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    classifier = {"fc", "head"}
    return {key: value for key, value in model.state_dict().items() if key.split(".")[0] not in classifier}


def write_bit_npz(model: nn.Module, path: Path) -> None:
    """Write `model` in Big Transfer's published .npz layout: timm's resnetv2 `_load_weights` inverted."""
    def hwio(tensor: torch.Tensor) -> np.ndarray:
        array = tensor.detach().numpy()
        return array.transpose(2, 3, 1, 0) if array.ndim == 4 else array

    arrays = {"resnet/root_block/standardized_conv2d/kernel": hwio(model.stem.conv.weight),
              "resnet/group_norm/gamma": hwio(model.norm.weight),
              "resnet/group_norm/beta": hwio(model.norm.bias),
              "resnet/head/conv2d/kernel": hwio(model.head.fc.weight),
              "resnet/head/conv2d/bias": hwio(model.head.fc.bias)}
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage.blocks):
            prefix = f"resnet/block{i + 1}/unit{j + 1:02d}/"
            for letter, index in (("a", 1), ("b", 2), ("c", 3)):
                conv, norm = getattr(block, f"conv{index}"), getattr(block, f"norm{index}")
                arrays[f"{prefix}{letter}/standardized_conv2d/kernel"] = hwio(conv.weight)
                arrays[f"{prefix}{letter}/group_norm/gamma"] = hwio(norm.weight)
                arrays[f"{prefix}{letter}/group_norm/beta"] = hwio(norm.bias)
            if block.downsample is not None:
                arrays[f"{prefix}a/proj/standardized_conv2d/kernel"] = hwio(block.downsample.conv.weight)
    np.savez(path, **arrays)


def write_ssl_checkpoint(model: nn.Module, path: Path) -> None:
    """A MoCo-v2-like checkpoint: DDP and encoder_q prefixes, an MLP head, a momentum encoder, a queue."""
    state = {f"module.encoder_q.{key}": value for key, value in backbone_tensors(model).items()}
    state["module.encoder_q.fc.0.weight"] = torch.randn(16, 8)
    state["module.encoder_q.fc.2.weight"] = torch.randn(8, 16)
    state["module.encoder_k.conv_stem.weight"] = torch.randn(4)
    state["module.queue"] = torch.randn(8, 32)
    torch.save({"epoch": 200, "arch": "x", "state_dict": state}, path)


class WeightFiles:
    """Writes each weight file once, when first needed, under the name the code looks for."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pretrained: dict[str, dict[str, torch.Tensor]] = {}  # by backbone, and "bit-m"
        self.ssl_checkpoints: set[str] = set()
        self.models: dict[tuple[str, str], tuple[nn.Module, int, str]] = {}

    def for_backbone(self, backbone: str) -> dict[str, torch.Tensor]:
        """The backbone's supervised ("imagenet") weights; for BiT these are BiT-S, in BiT's .npz."""
        if backbone not in self.pretrained:
            model = make_pretrained(backbone)
            name = supervised_weights("imagenet", backbone).name
            if backbone == BIT:
                write_bit_npz(model, self.directory / f"{name}.npz")
            elif backbone == "resnet50":
                safetensors.torch.save_file(model.state_dict(), self.directory / f"{name}.safetensors")
            else:
                torch.save({"state_dict": model.state_dict()}, self.directory / f"{name}.pth")
            self.pretrained[backbone] = backbone_tensors(model)
        return self.pretrained[backbone]

    def bit_m(self) -> dict[str, torch.Tensor]:
        """BiT-M as the Hugging Face hub holds it: a timm state dict in safetensors."""
        if "bit-m" not in self.pretrained:
            model = make_pretrained(BIT, seed=99)
            safetensors.torch.save_file(model.state_dict(), self.directory / f"{BIT}.goog_in21k.safetensors")
            self.pretrained["bit-m"] = backbone_tensors(model)
        return self.pretrained["bit-m"]

    def reference(self, backbone: str, init: str) -> dict[str, torch.Tensor]:
        return self.bit_m() if init == "bit-m" else self.for_backbone(backbone)

    def build(self, backbone: str, init: str, **options) -> tuple[nn.Module, int, str]:
        path = None
        if init == "ssl-imagenet":
            path = self.directory / f"{backbone}.ssl.pth"
            if backbone not in self.ssl_checkpoints:
                write_ssl_checkpoint(make_pretrained(backbone), path)
                self.ssl_checkpoints.add(backbone)
        elif init != "random":
            self.reference(backbone, init)
        return build_initialized_backbone(backbone, init, weights_dir=str(self.directory),
                                          weights_path=path and str(path), **options)

    def model(self, backbone: str, init: str) -> tuple[nn.Module, int, str]:
        """Built once per module with default options: deep-copy it before changing or training it."""
        if (backbone, init) not in self.models:
            self.models[backbone, init] = self.build(backbone, init)
        return self.models[backbone, init]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> WeightFiles:
    return WeightFiles(tmp_path_factory.mktemp("weights"))


def assert_identical(
    model: nn.Module, reference: dict[str, torch.Tensor], keys: list[str] | None = None
) -> None:
    state = model.state_dict()
    for key in keys if keys is not None else reference:
        assert torch.equal(state[key], reference[key]), key


def assert_trains(model: nn.Module, feature_dim: int, sizes: tuple[int, ...]) -> None:
    model = copy.deepcopy(model)  # training mode updates BatchNorm statistics
    for size in sizes:
        features = model(torch.randn(2, 3, size, size))
        assert features.shape == (2, feature_dim)
        features.square().mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# ---- registry-driven -------------------------------------------------------------------------
# Every init on two small backbones, a CBR network (at 32 and 96 px) and a resnet (at 32 px);
# every backbone with each of its supervised weights at 32 px; imagenet on BiT is bit-s. Random
# init of every backbone at 32 and 96 px is in test_backbones. The transfer inits on resnet50 and
# BiT are covered by the block-level tests below rather than by this grid: each build of those
# costs seconds on a busy CPU.

# Inits of timm:/hf-hub: backbones only are in test_hub_backbones.
@pytest.mark.parametrize("init", [init for init, spec in INITIALIZATIONS.items()
                                  if not spec.needs_bit and spec.backbones != "hub"])
@pytest.mark.parametrize("backbone", ["cbr_nano", "resnet18"])
def test_every_init_builds_from_local_files_and_trains(
    weights: WeightFiles, backbone: str, init: str
) -> None:
    model, feature_dim, report = weights.model(backbone, init)
    assert f"({feature_dim} features)" in report and init.split("-")[0] in report
    assert_trains(model, feature_dim, (32, 96) if backbone.startswith("cbr") else (32,))


SUPERVISED = [(backbone, "imagenet") for backbone in BACKBONES if backbone != BIT]
SUPERVISED += [(BIT, "bit-s"), (BIT, "bit-m")]


@pytest.mark.parametrize(("backbone", "init"), SUPERVISED)
def test_supervised_weights_load_every_tensor_bit_for_bit(
    weights: WeightFiles, backbone: str, init: str
) -> None:
    reference = weights.reference(backbone, init)
    model, feature_dim, report = weights.model(backbone, init)
    assert set(model.state_dict()) == set(reference)
    assert_identical(model, reference)
    assert ".npz" in report if backbone == BIT and init != "bit-m" else "exactly" in report
    assert_trains(model, feature_dim, (32,))


@pytest.mark.parametrize("init", [init for init in INITIALIZATIONS if INITIALIZATIONS[init].needs_bit])
@pytest.mark.parametrize("backbone", sorted(set(BACKBONES) - {BIT}))
def test_bit_weights_on_another_backbone_are_refused(backbone: str, init: str) -> None:
    with pytest.raises(ValueError, match=f"{init}.*{BIT}"):
        build_initialized_backbone(backbone, init)


@pytest.mark.parametrize(("axis", "valid"), [
    ("init", INITIALIZATIONS), ("norm", NORMS), ("weight_standardization", WEIGHT_STANDARDIZATIONS),
    ("weight_scaling", WEIGHT_SCALINGS), ("dead_filters", DEAD_FILTERS),
])
def test_unknown_values_name_the_axis_and_the_valid_ones(axis: str, valid: tuple[str, ...]) -> None:
    values = {"init": "random", axis: "typo"}
    with pytest.raises(ValueError) as raised:
        check_combination("cbr_nano", **values)
    assert axis in str(raised.value) and all(name in str(raised.value) for name in valid)


def test_transfusion_has_one_entry_per_block() -> None:
    assert [name for name in INITIALIZATIONS if name.startswith("transfusion")] == [
        "transfusion-1", "transfusion-2", "transfusion-3", "transfusion-4"]


@pytest.mark.parametrize(("backbone", "options"), [
    (BIT, dict(norm="batchnorm", weight_standardization="drop", dead_filters="copy",
               weight_scaling="frobenius", cifar_stem=True)),
    ("cbr_nano", dict(norm="groupnorm", weight_standardization="bake", dead_filters="random",
                      weight_scaling="frobenius")),
])
def test_every_companion_axis_is_applied_by_the_entry_point(backbone: str, options: dict) -> None:
    model, feature_dim, report = build_initialized_backbone(backbone, "random", **options)
    for axis, value in options.items():
        assert (axis if value is True else f"{axis}={value}") in report
    assert not any(isinstance(module, StdConv2d) for module in model.modules())
    old_norm = nn.GroupNorm if options["norm"] == "batchnorm" else nn.BatchNorm2d
    assert not any(isinstance(module, old_norm) for module in model.modules())
    assert_trains(model, feature_dim, (8,))  # with the CIFAR stem, 8 px costs what 32 px costs otherwise


# ---- loading ---------------------------------------------------------------------------------

def test_hugging_face_hub_cache_is_used_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    reference = make_pretrained("resnet18", seed=7)
    snapshot = tmp_path / "models--timm--resnet18.tv_in1k"
    (snapshot / "refs").mkdir(parents=True)
    (snapshot / "refs" / "main").write_text("abc123")
    (snapshot / "snapshots" / "abc123").mkdir(parents=True)
    safetensors.torch.save_file(reference.state_dict(), str(snapshot / "snapshots/abc123/model.safetensors"))
    model, _, report = build_initialized_backbone("resnet18", "imagenet")
    assert_identical(model, backbone_tensors(reference))
    assert "model.safetensors" in report


@pytest.mark.parametrize(("backbone", "init", "file_name"), [
    ("resnet50", "imagenet", "resnet50.tv_in1k.pth"), (BIT, "bit-m", f"{BIT}.goog_in21k.pth"),
    (BIT, "bit-s", "BiT-S-R50x1.npz"), (BIT, "transfusion-1", "BiT-S-R50x1.npz"),
    ("cbr_tiny", "meanvar", "cbr_tiny.in1k.pth"),
    ("resnet18", "transfusion-2", "resnet18.tv_in1k.pth"),
])
def test_missing_weights_fail_at_once_with_one_line_saying_where_to_put_them(
    tmp_path: Path, backbone: str, init: str, file_name: str
) -> None:
    with pytest.raises(MissingWeightsError) as raised:
        build_initialized_backbone(backbone, init, weights_dir=str(tmp_path))
    message = str(raised.value)
    assert "\n" not in message and isinstance(raised.value, RuntimeError)
    assert f"{tmp_path}/{file_name}" in message and backbone in message


def test_missing_weights_path_and_missing_ssl_checkpoint_are_reported(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match="weights_path"):
        build_initialized_backbone("resnet18", "imagenet", weights_path=str(tmp_path / "nope.pth"))
    with pytest.raises(MissingWeightsError, match="weights_path"):
        build_initialized_backbone("resnet18", "ssl-imagenet")


# ---- double pretraining: SSL checkpoints -----------------------------------------------------

def test_ssl_checkpoint_strips_prefixes_drops_heads_and_reports_missing_and_unexpected(
    tmp_path: Path,
) -> None:
    pretrained = backbone_tensors(make_pretrained("resnet18"))
    state = {f"module.encoder_q.{key}": value for key, value in pretrained.items()
             if key != "layer4.1.bn2.weight"}
    state["module.encoder_q.fc.0.weight"] = torch.randn(16, 512)
    state["module.encoder_q.fc.0.bias"] = torch.randn(16)
    state["module.encoder_k.conv1.weight"] = torch.randn(64, 3, 7, 7)
    state["module.queue"] = torch.randn(16, 4096)
    state["module.encoder_q.adapter.weight"] = torch.randn(3)
    torch.save({"epoch": 200, "state_dict": state}, tmp_path / "moco.pth")

    model, _, report = build_initialized_backbone(
        "resnet18", "ssl-imagenet", weights_path=str(tmp_path / "moco.pth"))
    assert_identical(model, pretrained, [key for key in pretrained if key != "layer4.1.bn2.weight"])
    assert not torch.equal(model.state_dict()["layer4.1.bn2.weight"], pretrained["layer4.1.bn2.weight"])
    assert "encoder_q." in report and "module." in report
    assert "dropped 2 head tensors" in report and "dropped 2 momentum/target copies" in report
    assert re.search(r"missing, left at random init: 1 \(layer4\.1\.bn2\.weight\)", report)
    assert re.search(r"unexpected, ignored: 1 \(adapter\.weight\)", report)


@pytest.mark.parametrize(("checkpoint", "expected"), [
    ({"state_dict": {"backbone.conv1.weight": 1, "projector.0.weight": 2,
                     "momentum_backbone.conv1.weight": 3}},
     {"conv1.weight": 1}),  # solo-learn
    ({"model": {"module.base_encoder.layer1.0.conv1.weight": 1, "module.base_encoder.head.0.weight": 2,
                "module.predictor.0.weight": 3, "module.momentum_encoder.conv1.weight": 4}},
     {"layer1.0.conv1.weight": 1}),  # MoCo v3
    ({"teacher": {"backbone.bn1.bias": 1, "head.mlp.0.weight": 2}}, {"bn1.bias": 1}),  # DINO
    ({"model.encoder.conv1.weight": 1, "model.prototypes.weight": 2, "model.projection_head.0.bias": 3},
     {"conv1.weight": 1}),  # SwAV-like
])
def test_clean_ssl_state_dict_handles_common_layouts(checkpoint: dict, expected: dict) -> None:
    def tensors(layout: dict) -> dict:
        return {key: tensors(value) if isinstance(value, dict) else torch.tensor(float(value))
                for key, value in layout.items()}

    cleaned = clean_ssl_state_dict(tensors(checkpoint))
    assert {key: int(value) for key, value in cleaned.tensors.items()} == expected


def test_ssl_checkpoint_that_fits_nothing_is_an_error(tmp_path: Path) -> None:
    torch.save({"state_dict": {"vit.blocks.0.weight": torch.randn(3)}}, tmp_path / "vit.pth")
    with pytest.raises(ValueError, match="nothing in"):
        build_initialized_backbone("resnet18", "ssl-imagenet", weights_path=str(tmp_path / "vit.pth"))


# ---- Transfusion: Mean-Var, weight transfusion, Slim -----------------------------------------

@pytest.mark.parametrize("backbone", ["resnet18", "cbr_tiny"])
def test_meanvar_matches_each_pretrained_tensors_mean_and_variance(
    weights: WeightFiles, backbone: str
) -> None:
    reference = weights.for_backbone(backbone)
    model, _, _ = weights.model(backbone, "meanvar")
    for name, parameter in model.named_parameters():
        pretrained = reference[name]
        count, mean, std = pretrained.numel(), pretrained.mean(), pretrained.std(unbiased=False)
        assert not torch.equal(parameter, pretrained), name
        if count < 16:
            continue
        # Five standard errors of the sample mean and of the sample standard deviation.
        assert abs(parameter.mean() - mean) <= 5 * std / count**0.5 + 1e-6, name
        assert abs(parameter.std(unbiased=False) / std - 1) <= 5 / (2 * count) ** 0.5, name
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.running_var, torch.ones_like(module.running_var))


@pytest.mark.parametrize(("backbone", "blocks"), [
    *(("resnet18", k) for k in range(1, 5)), *(("cbr_nano", k) for k in range(1, 5)), (BIT, 2),
])
def test_transfusion_keeps_exactly_the_first_k_blocks(
    weights: WeightFiles, backbone: str, blocks: int
) -> None:
    reference = weights.for_backbone(backbone)
    model, _, report = weights.model(backbone, f"transfusion-{blocks}")
    random_state = weights.model(backbone, "random")[0].state_dict()
    spec = BACKBONES[backbone]
    kept = tuple(prefix + "." for block in spec.blocks[:blocks] for prefix in block)
    state = model.state_dict()
    assert_identical(model, reference, [key for key in state if key.startswith(kept)])
    later = [key for key in state if not key.startswith(kept)]
    assert (len(later) == 0) == (blocks == 4)
    for key in later:  # random init, the same as init "random" with the same seed
        assert torch.equal(state[key], random_state[key]), key
        if state[key].is_floating_point():
            assert not torch.equal(state[key], reference[key]), key
    assert f"blocks 1-{blocks}" in report


@pytest.mark.parametrize(("backbone", "feature_dim"), [("resnet18", 256), ("cbr_tiny", 256), (BIT, 1024)])
def test_slim_keeps_blocks_one_and_two_and_halves_the_rest(
    weights: WeightFiles, backbone: str, feature_dim: int
) -> None:
    reference = weights.for_backbone(backbone)
    model, dim, report = weights.model(backbone, "slim")
    assert dim == feature_dim and f"-> {feature_dim}" in report
    kept = tuple(prefix + "." for block in BACKBONES[backbone].blocks[:2] for prefix in block)
    assert_identical(model, reference, [key for key in model.state_dict() if key.startswith(kept)])
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, feature_dim)


# ---- surgery: norms, weight standardization --------------------------------------------------

@pytest.fixture(scope="module")
def bit_s(weights: WeightFiles) -> nn.Module:
    """BiT-S loaded once; surgery tests work on copies."""
    return weights.model(BIT, "bit-s")[0]


def conv_weights(model: nn.Module) -> list[torch.Tensor]:
    return [module.weight for module in model.modules() if isinstance(module, nn.Conv2d)]


def count(model: nn.Module, kind: type | tuple[type, ...]) -> int:
    return sum(isinstance(module, kind) for module in model.modules())


def test_group_norm_to_batch_norm_keeps_every_conv_weight_bit_identical(bit_s: nn.Module) -> None:
    after = copy.deepcopy(bit_s)
    report = surgery.group_norm_to_batch_norm(after)
    assert count(after, nn.GroupNorm) == 0
    assert count(after, nn.BatchNorm2d) == count(bit_s, nn.GroupNorm) == 49
    for norm in (module for module in after.modules() if isinstance(module, nn.BatchNorm2d)):  # default init
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert torch.equal(norm.bias, torch.zeros_like(norm.bias))
    assert all(torch.equal(a, b) for a, b in zip(conv_weights(bit_s), conv_weights(after), strict=True))
    assert count(after, nn.ReLU) == count(bit_s, nn.ReLU) > 0 and "49 GroupNorm" in report
    # Train-mode BatchNorm, as SimSiam will see it; SyncBatchNorm conversion keeps the activations.
    after(torch.randn(2, 3, 32, 32)).sum().backward()
    assert count(nn.SyncBatchNorm.convert_sync_batchnorm(after), nn.ReLU) == count(bit_s, nn.ReLU)


def test_dropping_weight_standardization_keeps_raw_weights_and_baking_keeps_the_output(
    bit_s: nn.Module,
) -> None:
    dropped, baked = copy.deepcopy(bit_s), copy.deepcopy(bit_s)
    report = surgery.drop_weight_standardization(dropped, bake=False)
    surgery.drop_weight_standardization(baked, bake=True)
    assert "53 StdConv2d" in report
    assert count(dropped, StdConv2d) == count(baked, StdConv2d) == 0
    assert count(dropped, nn.Conv2d) == count(bit_s, nn.Conv2d)
    assert all(torch.equal(a, b) for a, b in zip(conv_weights(bit_s), conv_weights(dropped), strict=True))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(baked.eval()(images), bit_s.eval()(images), rtol=1e-4, atol=1e-5)


def test_batch_norm_to_group_norm_leaves_no_batch_norm(weights: WeightFiles) -> None:
    before = weights.model("resnet18", "imagenet")[0]
    after = copy.deepcopy(before)
    surgery.batch_norm_to_group_norm(after)
    assert count(after, nn.modules.batchnorm._BatchNorm) == 0
    assert {module.num_groups for module in after.modules() if isinstance(module, nn.GroupNorm)} == {32}
    assert all(torch.equal(a, b) for a, b in zip(conv_weights(before), conv_weights(after), strict=True))
    assert [surgery.group_count(c) for c in (32, 48, 2048, 30, 7)] == [32, 24, 32, 30, 7]


# ---- double pretraining: Frobenius scaling and dead filters ----------------------------------

def bit_with_batch_norm_and_plain_convs(bit_s: nn.Module) -> nn.Module:
    """BiT after the BiT + SimSiam surgery, its BatchNorm statistics set from one batch: with the
    default statistics the raw unstandardized weights blow activations up and eval is ill-conditioned."""
    model = copy.deepcopy(bit_s)
    surgery.group_norm_to_batch_norm(model)
    surgery.drop_weight_standardization(model, bake=False)
    for norm in (module for module in model.modules() if isinstance(module, nn.BatchNorm2d)):
        norm.momentum = None  # a cumulative average: after one batch, that batch's statistics
    with torch.no_grad():
        model.train()(torch.randn(8, 3, 32, 32))
    return model


@pytest.mark.parametrize("backbone", ["resnet18", "cbr_small", BIT])  # BiT: pre-activation blocks
def test_frobenius_scaling_leaves_the_output_unchanged_while_norms_drop(
    weights: WeightFiles, bit_s: nn.Module, backbone: str
) -> None:
    if backbone == BIT:
        before = bit_with_batch_norm_and_plain_convs(bit_s)
    else:
        before = weights.model(backbone, "imagenet")[0]
    after = copy.deepcopy(before)
    report = surgery.scale_by_frobenius_norm(after)
    pairs = dict(surgery.conv_batch_norm_pairs(before))
    modules_before, modules_after = dict(before.named_modules()), dict(after.named_modules())
    scaled = [name for name in pairs if modules_before[name].weight.norm() > 1]
    assert len(scaled) >= 3 and f"{len(scaled)} conv layers" in report
    for name in scaled:
        torch.testing.assert_close(modules_after[name].weight.norm(), torch.tensor(1.0), rtol=1e-4, atol=0)
    unpaired = [n for n, m in modules_before.items() if isinstance(m, nn.Conv2d) and n not in pairs]
    # Only BiT has them: the last conv of a pre-activation block feeds an addition, not a norm.
    assert (len(unpaired) > 0) == (backbone == BIT)
    for name in unpaired:
        assert torch.equal(modules_after[name].weight, modules_before[name].weight), name
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = before.eval()(images)
        # fp32 tolerance for a deep network: its own fp32-vs-fp64 error is ~2e-5 of the output's scale.
        tolerance = 1e-4 * expected.abs().max().item()
        torch.testing.assert_close(after.eval()(images), expected, rtol=1e-4, atol=tolerance)


def test_frobenius_compensation_is_exact_even_where_eps_matters() -> None:
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, 8, 3, bias=True), nn.BatchNorm2d(8, eps=1e-2)).eval()
    with torch.no_grad():
        block[0].weight.mul_(30)
        block[1].running_var.uniform_(1e-3, 1e-2)  # eps as large as the variance: not scale-invariant
        block[1].running_mean.normal_()
        block[1].weight.normal_()
        block[1].bias.normal_()
    images = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = block(images)
        report = surgery.scale_by_frobenius_norm(block)
        torch.testing.assert_close(block(images), expected, rtol=1e-5, atol=1e-5)
    assert "1 conv layers" in report
    torch.testing.assert_close(block[0].weight.norm(), torch.tensor(1.0))


@pytest.mark.parametrize("mode", ["copy", "random"])
def test_dead_filters_are_replaced(tmp_path: Path, mode: str) -> None:
    reference = backbone_tensors(make_pretrained("cbr_small"))
    dead = {"blocks.0.0.weight": [0, 5, 6], "blocks.2.0.weight": [1]}  # shrunk below the 0.1 threshold
    for key, filters in dead.items():
        reference[key][filters] *= 1e-3
    torch.save(reference, tmp_path / "cbr_small.in1k.pth")
    model, _, report = build_initialized_backbone("cbr_small", "imagenet", dead_filters=mode,
                                                  weights_dir=str(tmp_path))
    assert "4 filters below norm 0.1 in 2 conv layers" in report
    for key, conv in ((key, model.state_dict()[key]) for key in dead):
        alive = [i for i in range(len(conv)) if i not in dead[key]]
        assert torch.equal(conv[alive], reference[key][alive])
        for index in dead[key]:
            copies_a_live_filter = any(torch.equal(conv[index], reference[key][i]) for i in alive)
            assert copies_a_live_filter == (mode == "copy")
    assert all((w.flatten(1).norm(dim=1) >= 0.1).all() for w in conv_weights(model))


# ---- seeds and the loop's older interface ------------------------------------------------------

def test_seed_decides_the_random_weights_and_the_global_generator_is_left_alone() -> None:
    torch.manual_seed(5)
    first = build_initialized_backbone("cbr_nano", "random", seed=3)[0].state_dict()
    drawn_after = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(1), drawn_after)
    second = build_initialized_backbone("cbr_nano", "random", seed=3)[0].state_dict()
    other = build_initialized_backbone("cbr_nano", "random", seed=4)[0].state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not torch.equal(first["blocks.0.0.weight"], other["blocks.0.0.weight"])
