"""What a sweep will cost before it runs: estimated GPU-hours per trial, for --dry-run.

Throughput is NVIDIA's published ResNet-50 training figure (2,470 img/s at 224 px, AMP, one
A100; DESIGN.md), halved for two views, and scaled by each backbone's multiply-accumulates
relative to ResNet-50 (counted with forward hooks on conv and linear layers at 224 px) and by
the pixel count for other image sizes, capped where small models become input-bound. A rough
guide for planning, not a measurement: pipeline stalls, multi-crop and evaluation vary.
"""

from trainables.config import TrialConfig

RESNET50_TWO_VIEW_IMAGES_PER_SECOND = 2470 / 2
GMAC_AT_224 = {"resnet50": 4.09, "resnetv2_50x1_bit": 4.09, "resnet18": 1.81,
               "cbr_tiny": 7.95, "cbr_small": 4.01, "cbr_nano": 0.74}
MAX_IMAGES_PER_SECOND = 20_000  # beyond this the input pipeline, not the GPU, sets the pace
# Relative cost of one training step: extra forward passes (targets, key encoders) and crops.
METHOD_COST = {"none": 0.0, "byol": 1.33, "mocov2": 1.33, "swav": 1.55}
# Training-split sizes (images) of the registered datasets, for the estimate only.
TRAIN_IMAGES = {"digits": 1078, "shapes": 1800, "cifar10": 45000, "ham10000": 6009, "dermamnist": 7007,
                "pneumoniamnist": 4708, "breastmnist": 546, "bloodmnist": 11959, "retinamnist": 1080,
                "pathmnist": 89996, "octmnist": 97477, "organamnist": 34561, "kermany_cxr": 5232,
                "covid19_radiography": 12697, "isic2019": 15198, "idrid_grading": 330,
                "chestxray14": 67272}


def images_per_second(backbone: str, image_size: int) -> float:
    relative = GMAC_AT_224["resnet50"] / GMAC_AT_224.get(backbone, GMAC_AT_224["resnet50"])
    scaled = RESNET50_TWO_VIEW_IMAGES_PER_SECOND * relative * (224 / image_size) ** 2
    return min(scaled, MAX_IMAGES_PER_SECOND)


def gpu_hours(config: TrialConfig) -> float | None:
    """Estimated GPU-hours of one trial (all its workers together); None for unknown data sizes.
    Pretraining goes over the pretraining pool (its dataset's train split, times pretrain_fraction),
    fine-tuning over the evaluation's train split."""
    train_images = TRAIN_IMAGES.get(config.dataset)
    pretrain_images = TRAIN_IMAGES.get(config.resolved_pretrain_dataset)
    if train_images is None or pretrain_images is None:
        return None
    throughput = images_per_second(config.backbone, config.image_size)
    pretraining = (config.epochs * pretrain_images * config.pretrain_fraction
                   * METHOD_COST.get(config.method, 1.0) / throughput)
    # Fine-tuning: one view forward and backward per image and epoch, about half a two-view step.
    finetuning = config.finetune_epochs * train_images * 0.5 / throughput if config.eval == "finetune" else 0
    return (pretraining + finetuning) / 3600
