"""The data of a sweep, decoded once in the driver and handed to every trial through Ray.

Worker nodes never read `data_root`: the driver (on the head, where the data is) decodes each
dataset x image size the grid needs once (through the on-disk cache under `data_root/.cache`),
splits it for each seed and split policy, and puts the splits into Ray's object store as numpy
arrays. Ray copies an object to a node once, and every worker on that node reads it in place
(zero-copy shared memory), where each worker used to decode and hold its own copy.
"""

import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from trainables.config import TrialConfig
from trainables.data import ImageSplits, load_dataset


class DataKey(NamedTuple):
    """What fixes a trial's splits: two trials with equal keys train on the same images."""

    dataset: str
    image_size: int
    seed: int
    split: str
    data_root: str
    download: bool

    @classmethod
    def of(cls, config: TrialConfig) -> "DataKey":
        return cls(config.dataset, config.image_size, config.seed, config.split, config.data_root,
                   config.download)

    def describe(self) -> str:
        return f"{self.dataset} at {self.image_size} px, seed {self.seed}, {self.split} split"


def decode_datasets(configs: Iterable[TrialConfig]) -> dict[DataKey, ImageSplits]:
    """Each distinct DataKey's splits, decoded here; a missing dataset raises its one-line error
    now, before any trial starts. Prints one progress line per dataset."""
    keys = list(dict.fromkeys(DataKey.of(config) for config in configs))
    decoded = {}
    for number, key in enumerate(keys, start=1):
        started = time.perf_counter()
        print(f"data [{number}/{len(keys)}] {key.describe()} ...", end="", flush=True)
        splits = load_dataset(key.dataset, key.image_size, key.seed, key.data_root, split=key.split,
                              download=key.download)
        decoded[key] = splits
        print(f" {len(splits.train_images) + len(splits.val_images) + len(splits.test_images)} images, "
              f"{size_in_bytes(splits) / 2**20:.0f} MiB, {time.perf_counter() - started:.1f} s", flush=True)
    return decoded


def size_in_bytes(splits: ImageSplits) -> int:
    return sum(getattr(splits, name).nbytes for name in ImageSplits.TENSOR_FIELDS)


def share(decoded: dict[DataKey, ImageSplits]) -> dict[DataKey, Any]:
    """Put each key's splits into Ray's object store: {key: ObjectRef}. The sweep driver owns
    them, so they live as long as the sweep."""
    import ray

    return {key: ray.put(splits.to_arrays()) for key, splits in decoded.items()}
