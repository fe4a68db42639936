"""which_prior's two stages without Ray: which priors a machine has, the ranking, stage 2's grid."""

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from orchestrator.grid import apply_overrides
from orchestrator.screening import (
    RankedPrior,
    available_priors,
    pretraining_axes,
    rank_priors,
    screening_axes,
    stage_2_trial_count,
)
from orchestrator.sweep import main
from search_spaces import SWEEPS, Screening
from trainables.config import ConfigError
from trainables.initializations import build_initialized_backbone

CANDIDATES = ["random", "imagenet", "bit-s", "bit-m", "meanvar"]


def imagenet_file(folder: Path) -> Path:
    """The CBR networks have no public ImageNet weights: a user's own file, as weights_dir holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cbr_nano.in1k.pth"
    torch.save(build_initialized_backbone("cbr_nano", "random", seed=5)[0].state_dict(), path)
    return path


def test_only_the_priors_this_machine_has_for_the_backbone_are_screened(tmp_path: Path) -> None:
    kept, dropped = available_priors(CANDIDATES, {"backbone": "cbr_nano", "weights_dir": str(tmp_path)})
    assert kept == ["random"]
    assert [line.split(":")[0] for line in dropped] == ["imagenet", "bit-s", "bit-m", "meanvar"]
    assert "needs resnetv2_50x1_bit" in dropped[1] and "cbr_nano.in1k" in dropped[0]

    imagenet_file(tmp_path)  # Mean-Var is drawn from the ImageNet tensors: it comes with them
    kept, dropped = available_priors(CANDIDATES, {"backbone": "cbr_nano", "weights_dir": str(tmp_path)})
    assert kept == ["random", "imagenet", "meanvar"]
    assert [line.split(":")[0] for line in dropped] == ["bit-s", "bit-m"]


def test_the_sweep_screens_what_is_available_unless_init_is_set(tmp_path: Path) -> None:
    sweep = SWEEPS["which_prior"]
    grid = apply_overrides(sweep, [f"weights_dir={tmp_path}"], smoke=True)
    assert grid.axes["init"] == ["random"] and len(grid.screened_out) == 4
    grid = apply_overrides(sweep, ["init=random,imagenet", "backbone=resnet18"], smoke=True)
    assert grid.axes["init"] == ["random", "imagenet"] and grid.screened_out == ()
    only_bit = dataclasses.replace(sweep, grid={**sweep.grid, "init": ["bit-s", "bit-m"]})
    with pytest.raises(ConfigError, match="no prior of sweep which_prior is available here"):
        apply_overrides(only_bit, [], smoke=True)


def test_stage_2_pretrains_the_top_k_priors_plus_random_with_every_method() -> None:
    axes = {"init": ["random", "imagenet", "meanvar", "bit-s"], "method": ["simclr", "byol"],
            "label_fraction": [0.1, 1.0], "seed": [0, 1, 2]}
    assert screening_axes(axes)["method"] == ["none"] and screening_axes(axes)["init"] == axes["init"]
    ranked = [RankedPrior("meanvar", 0.9, 6), RankedPrior("random", 0.85, 6), RankedPrior("bit-s", 0.8, 6),
              RankedPrior("imagenet", 0.7, 6)]
    stage_2 = pretraining_axes(axes, {}, Screening(top_k=2), ranked)
    assert stage_2["init"] == ["meanvar", "bit-s", "random"]  # random is the baseline, not a top-k place
    assert stage_2["method"] == ["simclr", "byol"] and stage_2["seed"] == [0, 1, 2]
    assert stage_2_trial_count(axes, {}, Screening(top_k=2)) == 3 * 2 * 2 * 3
    # With a method fixed by --set (a param, not an axis), stage 2 runs that method.
    single = pretraining_axes({**axes, "method": []}, {"method": "byol"}, Screening(top_k=1), ranked)
    assert single["init"] == ["meanvar", "random"] and single["method"] == ["byol"]


def test_the_ranking_averages_each_priors_finished_trials_and_skips_failed_ones() -> None:
    def result(init: str, value: float, error: object = None) -> SimpleNamespace:
        return SimpleNamespace(config={"init": init}, metrics={"m": value}, error=error)

    ranked = rank_priors([result("a", 0.5), result("a", 0.7), result("b", 0.65), result("b", 0.1, "boom"),
                          result("c", math.nan)], "m")
    assert [(prior.init, prior.trials) for prior in ranked] == [("b", 1), ("a", 2)]
    assert ranked[1].mean == pytest.approx(0.6)


def test_the_dry_run_shows_stage_1_and_what_stage_2_will_run(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    imagenet_file(tmp_path / "weights")
    assert main(["which_prior", "--smoke", "--dry-run", "--set", f"weights_dir={tmp_path / 'weights'}"]) == 0
    out = capsys.readouterr().out
    assert "prior left out: bit-s" in out and "prior left out: imagenet" not in out
    # 3 priors x 2 label fractions x 3 seeds, all method none; stage 2: top 1 + random x simclr.
    assert "sweep which_prior: 18 trial(s)" in out
    assert "stage 2 (after the table above, stage 1): 12 trial(s): the top 1 priors" in out
    assert " simclr " not in out.split("stage 2")[0]
