"""Every named sweep resolves to valid trial configs, full size and --smoke, and its claims
refer to cells its grid can contain."""

import pytest

from orchestrator.estimates import gpu_hours, images_per_second
from orchestrator.grid import apply_overrides, flat_value, nest, substitute_missing_datasets
from orchestrator.sweep import main
from search_spaces import SWEEPS
from trainables import metrics
from trainables.config import ConfigError, TrialConfig

PAPER_SWEEPS = ("ablation_batchsize", "ablation_imagesize", "prior_weights", "bit_simsiam", "transfusion")


def test_every_sweep_the_product_promises_is_registered() -> None:
    assert set(PAPER_SWEEPS) | {"smoke", "hpo_simclr"} <= set(SWEEPS)


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_sweep_states_its_hypothesis(name: str) -> None:
    sweep = SWEEPS[name]
    assert sweep.description and "\n" not in sweep.description
    assert len(sweep.hypothesis.split()) > 15


@pytest.mark.parametrize("name", sorted(SWEEPS))
@pytest.mark.parametrize("smoke", [False, True])
def test_grid_resolves_to_valid_trial_configs(name: str, smoke: bool) -> None:
    grid = apply_overrides(SWEEPS[name], [], smoke=smoke)
    if smoke:
        grid, _ = substitute_missing_datasets(grid)
    configs = grid.trial_configs()
    assert configs and all(isinstance(config, TrialConfig) for config in configs)
    if smoke:  # minutes on 2 CPUs: small images, a few epochs, CPU-sized backbones, data on disk
        for config in configs:
            assert config.image_size <= 32 and config.epochs <= 3
            assert config.backbone in ("cbr_nano", "cbr_small")
            assert config.dataset in ("shapes", "digits") or config.dataset in SWEEPS[name].grid.get(
                "dataset", [SWEEPS[name].params.get("dataset")])


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_claims_name_axis_values_the_grid_contains(name: str) -> None:
    sweep = SWEEPS[name]
    configs = [config.to_dict() for config in apply_overrides(sweep, []).trial_configs()]
    for claim in sweep.claims:
        assert claim.metric in (*metrics.PER_EPOCH, *metrics.FINAL)
        # A contrast of cells (weights sum to 0), or one cell of a metric that is a contrast itself.
        assert (abs(sum(weight for _, weight in claim.terms)) < 1e-9
                or claim.metric in metrics.WITHIN_TRIAL_CONTRASTS and len(claim.terms) == 1)
        for cell, _ in claim.terms:
            assert any(all(config[key] == value for key, value in cell.items()) for config in configs), cell


def test_dry_run_works_for_every_sweep(capsys: pytest.CaptureFixture[str]) -> None:
    for name in SWEEPS:
        assert main([name, "--dry-run"]) == 0
        assert main([name, "--dry-run", "--smoke"]) == 0
    out = capsys.readouterr().out
    assert out.count("estimated total:") == 2 * len(SWEEPS)


def test_smoke_replaces_missing_datasets_and_says_so(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert main(["bit_simsiam", "--dry-run", "--smoke", "--set", f"data_root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "smoke: dataset cifar10 (not under" in out and "-> shapes" in out
    assert "smoke: dataset ham10000 (not under" in out


def test_smoke_keeps_a_dataset_that_is_on_disk(tmp_path) -> None:
    (tmp_path / "medmnist").mkdir()
    (tmp_path / "medmnist" / "dermamnist.npz").write_bytes(b"")
    grid = apply_overrides(SWEEPS["ablation_batchsize"], [f"data_root={tmp_path}"], smoke=True)
    grid, changed = substitute_missing_datasets(grid)
    assert grid.axes["dataset"] == ["shapes", "dermamnist"]
    assert changed == [f"ham10000 (not under {tmp_path}/) -> shapes"]


def test_search_sweep_has_samples_and_valid_searched_keys() -> None:
    grid = apply_overrides(SWEEPS["hpo_simclr"], [], smoke=True)
    assert grid.search is not None and grid.num_samples == SWEEPS["hpo_simclr"].search.smoke_num_samples
    assert grid.num_trials == grid.num_samples
    assert "method_params.temperature" in grid.display_axes


def test_a_search_on_the_knn_monitor_monitors_every_epoch() -> None:
    """Tune refuses results without its scheduler's metric: no epoch of a search may skip the monitor."""
    grid = apply_overrides(SWEEPS["hpo_simclr"], [], smoke=True)
    assert all(config.knn_every == 1 for config in grid.trial_configs())
    assert grid.params["knn_every"] == 1
    with pytest.raises(ConfigError, match="knn_every.*hpo_simclr.*use knn_every=1"):
        apply_overrides(SWEEPS["hpo_simclr"], ["knn_every=5"], smoke=True)
    assert apply_overrides(SWEEPS["smoke"], ["knn_every=3"]).params["knn_every"] == 3  # grids choose freely


def test_gpu_hour_estimate_scales_with_epochs_size_and_backbone() -> None:
    base = TrialConfig.from_dict({"dataset": "cifar10", "backbone": "resnet50", "image_size": 224,
                                  "epochs": 100, "method": "simclr"})
    hours = gpu_hours(base)
    # 100 epochs x 45,000 images at 1,235 two-view images per second.
    assert hours == pytest.approx(100 * 45_000 / 1235 / 3600)
    doubled = TrialConfig.from_dict({**base.to_dict(), "epochs": 200})
    assert gpu_hours(doubled) == pytest.approx(2 * hours)
    assert images_per_second("resnet18", 224) > images_per_second("resnet50", 224)
    assert images_per_second("resnet50", 96) > images_per_second("resnet50", 224)
    assert gpu_hours(TrialConfig.from_dict({"dataset": "imagefolder"})) is None


def test_a_flat_key_reads_back_the_value_nest_put_there() -> None:
    flat = {"method": "simclr", "method_params.temperature": 0.2, "seed": 3}
    nested = nest(flat)
    assert {key: flat_value(nested, key) for key in flat} == flat
    with pytest.raises(KeyError):
        flat_value(nested, "method_params.queue_size")
