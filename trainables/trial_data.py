"""A trial's data: its seed's labeled splits and the pool SSL pretrains on, from its config.

The worker calls it on the pools the driver shared through the object store (or, without them,
on the files under data_root); the driver calls it once per trial before Ray starts, to refuse a
trial whose data cannot be split. Pure torch/numpy: it runs where Ray is not installed.
"""

from trainables.config import TrialConfig
from trainables.data import (
    DecodedPool,
    ImageSplits,
    PretrainingPool,
    load_dataset,
    load_pretraining_pool,
    split_dataset,
)


def trial_data(config: TrialConfig, evaluation_pool: DecodedPool | None = None,
               pretraining_source: DecodedPool | None = None) -> tuple[ImageSplits, PretrainingPool | None]:
    """The trial's splits for its seed and its pretraining pool (None: the evaluation's train
    split), cut from decoded pools where the driver shared them, else loaded from data_root."""
    if evaluation_pool is not None:
        data = split_dataset(config.dataset, evaluation_pool, config.seed, config.data_root,
                             split=config.split)
    else:
        data = load_dataset(config.dataset, config.image_size, config.seed, config.data_root,
                            split=config.split, download=config.download)
    if config.pretrain_dataset is None and config.pretrain_fraction == 1:
        return data, None
    return data, load_pretraining_pool(
        config.resolved_pretrain_dataset, config.resolved_pretrain_data_root, data,
        same_files=config.pretrains_on_evaluation_files, image_size=config.image_size, seed=config.seed,
        fraction=config.pretrain_fraction, download=config.download, source=pretraining_source)
