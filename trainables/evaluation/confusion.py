"""The confusion matrix as a figure: counts in the cells, class names on both axes.

Cells are shaded by the fraction of their true class (the row), so a small class's errors show
as clearly as a large one's; the number in each cell is the count. Drawn on a matplotlib Figure
with the Agg canvas directly (no pyplot), like the t-SNE plot.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path,
                          title: str = "confusion matrix (test)") -> Path:
    """Write matrix[true][predicted] (counts) as a PNG with the class names on the axes; return the path."""
    counts = np.asarray(matrix, dtype=np.int64)
    if counts.shape != (len(class_names), len(class_names)):
        raise ValueError(f"a {counts.shape} confusion matrix does not fit {len(class_names)} class names")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    row_totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, row_totals, out=np.zeros(counts.shape), where=row_totals > 0)

    size = 2.5 + 0.45 * len(class_names)
    figure = Figure(figsize=(size + 1.0, size), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, shrink=0.8, label="fraction of the true class")
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, labels=[str(name) for name in class_names], rotation=45, ha="right")
    axes.set_yticks(ticks, labels=[str(name) for name in class_names])
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    if len(class_names) <= 30:  # beyond that the numbers no longer fit their cells
        for true_index, predicted_index in np.ndindex(counts.shape):
            fraction = fractions[true_index, predicted_index]
            axes.text(predicted_index, true_index, str(counts[true_index, predicted_index]), ha="center",
                      va="center", fontsize="small", color="white" if fraction > 0.5 else "black")
    figure.savefig(path, format="png", metadata={"Title": title})  # the title, readable without OCR
    return path


def confusion_table(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> dict[str, list]:
    """The matrix in long form, one row per (true, predicted) pair: the columns of an MLflow table."""
    rows = [(str(class_names[t]), str(class_names[p]), int(count))
            for t, row in enumerate(matrix) for p, count in enumerate(row)]
    return {"true_class": [r[0] for r in rows], "predicted_class": [r[1] for r in rows],
            "count": [r[2] for r in rows]}


WIDE_TABLE_CORNER = "true \\ predicted"  # the first column's name: the true class of each row


def confusion_matrix_wide(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> dict[str, list]:
    """The matrix as it reads: one row per true class, one column per predicted class (counts)."""
    names = [str(name) for name in class_names]
    return {WIDE_TABLE_CORNER: names,
            **{name: [int(row[predicted]) for row in matrix] for predicted, name in enumerate(names)}}
