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
from trainables.data import ImageSplits, PretrainingPool, load_dataset, load_pretraining_pool


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
        try:
            splits = load_dataset(key.dataset, key.image_size, key.seed, key.data_root, split=key.split,
                                  download=key.download)
        except BaseException:
            print(" refused", flush=True)  # the error's own line follows, not glued onto this one
            raise
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


class PretrainKey(NamedTuple):
    """What fixes a trial's pretraining pool (only for trials with a pretrain_dataset of their own)."""

    data: DataKey
    dataset: str
    data_root: str
    fraction: float

    @classmethod
    def of(cls, config: TrialConfig) -> "PretrainKey | None":
        if config.pretrain_dataset is None and config.pretrain_fraction == 1:
            return None  # today's behaviour: the evaluation's own train split
        return cls(DataKey.of(config), config.resolved_pretrain_dataset, config.resolved_pretrain_data_root,
                   config.pretrain_fraction)

    @property
    def same_files(self) -> bool:
        return self.dataset == self.data.dataset and self.data_root == self.data.data_root


def decode_pretraining_pools(configs: Iterable[TrialConfig],
                             decoded: dict[DataKey, ImageSplits]) -> dict[PretrainKey, PretrainingPool]:
    """Each distinct PretrainKey's pool, decoded here against its evaluation splits (whose val and
    test images it must not hold); one progress line each."""
    keys = [key for key in dict.fromkeys(PretrainKey.of(config) for config in configs) if key is not None]
    pools = {}
    for number, key in enumerate(keys, start=1):
        print(f"pretraining data [{number}/{len(keys)}] {key.dataset} ({key.data_root}) for "
              f"{key.data.describe()} ...", end="", flush=True)
        try:
            pool = load_pretraining_pool(key.dataset, key.data_root, decoded[key.data],
                                         same_files=key.same_files, image_size=key.data.image_size,
                                         seed=key.data.seed, fraction=key.fraction,
                                         download=key.data.download)
        except BaseException:
            print(" refused", flush=True)
            raise
        pools[key] = pool
        print(f" {len(pool.images)} images, {pool.overlap_removed} equal to evaluation val/test images "
              "removed", flush=True)
    return pools


def share_pretraining(pools: dict[PretrainKey, PretrainingPool]) -> dict[PretrainKey, Any]:
    import ray

    return {key: ray.put(pool.to_arrays()) for key, pool in pools.items()}
