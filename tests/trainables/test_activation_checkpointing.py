"""Activation checkpointing keeps fewer bytes for the backward pass and changes nothing else."""

import copy

import pytest
import torch
from torch import nn

from trainables.activation_checkpointing import checkpoint_segments, enable_activation_checkpointing
from trainables.backbones import BACKBONES, build_backbone


def kept_bytes_and_step(model: nn.Module, images: torch.Tensor) -> int:
    """One training step's forward and backward; returns the bytes autograd kept for backward
    (each storage once, parameters excluded)."""
    parameters = {parameter.untyped_storage()._cdata for parameter in model.parameters()}
    kept: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in parameters:
            kept[storage._cdata] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        features = model(images)
    (features.pow(2).mean() + features.mean()).backward()
    return sum(kept.values())


def running_statistics(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value for name, value in model.state_dict().items()
            if "running_" in name or "num_batches_tracked" in name}


@pytest.mark.parametrize("name", list(BACKBONES))
def test_checkpointing_keeps_fewer_bytes_with_the_same_gradients_and_statistics(name: str) -> None:
    torch.manual_seed(0)
    plain, _ = build_backbone(name)
    checkpointed = copy.deepcopy(plain)
    enable_activation_checkpointing(checkpointed)
    images = torch.randn(4, 3, 32, 32)

    plain_bytes = kept_bytes_and_step(plain, images)
    checkpointed_bytes = kept_bytes_and_step(checkpointed, images)

    assert checkpointed_bytes < 0.6 * plain_bytes, (checkpointed_bytes, plain_bytes)
    for (parameter_name, expected), actual in zip(plain.named_parameters(), checkpointed.parameters(),
                                                  strict=True):
        torch.testing.assert_close(actual.grad, expected.grad, rtol=1e-5, atol=1e-6, msg=parameter_name)
    # BatchNorm's running statistics move once per step, as without checkpointing.
    expected_statistics = running_statistics(plain)
    for key, value in running_statistics(checkpointed).items():
        torch.testing.assert_close(value, expected_statistics[key], rtol=0, atol=1e-7, msg=key)


def test_without_the_batchnorm_guard_recomputation_would_move_running_statistics_twice() -> None:
    torch.manual_seed(0)
    plain, _ = build_backbone("cbr_nano")
    unguarded = copy.deepcopy(plain)
    unguarded.set_grad_checkpointing(True)  # checkpointing alone, no enable_activation_checkpointing
    images = torch.randn(4, 3, 32, 32) * 3 + 1
    kept_bytes_and_step(plain, images)
    kept_bytes_and_step(unguarded, images)
    assert not torch.allclose(running_statistics(unguarded)["blocks.0.1.running_mean"],
                              running_statistics(plain)["blocks.0.1.running_mean"])
    assert running_statistics(unguarded)["blocks.0.1.num_batches_tracked"] == 2


def test_a_deep_copy_stays_checkpointed_for_fine_tuning() -> None:
    model, _ = build_backbone("cbr_nano")
    enable_activation_checkpointing(model)
    copied = copy.deepcopy(model)
    images = torch.randn(4, 3, 32, 32)
    plain, _ = build_backbone("cbr_nano")
    assert kept_bytes_and_step(copied, images) < 0.6 * kept_bytes_and_step(plain, images)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_checkpoint_segments_cover_the_blocks(name: str) -> None:
    model, _ = build_backbone(name)
    segments = checkpoint_segments(model)
    assert len(segments) >= 4
    owned = {id(module) for module in model.modules()}
    assert all(id(segment) in owned for segment in segments)
