"""Trials sized to the GPUs: the per-GPU memory estimate, its invariants, and the planner's use of it."""

from pathlib import Path

import pytest
import torch
from torch import nn

from orchestrator.cluster import GPU_MEMORY_MIB_BY_INSTANCE_FAMILY, MIB, read_autoscaler_config
from orchestrator.grid import apply_overrides
from orchestrator.memory import (
    BF16_AUTOCAST,
    FP32,
    GIB,
    backbone_profile,
    estimate_memory,
    fit_to_plan,
    saved_tensor_bytes,
    trial_activation_profile,
)
from orchestrator.resources import NodeType, plan_resources
from orchestrator.sweep import main
from search_spaces import SWEEPS
from trainables.backbones import build_backbone
from trainables.batches import RESIDENT_MEMORY_FRACTION
from trainables.config import TrialConfig
from trainables.methods import build_method

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_GPU_MEMORY = GPU_MEMORY_MIB_BY_INSTANCE_FAMILY["g5"] * MIB  # cluster.yaml: g5.2xlarge, one A10G


def test_every_trial_of_every_shipped_sweep_fits_the_shipped_cluster() -> None:
    nodes, _, max_worker_nodes = read_autoscaler_config(ROOT / "cluster.yaml")
    assert {node.gpu_memory_bytes for node in nodes if node.gpus} == {SHIPPED_GPU_MEMORY}
    spread = []
    for name, sweep in SWEEPS.items():
        configs = apply_overrides(sweep, []).trial_configs()
        plan = plan_resources(nodes, num_workers=1, num_trials=len(configs),
                              max_worker_nodes=max_worker_nodes)
        for index, (config, estimate) in enumerate(fit_to_plan(configs, plan)):
            assert estimate is not None
            assert estimate.total < SHIPPED_GPU_MEMORY, (name, index, estimate)
            assert config.num_workers <= plan.worker_slots and config.batch_size % config.num_workers == 0
            TrialConfig.from_dict(config.to_dict())  # still a valid trial
            if config.num_workers > 1:
                spread.append((name, config.batch_size))
    # The case: ResNet-50 at 224 px with batch 1024 needs several A10Gs.
    assert ("ablation_batchsize", 1024) in spread


def test_a_trial_that_fits_no_gpu_is_refused_with_one_line_exit_2(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("""
max_workers: 2
head_node_type: head
provider: {type: aws}
available_node_types:
  head: {resources: {CPU: 0}, node_config: {InstanceType: m6i.2xlarge}}
  small_gpu:
    min_workers: 0
    max_workers: 2
    resources: {CPU: 4, GPU: 1}
    labels: {gpu-memory-gib: "4"}
    node_config: {InstanceType: custom.gpu}
""")
    code = main(["smoke", "--dry-run", "--cluster-config", str(cluster), "--set", "backbone=resnet50",
                 "--set", "image_size=224", "--set", "batch_size=512", "--set", "method=simclr"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: trial 0 (simclr, resnet50, 224 px, batch 512")
    assert "4.0 GiB" in lines[0] and "lower batch_size" in lines[0]


def test_dry_run_shows_each_trials_workers_checkpointing_and_memory_per_gpu(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ablation_batchsize", "--dry-run", "--cluster-config", str(ROOT / "cluster.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[2].split()
    assert header[-2:] == ["checkpointing", "GiB/GPU"]
    rows = [line.split() for line in lines[4:4 + 24]]
    workers_column = header.index("workers")
    by_batch = {int(row[header.index("batch_size")]): int(row[workers_column]) for row in rows}
    assert by_batch[32] == 1 and by_batch[1024] > 1
    assert all(float(row[-1]) < (1 - RESIDENT_MEMORY_FRACTION) * SHIPPED_GPU_MEMORY / GIB for row in rows)
    assert any("every trial fits 75% of the 22.5 GiB GPUs" in line for line in lines)


def method_kept_bytes(config: TrialConfig, batch: int, device: str) -> int:
    """Bytes a real training forward pass of the trial's method keeps for backward (the
    measurement the estimate's decomposition into backbone and heads must agree with)."""
    with torch.device(device):
        backbone, feature_dim = build_backbone(config.backbone)
        method = build_method(config.method, backbone, feature_dim, config.method_params)
    method.train()
    saved = saved_tensor_bytes(method, [view.size for view in method.views(config.image_size)], batch)
    return saved.per_image + saved.fixed


@pytest.mark.parametrize("method", ["simclr", "swav"])
def test_activation_estimate_is_linear_in_the_batch_and_matches_a_real_forward_pass(method: str) -> None:
    config = TrialConfig.from_dict({"method": method, "backbone": "cbr_nano", "image_size": 32,
                                    "method_params": {"num_small_crops": 2} if method == "swav" else {}})
    profile = trial_activation_profile(config, checkpointing=False, pretraining=True)
    for batch in (8, 24):
        measured = method_kept_bytes(config, batch, "cpu")
        assert profile.kept(batch) == pytest.approx(measured, rel=0.03), batch
    assert profile.kept(48) - profile.kept(24) == pytest.approx(profile.kept(24) - profile.kept(0), rel=0.03)


@pytest.mark.parametrize(("backbone", "size"), [("cbr_nano", 32), ("resnet50", 112)])
def test_activations_per_image_grow_about_quadratically_with_the_image_size(backbone: str, size: int) -> None:
    small = backbone_profile(backbone, size, False, False, False).per_image
    large = backbone_profile(backbone, 2 * size, False, False, False).per_image
    assert 3.5 < large / small < 4.5


def test_resnet50_activations_per_image_are_of_the_commonly_quoted_order() -> None:
    # About 100 MB per 224 px image in fp32 training is the figure usually quoted for ResNet-50.
    per_image = backbone_profile("resnet50", 224, False, False, False).per_image
    assert 60e6 < per_image < 130e6


def test_more_workers_and_checkpointing_each_lower_the_estimate() -> None:
    config = TrialConfig.from_dict({"method": "byol", "backbone": "resnet50", "image_size": 224,
                                    "batch_size": 512})
    one, four = estimate_memory(config, 1, False), estimate_memory(config, 4, False)
    assert four.total < 0.4 * one.total
    assert estimate_memory(config, 1, True).total < 0.6 * one.total
    # Fine-tuning runs on rank 0 with the whole batch: more workers do not shrink it, checkpointing does.
    finetuning = TrialConfig.from_dict({"method": "none", "eval": "finetune", "backbone": "resnet50",
                                        "image_size": 224, "batch_size": 256})
    plain = estimate_memory(finetuning, 1, False).evaluation
    assert estimate_memory(finetuning, 4, False).evaluation == plain
    assert estimate_memory(finetuning, 1, True).evaluation < 0.7 * plain


def test_the_planner_spreads_first_and_checkpoints_only_where_spreading_cannot_fit() -> None:
    config = TrialConfig.from_dict({"method": "simclr", "backbone": "resnet50", "image_size": 224,
                                    "batch_size": 1024})
    nodes = [NodeType("gpu", cpus=8, gpus=1, max_count=16, gpu_memory_bytes=SHIPPED_GPU_MEMORY)]
    plan = plan_resources(nodes, 1, 1)
    (sized, estimate), = fit_to_plan([config], plan)
    assert sized.num_workers > 1 and not sized.activation_checkpointing and estimate is not None
    # Four GPUs at most: 25 GiB each without checkpointing, so checkpointing on the fewest that fit.
    few = plan_resources([NodeType("gpu", cpus=8, gpus=1, max_count=4, gpu_memory_bytes=SHIPPED_GPU_MEMORY)],
                         1, 1)
    (sized, _), = fit_to_plan([config], few)
    assert sized.activation_checkpointing
    assert estimate_memory(config, 4, False).total > SHIPPED_GPU_MEMORY
    assert estimate_memory(config, sized.num_workers // 2, True).total > SHIPPED_GPU_MEMORY


def conv_norm_relu_stack(norm: str) -> nn.Sequential:
    def make_norm() -> nn.Module:
        return nn.GroupNorm(8, 32) if norm == "groupnorm" else nn.BatchNorm2d(32)

    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), make_norm(), nn.ReLU(inplace=True),
                         nn.Conv2d(32, 32, 3, padding=1), make_norm(), nn.ReLU(inplace=True),
                         nn.Conv2d(32, 32, 3, padding=1))


def kept_bytes_as_cuda_autocast_runs_it(model: nn.Sequential, images: torch.Tensor) -> int:
    """The reference: real tensors on the CPU, cast by hand as CUDA bf16 autocast casts them
    (convolutions in bf16, group_norm in fp32, batch_norm and ReLU in their input's dtype; the
    bf16 weight copies are autocast's cache, not activations), and the bytes autograd keeps for
    backward counted by torch's saved-tensor hooks."""
    weights = {id(layer): (layer.weight.bfloat16(), layer.bias.bfloat16())
               for layer in model if isinstance(layer, nn.Conv2d)}
    excluded = {tensor.untyped_storage()._cdata for tensor in
                [*model.parameters(), *model.buffers(), *(t for pair in weights.values() for t in pair)]}
    kept: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in excluded:
            kept[storage._cdata] = storage.nbytes()
        return tensor

    x = images
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        for layer in model:
            if isinstance(layer, nn.Conv2d):
                x = torch.nn.functional.conv2d(x.bfloat16(), *weights[id(layer)], padding=1)
            elif isinstance(layer, nn.GroupNorm):
                x = torch.nn.functional.group_norm(x.float(), layer.num_groups, layer.weight, layer.bias)
            else:
                x = layer(x)
    return sum(kept.values())


@pytest.mark.parametrize(("norm", "bytes_per_element"), [("groupnorm", 10), ("batchnorm", 4)])
def test_the_bf16_activation_count_is_what_cuda_autocast_keeps(norm: str, bytes_per_element: int) -> None:
    batch, size = 7, 16
    torch.manual_seed(0)
    reference = kept_bytes_as_cuda_autocast_runs_it(conv_norm_relu_stack(norm).train(),
                                                    torch.randn(batch, 3, size, size))
    with torch.device("meta"):
        model = conv_norm_relu_stack(norm).train()
    planned = saved_tensor_bytes(model, [size], batch, precision=BF16_AUTOCAST)
    assert planned.per_image + planned.fixed == reference
    # Per element of the two conv + norm + ReLU blocks' output (the first conv's bf16 input aside):
    # GroupNorm keeps its fp32 input and ReLU its fp32 output beside the next conv's bf16 copy.
    elements = 2 * batch * 32 * size * size
    assert (reference - batch * 3 * size * size * 2) / elements == pytest.approx(bytes_per_element, rel=0.02)


def test_groupnorm_backbones_are_planned_at_their_fp32_norms_and_batchnorm_ones_at_bf16() -> None:
    bit, resnet = ({precision: backbone_profile(name, 224, False, False, False, precision).per_image
                    for precision in (FP32, BF16_AUTOCAST)} for name in ("resnetv2_50x1_bit", "resnet50"))
    assert resnet[BF16_AUTOCAST] / resnet[FP32] == pytest.approx(0.5, abs=0.03)
    assert bit[BF16_AUTOCAST] / bit[FP32] > 1.1  # not the 0.5 of a plain halving: 2.5x more than that


def test_the_planned_input_is_the_views_bytes_for_gray_and_colour_batches() -> None:
    """The views the backbone gets are fp32 with three channels whether the stored batch has one
    (gray data) or three: the planner's input bytes per image are exactly one view's."""
    from trainables.augmentations import SIMCLR_RECIPE, augment

    profile = backbone_profile("cbr_nano", 32, False, False, False, FP32)
    for channels in (1, 3):
        batch = torch.randint(0, 256, (4, channels, 40, 40), dtype=torch.uint8)
        view = augment(batch, SIMCLR_RECIPE, torch.Generator().manual_seed(0), output_size=32)
        assert profile.input_per_image == view[0].numel() * view.element_size() == 3 * 32 * 32 * 4
