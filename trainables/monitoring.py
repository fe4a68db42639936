"""What the per-epoch kNN monitor costs: which epochs it runs in, and its reference set.

The monitor embeds a reference set of training images and the validation split, and scores the
validation images by a weighted kNN vote among the references. Over the whole training split
every epoch, that forward pass is about a sixth of a two-view epoch's compute. Two bounds keep
it to a few percent of training time (`python benchmarks/monitoring.py` measures it):

- the reference set is a fixed, seeded subset of at most KNN_REFERENCE_IMAGES training images,
  the same in every monitored epoch and in the final evaluation's repeat of the monitor;
- the monitor runs every `knn_every` epochs (TrialConfig), and always at epoch 0 (the
  initialization) and at the last epoch. Other epochs report no kNN value at all.
"""

import torch

KNN_REFERENCE_IMAGES = 4096  # training images the monitor's kNN vote draws its neighbours from
DEFAULT_KNN_EVERY = 5


def is_monitored_epoch(epoch: int, epochs: int, knn_every: int) -> bool:
    """Epoch 0 (the initialization), every `knn_every`-th epoch, and the last one."""
    return epoch % knn_every == 0 or epoch == epochs


def knn_reference_indices(count: int, seed: int, size: int | None = KNN_REFERENCE_IMAGES) -> torch.Tensor:
    """Sorted indices of a seeded random subset of `size` of `count` training images (all of
    them when count <= size, or size is None)."""
    if size is None or count <= size:
        return torch.arange(count)
    chosen = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:size]
    return chosen.sort().values
