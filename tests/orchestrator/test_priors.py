"""The driver finds a trial's prior file, ships its bytes, and the worker starts from those weights
with the driver's copy gone (orchestrator.priors, trainables.shipped_priors)."""

import dataclasses
import pickle
import shutil
from pathlib import Path

import torch

from orchestrator.priors import prior_file, resolve_priors
from trainables.config import TrialConfig
from trainables.initializations import build_initialized_backbone
from trainables.shipped_priors import PriorKey, local_prior_file
from trainables.training import build_trial_backbone


def write_cbr_nano_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The CBR networks have no public ImageNet weights: a user's own file, as weights_dir holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    state_dict = build_initialized_backbone("cbr_nano", "random", seed=5)[0].state_dict()
    torch.save(state_dict, folder / "cbr_nano.in1k.pth")
    return state_dict


def assert_same_weights(backbone: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    loaded = backbone.state_dict()
    assert expected.keys() <= loaded.keys()
    assert all(torch.equal(loaded[name], tensor) for name, tensor in expected.items())


def test_a_weights_dir_prior_loads_on_the_worker_after_the_drivers_folder_is_gone(tmp_path: Path) -> None:
    expected = write_cbr_nano_weights(tmp_path / "weights")
    config = TrialConfig(init="imagenet", backbone="cbr_nano", weights_dir=str(tmp_path / "weights"), seed=1)
    other_seed = dataclasses.replace(config, seed=2)
    priors = resolve_priors([config, other_seed])
    assert list(priors) == [PriorKey.of(config)]  # one copy for both trials
    shipped = pickle.loads(pickle.dumps(priors[PriorKey.of(config)]))  # as Ray's object store carries it
    shutil.rmtree(tmp_path / "weights")

    with local_prior_file(config, shipped) as local:
        assert local.weights_dir != config.weights_dir
        backbone, _, report = build_trial_backbone(local)
    assert "cbr_nano.in1k" in report and "shipped-prior-" in report
    assert_same_weights(backbone, expected)
    assert not Path(local.weights_dir).exists()  # removed with the block


def test_a_weights_path_file_ships_under_its_own_name(tmp_path: Path) -> None:
    expected = write_cbr_nano_weights(tmp_path / "mine")
    weights_path = tmp_path / "mine" / "cbr_nano.in1k.pth"
    config = TrialConfig(init="imagenet", backbone="cbr_nano", weights_path=str(weights_path))
    assert prior_file(config) == ("weights_path", "cbr_nano.in1k.pth", weights_path)
    shipped = resolve_priors([config])[PriorKey.of(config)]
    weights_path.unlink()
    with local_prior_file(config, shipped) as local:
        assert Path(local.weights_path).name == "cbr_nano.in1k.pth"
        backbone, _, _ = build_trial_backbone(local)
    assert_same_weights(backbone, expected)


def test_nothing_is_shipped_for_random_init_or_a_file_the_driver_lacks(tmp_path: Path) -> None:
    random = TrialConfig(init="random")
    missing = TrialConfig(init="imagenet", backbone="cbr_nano", weights_dir=str(tmp_path / "empty"))
    assert resolve_priors([random, missing]) == {}
    with local_prior_file(random, None) as local:
        assert local is random
