"""The data of a sweep, decoded once in the driver and handed to every trial through Ray.

Worker nodes never read `data_root`: the driver (on the head, where the data is) decodes each
dataset the grid needs once per image size (through the on-disk cache under `data_root/.cache`)
and puts the decoded pool into Ray's object store as numpy arrays: one object per (dataset,
folder, image size), whatever the grid's seeds, split policies and pretraining fractions, and one
per pretraining dataset of its own. Each trial's workers cut their seed's splits from the
evaluation pool (trainables.data.split_dataset) and their pretraining pool from its source (its
train split, less the images equal to an evaluation val/test image, then the seeded fraction:
trainables.data.load_pretraining_pool). Ray copies an object to a node once, and every worker on
that node reads it in place (zero-copy shared memory); the splits a worker gathers from it are
its own copy.

Before anything starts, the driver draws every distinct split and pretraining pool once and drops
it, so that a dataset that cannot be split, or a pool the overlap empties, is refused now with its
one line, and the terminal says how many images each trial will see.
"""

import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from trainables.config import TrialConfig
from trainables.data import LABELED_DATASETS, DecodedPool, decoded_pool, pool_to_arrays, split_indices
from trainables.trial_data import trial_data


class PoolKey(NamedTuple):
    """One decoded pool, and one object in Ray's object store: a dataset's files at one image size."""

    dataset: str
    image_size: int
    data_root: str
    download: bool

    @classmethod
    def evaluation(cls, config: TrialConfig) -> "PoolKey":
        return cls(config.dataset, config.image_size, config.data_root, config.download)

    @classmethod
    def pretraining(cls, config: TrialConfig) -> "PoolKey | None":
        """The pool of the trial's own pretraining dataset; None where it pretrains on its
        evaluation's train split (no pretrain_dataset, or the evaluation's own files)."""
        if config.pretrain_dataset is None or config.pretrains_on_evaluation_files:
            return None
        return cls(config.resolved_pretrain_dataset, config.image_size, config.resolved_pretrain_data_root,
                   config.download)

    def describe(self) -> str:
        return f"{self.dataset} ({self.data_root}) at {self.image_size} px"


def planned_pools(configs: Iterable[TrialConfig]) -> list[PoolKey]:
    """The pools the trials read, each once, in trial order: what goes into the object store."""
    keys = [key for config in configs for key in (PoolKey.evaluation(config), PoolKey.pretraining(config))]
    return [key for key in dict.fromkeys(keys) if key is not None]


def decode_pools(configs: Iterable[TrialConfig]) -> dict[PoolKey, DecodedPool]:
    """Each planned pool, decoded here; then every trial's data drawn from them once (see the
    module doc). A missing or refused dataset raises its one-line error now, before any trial
    starts. One progress line per pool, per split and per pretraining pool."""
    configs = list(configs)
    keys = planned_pools(configs)
    first_use = {PoolKey.evaluation(config): config for config in reversed(configs)}
    pools = {}
    for number, key in enumerate(keys, start=1):
        started = time.perf_counter()
        print(f"data [{number}/{len(keys)}] {key.describe()} ...", end="", flush=True)
        config = first_use.get(key)  # an evaluation pool is cached only once it splits
        accept = None if config is None or key.dataset not in LABELED_DATASETS else (
            lambda pool, config=config: split_indices(config.dataset, config.data_root, pool, config.split,
                                                      config.seed))
        try:
            pool = decoded_pool(key.dataset, key.image_size, key.data_root, download=key.download,
                                accept=accept)
        except BaseException:
            print(" refused", flush=True)  # the error's own line follows, not glued onto this one
            raise
        pools[key] = pool
        print(f" {len(pool.labels)} images, {pool.images.nbytes / 2**20:.0f} MiB, "
              f"{time.perf_counter() - started:.1f} s", flush=True)
    check_trial_data(configs, pools)
    return pools


def check_trial_data(configs: list[TrialConfig], pools: dict[PoolKey, DecodedPool]) -> None:
    """Draw each distinct split and pretraining pool as the trials' workers will (trainables.
    trial_data), and drop it: its refusal, or its image counts, is said here."""
    distinct: dict[tuple, TrialConfig] = {}
    for config in configs:
        own_pool = config.pretrain_dataset is not None or config.pretrain_fraction < 1
        pretraining = (config.resolved_pretrain_dataset, config.resolved_pretrain_data_root,
                       config.pretrain_fraction) if own_pool else None
        distinct.setdefault((PoolKey.evaluation(config), config.split, config.seed, pretraining), config)
    for number, config in enumerate(distinct.values(), start=1):
        print(f"trial data [{number}/{len(distinct)}] {config.dataset} at {config.image_size} px, seed "
              f"{config.seed}, {config.split} split ...", end="", flush=True)
        try:
            source = PoolKey.pretraining(config)
            data, pool = trial_data(config, pools[PoolKey.evaluation(config)],
                                    None if source is None else pools[source])
        except BaseException:
            print(" refused", flush=True)
            raise
        counts = (len(data.train_images), len(data.val_images), len(data.test_images))
        line = " {} / {} / {} train / val / test".format(*counts)
        if pool is not None:
            line += (f"; pretraining on {len(pool.images)} images of {config.resolved_pretrain_dataset}"
                     f" ({pool.overlap_removed} equal to evaluation val/test images removed)")
        print(line, flush=True)


def share(pools: dict[PoolKey, DecodedPool]) -> dict[PoolKey, Any]:
    """Put each pool into Ray's object store: {key: ObjectRef}. The sweep driver owns them, so they
    live as long as the sweep."""
    import ray

    return {key: ray.put(pool_to_arrays(pool)) for key, pool in pools.items()}
