"""Every named sweep resolves to valid trial configs, full size and --smoke, and its claims
refer to cells its grid can contain."""

import math

import pytest

from orchestrator.estimates import gpu_hours, images_per_second
from orchestrator.grid import Grid, apply_overrides, flat_value, nest, substitute_missing_datasets
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
    assert data_pairs(grid) == {("digits", "shapes"), ("shapes", "shapes"), ("dermamnist", "dermamnist")}
    assert changed == [f"covid19_radiography (not under {tmp_path}/) -> shapes",
                       f"chestxray14 (not under {tmp_path}/) -> digits",
                       f"ham10000 (not under {tmp_path}/) -> shapes"]


CIGA_PAIRS = {("chestxray14", "covid19_radiography"), ("ham10000", "ham10000"), ("dermamnist", "dermamnist")}


def data_pairs(grid: Grid) -> set[tuple[str, str]]:
    return {(config.resolved_pretrain_dataset, config.dataset) for config in grid.trial_configs()}


@pytest.mark.parametrize("name", ["ablation_batchsize", "ablation_imagesize"])
def test_the_ciga_ablations_pretrain_on_chestxray14_and_evaluate_on_covid19_radiography(name: str) -> None:
    """The paper's X-ray protocol and the same-domain arms, each pair crossed with the other axes
    and never with each other (no chestxray14 -> ham10000 cell)."""
    sweep = SWEEPS[name]
    grid = apply_overrides(sweep, [])
    assert data_pairs(grid) == CIGA_PAIRS
    others = [axis for axis in sweep.grid if axis not in ("pretrain_dataset", "dataset")]
    per_pair = math.prod(len(sweep.grid[axis]) for axis in others)
    assert len(grid.cells()) == 3 * per_pair
    for pair in CIGA_PAIRS:
        cells = [cell for cell in grid.cells() if (cell["pretrain_dataset"], cell["dataset"]) == pair]
        assert len({tuple(cell[axis] for axis in others) for cell in cells}) == per_pair


def test_tunes_search_space_yields_the_paired_cells_not_their_product() -> None:
    """What Tune would run (its variant generator, no Ray started) is the grid's cells, once each."""
    from ray.tune.experiment import Experiment

    from orchestrator.resources import ResourcePlan
    from orchestrator.tune_driver import param_space, search_config

    grid = apply_overrides(SWEEPS["ablation_imagesize"], [], smoke=True)
    tune_config = search_config(grid, ResourcePlan(1, 1, 0, 2), grid.display_axes)
    generator = tune_config.search_alg
    generator.add_configurations([Experiment("paired", lambda config: None, config=param_space(grid),
                                             num_samples=tune_config.num_samples)])
    trials = []
    while (trial := generator.next_trial()) is not None:
        trials.append(tuple(flat_value(trial.config, axis) for axis in grid.axes))
    assert sorted(trials) == sorted(tuple(cell.values()) for cell in grid.cells())
    assert len(trials) == 3 * 3 * 2  # pairs x methods x image sizes


def test_the_dry_run_shows_the_pretrain_to_evaluation_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ablation_batchsize", "--dry-run"]) == 0
    out = capsys.readouterr().out
    lines = out.split("pretrain -> evaluation (paired axes pretrain_dataset, dataset", 1)[1].splitlines()[1:4]
    assert [line.split() for line in lines] == [
        ["chestxray14", "->", "covid19_radiography", "12", "trial(s)"],
        ["ham10000", "->", "ham10000", "12", "trial(s)"],
        ["dermamnist", "->", "dermamnist", "12", "trial(s)"]]


def test_the_smoke_run_substitutes_the_pretraining_dataset_too(tmp_path, capsys) -> None:
    (tmp_path / "chestxray14").mkdir()
    (tmp_path / "chestxray14" / "Data_Entry_2017.csv").write_text("Image Index,Finding Labels,Patient ID\n")
    grid = apply_overrides(SWEEPS["ablation_batchsize"], [f"data_root={tmp_path}"], smoke=True)
    grid, _ = substitute_missing_datasets(grid)
    assert data_pairs(grid) == {("chestxray14", "shapes"), ("shapes", "shapes")}  # on disk: kept
    empty = tmp_path / "empty"
    assert main(["ablation_batchsize", "--dry-run", "--smoke", "--set", f"data_root={empty}"]) == 0
    out = capsys.readouterr().out
    assert f"smoke: dataset chestxray14 (not under {empty}/) -> digits" in out
    assert "  digits -> shapes " in out and "  shapes -> shapes " in out


def test_setting_one_axis_of_a_pair_is_refused_both_replace_the_pairs() -> None:
    refusal = r"--set dataset alone would cross .*chestxray14 -> covid19_radiography.*--set pretrain_dataset="
    with pytest.raises(ConfigError, match=refusal):
        apply_overrides(SWEEPS["ablation_imagesize"], ["dataset=cifar10"])
    grid = apply_overrides(SWEEPS["ablation_imagesize"], ["dataset=cifar10", "pretrain_dataset=cifar10"])
    assert grid.paired == () and data_pairs(grid) == {("cifar10", "cifar10")}


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
