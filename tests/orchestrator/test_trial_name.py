"""Trial names: the axis values as they are, signs and exponents included, then the trial index;
short keys for common axes, values alone for the axes whose values name themselves. The final
table reads each name back from the trial's folder.

No Ray here: trial_name is a pure function of a trial's config and id, and ray.init is made to
fail so that this file can never join a running cluster.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import ray
from ray.tune import Result

from orchestrator.tune_driver import trial_display_name, trial_name


@dataclass
class StandInTrial:
    """What trial_name reads of a Tune Trial."""

    config: dict[str, Any] = field(default_factory=dict)
    trial_id: str = "a1b2c_00003"


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a trial name test started Ray")

    monkeypatch.setattr(ray, "init", refuse)
    yield


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1e12, "lr=1e+12_3"),
        (1e-12, "lr=1e-12_3"),
        (-0.5, "lr=-0.5_3"),
        (0.123456, "lr=0.123_3"),
    ],
)
def test_a_number_keeps_its_sign_and_its_exponents_sign(value: float, expected: str) -> None:
    assert trial_name(StandInTrial({"learning_rate": value}), ["learning_rate"]) == expected


def test_names_join_axes_use_the_last_part_of_a_nested_key_and_drop_the_random_prefix() -> None:
    trial = StandInTrial({"method": "simclr", "method_params": {"temperature": 2e+20}}, "f00ba_00012")
    name = trial_name(trial, ["method", "method_params.temperature"])
    assert name == "simclr_temperature=2e+20_12"


def test_characters_unsafe_in_folder_names_become_dashes() -> None:
    trial = StandInTrial({"weights_path": "ckpt/{method} v2:1.pth"})
    assert trial_name(trial, ["weights_path"]) == "weights_path=ckpt--method--v2-1.pth_3"


def test_without_axes_the_name_is_the_index() -> None:
    assert trial_name(StandInTrial(), []) == "3"


def test_names_are_short_and_two_trials_differ_before_any_cut() -> None:
    axes = ["method", "init", "dataset", "batch_size", "seed"]
    first = trial_name(StandInTrial({"method": "simclr", "init": "imagenet", "dataset": "dermamnist",
                                     "batch_size": 32, "seed": 0}, "f00ba_00000"), axes)
    second = trial_name(StandInTrial({"method": "simclr", "init": "imagenet", "dataset": "dermamnist",
                                      "batch_size": 1024, "seed": 1}, "f00ba_00001"), axes)
    assert first == "simclr_imagenet_dermamnist_bs=32_seed=0_0"
    assert second == "simclr_imagenet_dermamnist_bs=1024_seed=1_1"


def test_a_search_sweeps_random_trial_id_stays_whole() -> None:
    """Tune gives trials proposed by a searcher (Optuna) ids like "583547f7", with no index."""
    trial = StandInTrial(config={"learning_rate": 0.0763}, trial_id="583547f7")
    assert trial_name(trial, ["learning_rate"]) == "lr=0.0763_583547f7"


@pytest.mark.parametrize("trial_id", ["f00ba_00012", "583547f7"])  # a grid's id, a searcher's
def test_the_final_table_reads_the_trial_name_back_from_its_folder(trial_id: str) -> None:
    trial = StandInTrial({"method": "simclr", "learning_rate": 0.0763}, trial_id)
    name = trial_name(trial, ["method", "learning_rate"])
    folder = f"/storage/smoke/{name}_{trial_id}"  # tune_driver.search_config's trial_dirname_creator
    result = Result(metrics={}, checkpoint=None, error=None, path=folder)
    assert trial_display_name(result) == name
    assert trial_display_name(Result(metrics={}, checkpoint=None, error=None, path="")) == "?"
