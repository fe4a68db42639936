"""Split policies: which images of a decoded pool are train, val and test for a seed.

- "default": the dataset's own protocol. An official train/val/test split is kept; an official
  train/test split keeps its test set and draws a stratified `VAL_FRACTION_OF_TRAIN` of the
  official train set (at least one image per class) as val; a dataset with groups (HAM10000's
  lesion_id) is split 60/20/20, stratified by class and grouped, so that no group sits in two
  splits; anything else is split 60/20/20 stratified by class.
- "random": 60/20/20 stratified by class over all images, ignoring official splits and groups
  (the plain random split of the BiT + SimSiam study on HAM10000).

Every policy is a pure function of (labels, official split, groups, seed).
"""

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from trainables.data.pool import TEST, TRAIN, VAL

SPLIT_POLICIES = ("default", "random")
VAL_FRACTION_OF_TRAIN = 0.1

Indices = tuple[np.ndarray, np.ndarray, np.ndarray]


def stratified_split(labels: np.ndarray, seed: int,
                     fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> Indices:
    """Indices of a stratified train/val/test split, identical for the same labels and seed."""
    indices = np.arange(len(labels))
    train_fraction, val_fraction, test_fraction = fractions
    train_val, test = train_test_split(
        indices, test_size=test_fraction, stratify=labels, random_state=seed
    )
    train, val = train_test_split(
        train_val,
        test_size=val_fraction / (train_fraction + val_fraction),
        stratify=labels[train_val],
        random_state=seed,
    )
    return np.sort(train), np.sort(val), np.sort(test)


def _one_grouped_fold(indices: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held out): about 1/folds of `indices`, whole groups only, class proportions kept."""
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    rest, held_out = next(splitter.split(indices, labels[indices], groups[indices]))
    return indices[rest], indices[held_out]


def grouped_stratified_split(labels: np.ndarray, groups: np.ndarray, seed: int) -> Indices:
    """60/20/20 split stratified by class in which no group id appears in two splits.

    The test set is one fold of a 5-fold StratifiedGroupKFold, val one fold of a 4-fold split of
    the rest: both 20% of the images, up to whole groups.
    """
    train_val, test = _one_grouped_fold(np.arange(len(labels)), labels, groups, 5, seed)
    train, val = _one_grouped_fold(train_val, labels, groups, 4, seed)
    return np.sort(train), np.sort(val), np.sort(test)


def split_pool(labels: np.ndarray, official_split: np.ndarray | None, groups: np.ndarray | None,
               policy: str, seed: int) -> Indices:
    """Train/val/test indices into a pool's rows for a policy in SPLIT_POLICIES (see module doc)."""
    if policy not in SPLIT_POLICIES:
        raise ValueError(f"unknown split policy {policy!r}; valid policies: {', '.join(SPLIT_POLICIES)}")
    if policy == "random":
        return stratified_split(labels, seed)
    if official_split is not None:
        train, val, test = (np.flatnonzero(official_split == part) for part in (TRAIN, VAL, TEST))
        if len(val) == 0:
            val_count = max(round(VAL_FRACTION_OF_TRAIN * len(train)), len(np.unique(labels[train])))
            train, val = train_test_split(train, test_size=val_count, stratify=labels[train],
                                          random_state=seed)
        return np.sort(train), np.sort(val), np.sort(test)
    if groups is not None:
        return grouped_stratified_split(labels, groups, seed)
    return stratified_split(labels, seed)


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of `fraction` of each class (at least one image per class), fixed by seed.

    Used for the probe's labelled training set: `fraction` 0.1 keeps 10% of every class.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"bad label_fraction {fraction}; it must be in (0, 1]")
    if fraction == 1:
        return np.arange(len(labels))
    generator = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        keep = max(1, round(fraction * len(members)))
        chosen.append(generator.permutation(members)[:keep])
    return np.sort(np.concatenate(chosen))
