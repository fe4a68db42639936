"""Linear-probe wall time: features computed once (what trials do) vs the backbone run every epoch.

Run: python benchmarks/linear_probe.py [--dataset shapes] [--image-size 32] [--backbone cbr_nano]
                                       [--epochs 100] [--repeats 3]

Both probes train the same multinomial logistic regression (full-batch Adam, lr 0.01, weight
decay 1e-4, standardized features, the classifier with the best validation balanced accuracy is
tested) on the same frozen, eval-mode backbone:

- cached: features of train/val/test extracted once (trainables.evaluation.probes.probe_linear);
- per epoch: every epoch runs the backbone over the training images again (no_grad, eval mode)
  before the classifier step, and over the validation images to select the epoch, as a
  probe written around a DataLoader would.

Printed: the median wall time over repeats of each, their ratio, and both test accuracies (they
must agree within 1 point: the cached probe is the same computation, not an approximation).
"""

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from trainables.backbones import build_backbone
from trainables.data import load_dataset
from trainables.evaluation.probes import extract_features, probe_linear


def cached_probe(backbone: torch.nn.Module, data, epochs: int) -> tuple[float, float]:
    started = time.perf_counter()
    features = [extract_features(backbone, images) for images in (data.train_images, data.val_images,
                                                                   data.test_images)]
    result = probe_linear(features[0], data.train_labels, features[1], data.val_labels, features[2],
                          data.test_labels, data.num_classes, repeats=1, epochs=epochs)
    return time.perf_counter() - started, result.test_accuracy.mean


def per_epoch_probe(backbone: torch.nn.Module, data, epochs: int) -> tuple[float, float]:
    """The same classifier, but the frozen backbone recomputes the features every epoch."""
    started = time.perf_counter()
    torch.manual_seed(0)
    train_features = extract_features(backbone, data.train_images)
    mean, std = train_features.mean(dim=0), train_features.std(dim=0).clamp_min(1e-6)
    classifier = torch.nn.Linear(train_features.shape[1], data.num_classes)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=0.01, weight_decay=1e-4)
    best_score, best_state = -1.0, None
    for _ in range(epochs):
        train_x = (extract_features(backbone, data.train_images) - mean) / std
        optimizer.zero_grad()
        F.cross_entropy(classifier(train_x), data.train_labels).backward()
        optimizer.step()
        with torch.no_grad():
            val_x = (extract_features(backbone, data.val_images) - mean) / std
            score = balanced_accuracy_score(data.val_labels, classifier(val_x).argmax(dim=1))
        if score > best_score:
            best_score, best_state = score, copy.deepcopy(classifier.state_dict())
    classifier.load_state_dict(best_state)
    with torch.no_grad():
        test_x = (extract_features(backbone, data.test_images) - mean) / std
        predictions = classifier(test_x).argmax(dim=1)
    return time.perf_counter() - started, float(accuracy_score(data.test_labels, predictions))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--backbone", default="cbr_nano")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    data = load_dataset(args.dataset, args.image_size, seed=0)
    torch.manual_seed(0)
    backbone, _ = build_backbone(args.backbone)
    backbone.eval()
    print(f"{args.dataset} at {args.image_size} px, {args.backbone}, {args.epochs} probe epochs, "
          f"{len(data.train_images)} train images, {torch.get_num_threads()} threads")
    cached = [cached_probe(backbone, data, args.epochs) for _ in range(args.repeats)]
    per_epoch = [per_epoch_probe(backbone, data, args.epochs) for _ in range(args.repeats)]
    cached_seconds = statistics.median(seconds for seconds, _ in cached)
    per_epoch_seconds = statistics.median(seconds for seconds, _ in per_epoch)
    print(f"{'probe':<22}{'median s':>10}{'test acc':>10}")
    print(f"{'cached features':<22}{cached_seconds:>10.2f}{cached[0][1]:>10.4f}")
    print(f"{'backbone every epoch':<22}{per_epoch_seconds:>10.2f}{per_epoch[0][1]:>10.4f}")
    print(f"speed-up: {per_epoch_seconds / cached_seconds:.1f}x (target >= 20x); "
          f"accuracy difference {abs(cached[0][1] - per_epoch[0][1]) * 100:.2f} points (target <= 1)")


if __name__ == "__main__":
    main()
