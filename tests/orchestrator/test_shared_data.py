"""The driver decodes a sweep's data once; trials train from Ray's object store, not data_root."""

import json
import shutil
from pathlib import Path

import numpy as np
import ray
import ray.train
import torch
from PIL import Image

from orchestrator.datasets import PoolKey, decode_pools, share
from orchestrator.resources import ResourcePlan
from orchestrator.tune_driver import build_trainer
from trainables import metrics
from trainables.config import TrialConfig
from trainables.data import DatasetNotFoundError, decoded_pool, load_dataset, pool_from_arrays, pool_to_arrays
from trainables.data.pool import decode_image
from trainables.trial_data import trial_data


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
    evaluation = load_dataset("imagefolder", 16, 0, data_root)
    test_rows = {image.numpy().tobytes() for image in evaluation.test_images}
    copied = next(path for path in sorted(data_root.rglob("*.png"))
                  if np.ascontiguousarray(decode_image(path, 16).transpose(2, 0, 1)).tobytes() in test_rows)
    shutil.copy(copied, unlabeled / "copied_from_test.png")
    decoded = decode_pools([config, config])  # equal keys: decoded once, one object per pool
    assert list(decoded) == [PoolKey.evaluation(config), PoolKey.pretraining(config)]
    expected, expected_pool = trial_data(config, *decoded.values())
    shared = share(decoded)
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
                  shared_data=shared[PoolKey.evaluation(config)],
                  shared_pretraining=shared[PoolKey.pretraining(config)]).fit()

    reports = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r[metrics.EPOCH] for r in reports if metrics.PRETRAIN_LOSS in r] == [1, 2]
    assert reports[0][metrics.SPLIT_HASH] == expected.split_hash()  # the very images the driver decoded
    # Pretrained on the 40 unlabeled images: the 41st file, a copy of a test image, was removed.
    assert reports[0][metrics.PRETRAIN_IMAGES] == 40 and reports[0][metrics.PRETRAIN_OVERLAP_REMOVED] == 1
    assert reports[0][metrics.PRETRAIN_HASH] == expected_pool.content_hash()
    assert reports[-1][metrics.LINEAR_TEST_ACCURACY] > 0.8  # dark vs bright: the data is real


def test_a_pool_survives_the_object_store_unchanged_and_is_read_in_place(local_ray) -> None:
    pool = decoded_pool("digits", 16, "data")
    arrays = ray.get(ray.put(pool_to_arrays(pool)))
    restored = pool_from_arrays(arrays)
    assert torch.equal(restored.images, pool.images) and restored.class_names == pool.class_names
    assert np.array_equal(restored.labels, pool.labels)
    # Zero-copy: the tensor is a view of the object store's buffer, not a copy of it.
    assert restored.images.data_ptr() == arrays["images"].ctypes.data
    assert not arrays["images"].flags.writeable
    # The splits a worker cuts from it are the ones a worker loading the files itself would use.
    config = TrialConfig(dataset="digits", image_size=16, seed=3)
    assert trial_data(config, restored)[0].split_hash() == load_dataset("digits", 16, 3).split_hash()
