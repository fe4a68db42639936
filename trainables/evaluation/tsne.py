"""A t-SNE plot of embeddings coloured by class, written as a PNG artifact.

Subsampled to at most `max_points` points, so it takes seconds. Drawn on a matplotlib Figure
with the Agg canvas directly: no pyplot, no global backend switch, safe on a headless worker.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.manifold import TSNE

MAX_POINTS = 1000


def tsne_embedding(features: torch.Tensor, seed: int = 0) -> np.ndarray:
    """2-D t-SNE coordinates (N, 2) of features (N, D); perplexity capped below N."""
    points = features.detach().double().cpu().numpy()
    perplexity = min(30.0, max(1.0, (len(points) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)


def tsne_points(features: torch.Tensor, labels: torch.Tensor, max_points: int = MAX_POINTS,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE coordinates (M, 2) and labels (M,) of a random subset of at most `max_points` of
    features (N, D), drawn with `seed`."""
    if len(features) > max_points:
        keep = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))[:max_points]
        features, labels = features[keep], labels[keep]
    return tsne_embedding(features, seed), labels.cpu().numpy()


def plot_tsne(features: torch.Tensor, labels: torch.Tensor, path: str | Path,
              class_names: Sequence[str] | None = None, max_points: int = MAX_POINTS,
              title: str = "t-SNE of test embeddings", seed: int = 0) -> Path:
    """Write a t-SNE scatter of features (N, D), one colour per class with a legend; return the path.

    A random subset of at most `max_points` points (drawn with `seed`) is embedded.
    """
    return draw_tsne(*tsne_points(features, labels, max_points, seed), path, class_names, title)


def draw_tsne(coordinates: np.ndarray, labels: np.ndarray, path: str | Path,
              class_names: Sequence[str] | None = None, title: str = "t-SNE of test embeddings") -> Path:
    """Write the scatter of t-SNE coordinates (M, 2), coloured by labels (M,); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    coordinates, labels_numpy = np.asarray(coordinates), np.asarray(labels)

    figure = Figure(figsize=(6, 6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    classes = np.unique(labels_numpy)
    palette = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for index, label in enumerate(classes):
        members = labels_numpy == label
        name = class_names[label] if class_names is not None else str(label)
        axes.scatter(coordinates[members, 0], coordinates[members, 1], s=8, alpha=0.7,
                     color=palette(index % palette.N), label=name)
    axes.set_title(title)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.legend(loc="best", fontsize="small", markerscale=2, title="class")
    figure.tight_layout()
    figure.savefig(path, format="png", metadata={"Title": title})  # the title, readable without OCR
    return path
