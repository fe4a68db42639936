"""The driver shares one decoded pool per (dataset, image size); workers cut their seed's splits
from it by the split rule (no Ray here: the Ray path is test_shared_data.py)."""

import pytest
import torch

from orchestrator.datasets import PoolKey, decode_pools, planned_pools
from orchestrator.grid import Grid
from trainables.config import TrialConfig
from trainables.data import DatasetLabelError, decoded_pool, pool_from_arrays, pool_to_arrays
from trainables.data.pretraining import seeded_subset
from trainables.data.splits import split_pool
from trainables.trial_data import trial_data


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
def test_the_worker_side_split_and_fraction_follow_the_split_rule(seed: int) -> None:
    config = TrialConfig.from_dict({"dataset": "shapes", "image_size": 16, "seed": seed,
                                    "pretrain_dataset": "shapes", "pretrain_fraction": 0.5})
    # The pool as a worker reads it: through the object store's numpy arrays (here without Ray).
    shared = pool_from_arrays(pool_to_arrays(decoded_pool("shapes", 16, "data")))
    data, pretraining = trial_data(config, shared)
    # The splits are the split rule's, applied to the whole pool the driver decoded.
    pool = decoded_pool("shapes", 16, "data")
    train, val, test = split_pool(pool.labels, pool.official_split, pool.groups, "default", seed)
    for images, positions in ((data.train_images, train), (data.val_images, val), (data.test_images, test)):
        assert torch.equal(images, pool.images[torch.as_tensor(positions, dtype=torch.int64)])
    # The pretraining half is the seeded subset of that train split.
    half = seeded_subset(len(data.train_images), 0.5, seed)
    assert pretraining is not None and torch.equal(pretraining.images, data.train_images[half])
    assert len(pretraining.images) == len(data.train_images) // 2
    unshared, unshared_pretraining = trial_data(config)  # a worker with no shared data loads the same
    assert unshared.split_hash() == data.split_hash()
    assert unshared_pretraining.content_hash() == pretraining.content_hash()


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
