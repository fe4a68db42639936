"""The driver decodes a sweep's data once; trials train from Ray's object store, not data_root."""

import json
import shutil
from pathlib import Path

import numpy as np
import ray
import ray.train
from PIL import Image

from orchestrator.datasets import (
    DataKey,
    PretrainKey,
    decode_datasets,
    decode_pretraining_pools,
    share,
    share_pretraining,
)
from orchestrator.resources import ResourcePlan
from orchestrator.tune_driver import build_trainer
from trainables import metrics
from trainables.config import TrialConfig
from trainables.data import DatasetNotFoundError, ImageSplits, load_dataset
from trainables.data.pool import decode_image


def write_image_folder(root: Path, per_class: int = 40) -> None:
    """Two classes a probe can tell apart: dark and bright images with noise."""
    generator = np.random.default_rng(0)
    for label, level in (("dark", 60), ("bright", 190)):
        (root / label).mkdir(parents=True)
        for index in range(per_class):
            pixels = np.clip(generator.normal(level, 30, size=(20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{index}.png")


def test_workers_train_from_the_object_store_after_data_root_is_gone(local_ray, record_reports,
                                                                    tmp_path: Path) -> None:
    data_root, unlabeled = tmp_path / "images", tmp_path / "unlabeled"
    write_image_folder(data_root)
    # Pretraining on a folder with no classes: images at any depth, one of them a copy of an
    # evaluation test image, which must be removed and counted.
    (unlabeled / "scans" / "day2").mkdir(parents=True)
    generator = np.random.default_rng(7)
    for index in range(40):
        pixels = generator.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(unlabeled / ("scans" if index % 2 else "scans/day2") / f"{index}.png")
    config = TrialConfig.from_dict({
        "method": "simclr", "dataset": "imagefolder", "data_root": str(data_root), "image_size": 16,
        "pretrain_dataset": "unlabeled", "pretrain_data_root": str(unlabeled),
        "batch_size": 32, "epochs": 2, "probe_epochs": 5, "probe_repeats": 1,
        "method_params": {"projection_dim": 32, "projection_hidden_dim": 32},
    })
    decoded = decode_datasets([config, config])  # equal keys: decoded once
    assert list(decoded) == [DataKey.of(config)]
    expected_hash = decoded[DataKey.of(config)].split_hash()
    test_rows = {image.numpy().tobytes() for image in decoded[DataKey.of(config)].test_images}
    copied = next(path for path in sorted(data_root.rglob("*.png"))
                  if np.ascontiguousarray(decode_image(path, 16).transpose(2, 0, 1)).tobytes() in test_rows)
    shutil.copy(copied, unlabeled / "copied_from_test.png")
    pools = decode_pretraining_pools([config], decoded)
    shared, shared_pretraining = share(decoded), share_pretraining(pools)
    shutil.rmtree(data_root)  # no worker can read the files now
    shutil.rmtree(unlabeled)
    try:
        load_dataset("imagefolder", 16, 0, data_root)
    except DatasetNotFoundError:
        pass
    else:
        raise AssertionError("the image folder should be gone")

    log = tmp_path / "reports.jsonl"
    plan = ResourcePlan(num_workers=1, cpus_per_worker=1, gpus_per_worker=0, max_concurrent_trials=1)
    build_trainer(config, "shared", str(tmp_path / "storage"), plan, callbacks=[record_reports(log)],
                  shared_data=shared[DataKey.of(config)],
                  shared_pretraining=shared_pretraining[PretrainKey.of(config)]).fit()

    reports = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r[metrics.EPOCH] for r in reports if metrics.PRETRAIN_LOSS in r] == [1, 2]
    assert reports[0][metrics.SPLIT_HASH] == expected_hash  # the very images the driver decoded
    # Pretrained on the 40 unlabeled images: the 41st file, a copy of a test image, was removed.
    assert reports[0][metrics.PRETRAIN_IMAGES] == 40 and reports[0][metrics.PRETRAIN_OVERLAP_REMOVED] == 1
    assert reports[0][metrics.PRETRAIN_HASH] == pools[PretrainKey.of(config)].content_hash()
    assert reports[-1][metrics.LINEAR_TEST_ACCURACY] > 0.8  # dark vs bright: the data is real


def test_splits_survive_the_object_store_unchanged_and_read_in_place(local_ray) -> None:
    splits = load_dataset("digits", 16, 0)
    reference = ray.put(splits.to_arrays())
    arrays = ray.get(reference)
    restored = ImageSplits.from_arrays(arrays)
    assert restored.split_hash() == splits.split_hash()
    assert restored.class_names == splits.class_names
    # Zero-copy: the tensor is a view of the object store's buffer, not a copy of it.
    assert restored.train_images.data_ptr() == arrays["train_images"].ctypes.data
    assert not arrays["train_images"].flags.writeable
