"""The driver shares one decoded pool per (dataset, image size); workers cut their seed's splits
from it exactly as the driver used to (no Ray here: the Ray path is test_shared_data.py)."""

import pytest

from orchestrator.datasets import PoolKey, decode_pools, planned_pools
from orchestrator.grid import Grid
from trainables.config import TrialConfig
from trainables.data import DatasetLabelError, decoded_pool, pool_from_arrays, pool_to_arrays
from trainables.loop import trial_data

# Computed with the driver-side code this replaces (orchestrator.datasets.decode_datasets and
# decode_pretraining_pools, which split and subset on the driver, one object per seed): shapes at
# 16 px, its split hash and the pretraining subset's content hash at pretrain_fraction 0.5.
DRIVER_SIDE_SPLIT_HASH = {0: "63803416746f2ca5", 1: "a8eec4416ad94ea0"}
DRIVER_SIDE_HALF_POOL_HASH = {0: "43312a6e86787a53", 1: "a716e6ceb4969609"}


def test_one_pool_per_dataset_and_image_size_whatever_the_seeds_and_fractions() -> None:
    grid = Grid(axes={"seed": [0, 1], "pretrain_fraction": [0.5, 1.0], "image_size": [16, 24]},
                params={"dataset": "shapes", "pretrain_dataset": "digits", "method": "simclr"})
    configs = grid.trial_configs()
    assert len(configs) == 8
    # The pool of a trial's own pretraining dataset, and none where it pretrains on its own files.
    shapes, digits = (PoolKey(name, 16, "data", False) for name in ("shapes", "digits"))
    larger = [key._replace(image_size=24) for key in (shapes, digits)]
    assert planned_pools(configs) == [shapes, digits, *larger]
    own_files = [TrialConfig.from_dict({**config.to_dict(), "pretrain_dataset": "shapes"})
                 for config in configs]
    assert planned_pools(own_files) == [shapes, larger[0]]

    decoded = decode_pools(configs)  # what the sweep puts into the object store: one object each
    assert list(decoded) == planned_pools(configs)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_worker_side_split_and_fraction_equal_the_old_driver_side_ones(seed: int) -> None:
    config = TrialConfig.from_dict({"dataset": "shapes", "image_size": 16, "seed": seed,
                                    "pretrain_dataset": "shapes", "pretrain_fraction": 0.5})
    # The pool as a worker reads it: through the object store's numpy arrays (here without Ray).
    shared = pool_from_arrays(pool_to_arrays(decoded_pool("shapes", 16, "data")))
    data, pretraining = trial_data(config, shared)
    assert data.split_hash() == DRIVER_SIDE_SPLIT_HASH[seed]
    assert pretraining is not None and pretraining.content_hash() == DRIVER_SIDE_HALF_POOL_HASH[seed]
    assert len(pretraining.images) == len(data.train_images) // 2
    unshared, _ = trial_data(config)  # a worker with no shared data loads the same splits
    assert unshared.split_hash() == data.split_hash()


def test_a_pool_that_cannot_be_split_is_refused_by_the_driver_before_anything_starts(
        tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    for label, count in (("a", 2), ("b", 10)):
        (tmp_path / label).mkdir()
        for index in range(count):
            Image.new("RGB", (8, 8), (index * 20, 0, 0)).save(tmp_path / label / f"{index}.png")
    config = TrialConfig.from_dict({"dataset": "imagefolder", "data_root": str(tmp_path), "image_size": 16})
    with pytest.raises(DatasetLabelError, match="too few images of a"):
        decode_pools([config])
    assert capsys.readouterr().out.rstrip().endswith("refused")
    assert not (tmp_path / ".cache").exists() or not any((tmp_path / ".cache").iterdir())
