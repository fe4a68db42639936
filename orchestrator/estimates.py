"""What a sweep will cost before it runs: estimated GPU-hours per trial, for --dry-run.

Throughput is NVIDIA's published ResNet-50 training figure (2,470 img/s at 224 px, AMP, one
A100; DESIGN.md), halved for two views, and scaled by each backbone's multiply-accumulates
relative to ResNet-50 (`BackboneSpec.multiply_accumulates_at_224`) and by the pixel count for
other image sizes, capped where small models become input-bound; each method's step costs its
`relative_step_cost` of that, over each dataset's `DatasetSpec.train_image_count` images. A rough
guide for planning, not a measurement: pipeline stalls, multi-crop and evaluation vary.
"""

from trainables.backbones import BACKBONES
from trainables.config import TrialConfig
from trainables.data import DATASETS
from trainables.methods import METHODS

RESNET50_TWO_VIEW_IMAGES_PER_SECOND = 2470 / 2
MAX_IMAGES_PER_SECOND = 20_000  # beyond this the input pipeline, not the GPU, sets the pace


def images_per_second(backbone: str, image_size: int) -> float:
    """Backbones of the registry by their multiply-accumulates (BackboneSpec); others as ResNet-50."""
    resnet50 = BACKBONES["resnet50"].multiply_accumulates_at_224
    own = BACKBONES[backbone].multiply_accumulates_at_224 if backbone in BACKBONES else None
    relative = resnet50 / (own or resnet50)
    scaled = RESNET50_TWO_VIEW_IMAGES_PER_SECOND * relative * (224 / image_size) ** 2
    return min(scaled, MAX_IMAGES_PER_SECOND)


def gpu_hours(config: TrialConfig) -> float | None:
    """Estimated GPU-hours of one trial (all its workers together); None for unknown data sizes.
    Pretraining goes over the pretraining pool (its dataset's train split, times pretrain_fraction),
    fine-tuning over the evaluation's train split."""
    train_images = DATASETS[config.dataset].train_image_count
    pretrain_images = DATASETS[config.resolved_pretrain_dataset].train_image_count
    if train_images is None or pretrain_images is None:
        return None
    throughput = images_per_second(config.backbone, config.image_size)
    pretraining = (config.epochs * pretrain_images * config.pretrain_fraction
                   * METHODS[config.method].relative_step_cost / throughput)
    # Fine-tuning: one view forward and backward per image and epoch, about half a two-view step.
    finetuning = config.finetune_epochs * train_images * 0.5 / throughput if config.eval == "finetune" else 0
    return (pretraining + finetuning) / 3600
