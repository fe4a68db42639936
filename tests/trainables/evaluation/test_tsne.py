"""t-SNE plot: writes a PNG that PIL can open, subsampled, in seconds."""

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainables.evaluation import tsne as eval_tsne
from trainables.evaluation.tsne import plot_tsne


def test_plot_tsne_writes_a_png_of_a_subsample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(600) % 3
    features = 4 * torch.eye(3, 16)[labels] + torch.randn(600, 16, generator=generator)
    embedded_counts = []

    def recording_embedding(points: torch.Tensor, seed: int = 0) -> np.ndarray:
        embedded_counts.append(len(points))
        return original(points, seed)

    original = eval_tsne.tsne_embedding
    monkeypatch.setattr(eval_tsne, "tsne_embedding", recording_embedding)
    started = time.perf_counter()

    path = plot_tsne(
        features, labels, tmp_path / "artifacts" / "tsne.png", class_names=["a", "b", "c"], max_points=150
    )

    assert time.perf_counter() - started < 20
    assert embedded_counts == [150]
    assert path == tmp_path / "artifacts" / "tsne.png"
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] > 100 and image.size[1] > 100


def test_tsne_embedding_separates_well_separated_clusters() -> None:
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(90) % 3
    features = 10 * torch.eye(3, 8)[labels] + 0.1 * torch.randn(90, 8, generator=generator)
    coordinates = eval_tsne.tsne_embedding(features)
    assert coordinates.shape == (90, 2)
    centres = np.stack([coordinates[labels.numpy() == c].mean(axis=0) for c in range(3)])
    spread = max(
        np.linalg.norm(coordinates[labels.numpy() == c] - centres[c], axis=1).max() for c in range(3)
    )
    closest_centres = min(np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i + 1, 3))
    assert closest_centres > spread
