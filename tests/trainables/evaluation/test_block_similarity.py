"""Per-block similarity: which blocks, which activations, and the comparisons a trial reports."""

import copy
from pathlib import Path

import pytest
import torch

from trainables import metrics
from trainables.augmentations import normalize
from trainables.backbones import BACKBONES, build_backbone
from trainables.config import TrialConfig
from trainables.evaluation.block_similarity import (
    FIGURE_FILE,
    block_activations,
    block_modules,
    block_similarity_metrics,
    depth_contrast,
    probe_images,
)
from trainables.initializations import build_initialized_backbone


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_exposes_named_blocks_in_depth_order(name: str) -> None:
    backbone, _ = build_backbone(name)
    blocks = block_modules(backbone)
    assert list(blocks) == [block for block in metrics.SIMILARITY_BLOCKS if block in blocks]
    assert len(blocks) == (5 if BACKBONES[name].timm_name else 4)
    named = dict(backbone.named_modules())
    assert all(module in named for module in blocks.values())
    # The last block's output is what the feature vector pools (no head in between).
    last = block_activations(backbone, torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8))
    assert last[list(blocks)[-1]].shape[2] == backbone.num_features


def images(count: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def test_activations_are_positions_by_channels_sampled_alike_and_hooks_are_removed() -> None:
    torch.manual_seed(0)
    backbone, _ = build_backbone("cbr_nano")
    backbone.train()
    probe = images(10)
    first = block_activations(backbone, probe, positions_per_image=8, batch_size=4)
    # 32 px through 4 max-pools: 16, 8, 4, 2 px maps; at most 8 positions each; channels last.
    assert {name: tuple(value.shape) for name, value in first.items()} == {
        "block1": (10, 8, 32), "block2": (10, 8, 64), "block3": (10, 8, 128), "block4": (10, 4, 256)}
    assert backbone.training and not backbone.blocks[0]._forward_hooks
    # Batching does not change which positions are taken.
    again = block_activations(backbone, probe, positions_per_image=8, batch_size=10)
    assert all(torch.equal(first[name], again[name]) for name in first)
    # block4's 2x2 map is taken whole: its mean over positions is the pooled feature vector.
    backbone.eval()
    with torch.no_grad():
        features = backbone(normalize(probe))
    assert torch.allclose(first["block4"].mean(dim=1), features, atol=1e-5)


def test_probe_images_are_a_fixed_subset() -> None:
    pool = images(50)
    assert torch.equal(probe_images(pool, 20), probe_images(pool, 20))
    assert len(probe_images(pool, 20)) == 20 and len(probe_images(pool, 500)) == 50


def test_depth_contrast_is_lower_half_minus_upper_half() -> None:
    values = {("cka", f"block{i}"): v for i, v in zip(range(1, 6), [0.9, 0.8, 0.5, 0.4, 0.2], strict=True)}
    assert depth_contrast(values, "cka", [f"block{i}" for i in range(1, 6)]) == pytest.approx(0.85 - 0.3)


def test_a_trial_compares_its_rebuilt_initialization_its_pretrained_and_finetuned_backbones(
        tmp_path: Path) -> None:
    config = TrialConfig.from_dict({"backbone": "cbr_nano", "method": "simclr", "seed": 3,
                                    "block_similarity": True})
    # The initialization exactly as the loop builds it: the rebuild must reproduce it, so the
    # "pretrained" network that did not move is similar 1.0 in every block.
    initial, _, _ = build_initialized_backbone("cbr_nano", "random", seed=3)
    moved = copy.deepcopy(initial)
    with torch.no_grad():  # a "fine-tuning" that rewrote the last block only
        for parameter in moved.blocks[3].parameters():
            parameter.normal_()
    flat = block_similarity_metrics(config, initial, moved, images(40), "cpu", tmp_path,
                                    probe_count=30, bootstrap_samples=4)
    for measure in metrics.SIMILARITY_MEASURES:
        for block in ("block1", "block2", "block3", "block4"):
            assert flat[metrics.similarity_metric(metrics.SIMILARITY_PRETRAINING, measure, block)] == \
                pytest.approx(1.0, abs=1e-9)
            baseline = flat[metrics.similarity_metric(metrics.SIMILARITY_RANDOM_BASELINE, measure, block)]
            assert 0.0 <= baseline < 0.999
        finetuning = [flat[metrics.similarity_metric(metrics.SIMILARITY_FINETUNING, measure, f"block{i}")]
                      for i in range(1, 5)]
        assert finetuning[:3] == pytest.approx([1.0] * 3, abs=1e-9) and finetuning[3] < 0.99
        contrast = metrics.similarity_metric(metrics.SIMILARITY_FINETUNING, measure,
                                             metrics.SIMILARITY_DEPTH_CONTRAST)
        assert flat[contrast] == pytest.approx(1.0 - (1.0 + finetuning[3]) / 2)
        assert flat[contrast + metrics.STD_SUFFIX] >= 0.0
    assert set(flat) <= set(metrics.SIMILARITY) and flat[metrics.SIMILARITY_SECONDS] > 0
    assert (tmp_path / FIGURE_FILE).stat().st_size > 10_000


def test_without_pretraining_or_finetuning_only_the_baseline_is_reported() -> None:
    config = TrialConfig.from_dict({"method": "none", "block_similarity": True})
    backbone, _ = build_backbone("cbr_nano")
    flat = block_similarity_metrics(config, backbone, None, images(20), "cpu", probe_count=20)
    compared = {name.split("/")[1] for name in flat if name != metrics.SIMILARITY_SECONDS}
    assert compared == {metrics.SIMILARITY_RANDOM_BASELINE}
