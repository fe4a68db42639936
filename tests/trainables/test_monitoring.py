"""The kNN monitor's schedule and its bounded reference set."""

import torch

from trainables.config import TrialConfig
from trainables.monitoring import KNN_REFERENCE_IMAGES, is_monitored_epoch, knn_reference_indices


def test_monitored_epochs_are_the_initialization_every_kth_and_the_last() -> None:
    assert [epoch for epoch in range(13) if is_monitored_epoch(epoch, 12, 5)] == [0, 5, 10, 12]
    assert [epoch for epoch in range(4) if is_monitored_epoch(epoch, 3, 1)] == [0, 1, 2, 3]
    assert [epoch for epoch in range(3) if is_monitored_epoch(epoch, 2, TrialConfig.knn_every)] == [0, 2]


def test_reference_set_is_a_fixed_seeded_subset_of_bounded_size() -> None:
    indices = knn_reference_indices(10_000, seed=3)
    assert len(indices) == KNN_REFERENCE_IMAGES == len(set(indices.tolist()))
    assert torch.equal(indices, indices.sort().values)
    assert 0 <= int(indices.min()) and int(indices.max()) < 10_000
    assert torch.equal(indices, knn_reference_indices(10_000, seed=3))  # the same every epoch
    assert not torch.equal(indices, knn_reference_indices(10_000, seed=4))
    # Small splits and size None keep every image, whatever the seed.
    assert torch.equal(knn_reference_indices(100, seed=3), torch.arange(100))
    assert torch.equal(knn_reference_indices(10_000, seed=3, size=None), torch.arange(10_000))
