"""A trial's evaluation: the per-epoch kNN monitor, and the protocol run once after pretraining
with the artifacts it writes (confusion matrix, t-SNE, block similarity's figure)."""

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainables import metrics
from trainables.augmentations import AugmentationRecipe, augment, without_color
from trainables.config import TrialConfig
from trainables.data import ImageSplits
from trainables.evaluation.block_similarity import block_similarity_metrics
from trainables.evaluation.confusion import plot_confusion_matrix
from trainables.evaluation.finetuning import finetune
from trainables.evaluation.probes import extract_features, knn_accuracy, probe_knn, probe_linear
from trainables.evaluation.results import EvaluationResult, evaluation_metrics_to_flat_dict
from trainables.evaluation.tsne import draw_tsne, tsne_points
from trainables.monitoring import knn_reference_indices
from trainables.training import with_dataset_flips

CONFUSION_MATRIX_FIGURE = "confusion_matrix.png"
CONFUSION_MATRIX_JSON = "confusion_matrix.json"
TSNE_FIGURE = "tsne_test.png"
TSNE_JSON = "tsne_test.json"  # the plotted points: the driver redraws the figure with the run's name


def monitor_knn(backbone: nn.Module, data: ImageSplits, config: TrialConfig, device: torch.device,
                features: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
    """kNN accuracy on the validation split against the monitor's reference subset of the training
    split (trainables.monitoring): the convergence curves' metric. `features`: the whole training
    split's and the validation split's features when already computed (the final evaluation).
    Features stay on `device` and the vote is counted there: one number comes back."""
    reference = knn_reference_indices(len(data.train_images), config.seed)
    if features is None:
        train_features = extract_features(backbone, data.train_images[reference], device=device,
                                          on_device=True)
        val_features = extract_features(backbone, data.val_images, device=device, on_device=True)
    else:
        train_features, val_features = features[0][reference], features[1]
    return knn_accuracy(train_features, data.train_labels[reference], val_features, data.val_labels,
                        data.num_classes, k=config.knn_k)


def timed_monitor(backbone: nn.Module, data: ImageSplits, config: TrialConfig,
                  device: torch.device) -> dict[str, float]:
    """The kNN monitor's accuracy and its wall time, as metrics."""
    started = time.perf_counter()
    accuracy = monitor_knn(backbone, data, config, device)
    return {metrics.KNN_VAL_ACCURACY: accuracy, metrics.KNN_SECONDS: time.perf_counter() - started}


def evaluate(backbone: nn.Module, data: ImageSplits, config: TrialConfig, device: torch.device,
             artifacts: Path) -> dict[str, Any]:
    """The trial's evaluation protocol, plus the last kNN monitor value (searchers and schedulers
    read it from every result); writes the confusion matrix and a t-SNE plot to `artifacts`.

    Features are computed once, in eval mode, and serve the monitor, the linear and kNN
    evaluations and the plot: those never touch the backbone. Fine-tuning trains a copy of it.
    The features stay on `device` (bf16 autocast and channels-last on GPUs), where the monitor and
    the probes run; only the test split's come to the host, once, for the t-SNE plot (plot_tsne).
    `config` is the one the trial was built from: its weights_path names a local file.
    """
    features = [extract_features(backbone, images, device=device, on_device=True)
                for images in (data.train_images, data.val_images, data.test_images)]
    monitor = monitor_knn(backbone, data, config, device, features=(features[0], features[1]))
    splits = (features[0], data.train_labels, features[1], data.val_labels, features[2], data.test_labels)
    result: EvaluationResult
    if config.eval == metrics.LINEAR_PREFIX:
        result = probe_linear(*splits, data.num_classes, label_fraction=config.label_fraction,
                              repeats=config.probe_repeats, focal_gamma=config.focal_gamma,
                              class_weighted=config.class_weighted, epochs=config.probe_epochs,
                              seed=config.seed)
    elif config.eval == metrics.KNN_PREFIX:
        result = probe_knn(*splits, data.num_classes, k=config.knn_k, label_fraction=config.label_fraction,
                           repeats=config.probe_repeats, seed=config.seed)
    else:
        recipe = with_dataset_flips(AugmentationRecipe(), config.dataset)
        if data.grayscale:
            recipe = without_color(recipe)
        result = finetune(backbone, data.train_images, data.train_labels, data.val_images, data.val_labels,
                          data.test_images, data.test_labels, data.num_classes,
                          epochs=config.finetune_epochs, batch_size=config.batch_size,
                          learning_rate=config.finetune_learning_rate, device=device,
                          augment_fn=lambda images: augment(images, recipe),
                          label_fraction=config.label_fraction, focal_gamma=config.focal_gamma,
                          class_weighted=config.class_weighted, seed=config.seed)
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / CONFUSION_MATRIX_JSON).write_text(json.dumps(
        {"classes": list(data.class_names), "matrix": result.confusion_matrix}
    ))
    plot_confusion_matrix(result.confusion_matrix, data.class_names, artifacts / CONFUSION_MATRIX_FIGURE,
                          title=f"{config.method} / {config.init} / {config.dataset}: test confusion matrix")
    coordinates, labels = tsne_points(features[2], data.test_labels, seed=config.seed)
    (artifacts / TSNE_JSON).write_text(json.dumps(
        {"classes": list(data.class_names), "labels": labels.tolist(),
         "coordinates": [[round(float(x), 4), round(float(y), 4)] for x, y in coordinates]}
    ))
    draw_tsne(coordinates, labels, artifacts / TSNE_FIGURE, data.class_names,
              title=f"{config.method} / {config.init} / {config.dataset}: test embeddings")
    similarity = {}
    if config.block_similarity:  # per-block CKA and SVCCA of each trained network to its start
        similarity = block_similarity_metrics(config, backbone, result.finetuned_backbone, data.val_images,
                                              device, artifacts)
    return {metrics.KNN_VAL_ACCURACY: monitor, **evaluation_metrics_to_flat_dict(result, config.eval),
            **similarity, **curve_metrics(result.curves)}


def curve_metrics(curves: dict[str, list[float]]) -> dict[str, Any]:
    """Fine-tuning's curves for the final report (the MLflow logger logs them per step), and the
    validation loss's rise after its lowest point."""
    if not curves:
        return {}
    val_loss = curves[metrics.FINETUNE_VAL_LOSS]
    return {**{name: list(values) for name, values in curves.items()},
            metrics.FINETUNE_VAL_LOSS_RISE: val_loss[-1] - min(val_loss)}
