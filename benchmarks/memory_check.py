"""The planner's per-GPU memory estimate (orchestrator/memory.py) beside torch's measurement.

    python benchmarks/memory_check.py

On a GPU, each case runs three training steps the way trainables/loop.py runs them on one
worker (random-init backbone, the method's heads, its paper optimizer, bf16 autocast,
channels-last; fine-tuning: a copy of the backbone plus a linear head in fp32, SGD) and prints
torch.cuda.max_memory_allocated beside the estimate of the same quantity (what the allocator
hands out: the estimate before its allocator margin, CUDA context and workspace allowances) and
their ratio. A ratio below 1 means the estimate is on the safe side. Without a GPU it prints the
estimates only.
"""

import copy
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.memory import ALLOCATOR_MARGIN, GIB, estimate_memory  # noqa: E402
from trainables.activation_checkpointing import enable_activation_checkpointing  # noqa: E402
from trainables.backbones import build_backbone  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402

CASES = [
    {"method": "simclr", "backbone": "resnet50", "image_size": 224, "batch_size": 64},
    {"method": "simclr", "backbone": "resnet50", "image_size": 224, "batch_size": 64,
     "activation_checkpointing": True},
    {"method": "simclr", "backbone": "resnet50", "image_size": 96, "batch_size": 256},
    {"method": "swav", "backbone": "resnet50", "image_size": 224, "batch_size": 64,
     "method_params": {"num_small_crops": 2}},
    {"method": "byol", "backbone": "resnet50", "image_size": 224, "batch_size": 64},
    {"method": "simsiam", "backbone": "resnetv2_50x1_bit", "image_size": 224, "batch_size": 32},
    {"method": "simsiam", "backbone": "resnetv2_50x1_bit", "image_size": 224, "batch_size": 64},  # GroupNorm
    {"method": "none", "eval": "finetune", "backbone": "resnet50", "image_size": 224, "batch_size": 64},
    {"method": "none", "eval": "finetune", "backbone": "resnet50", "image_size": 224, "batch_size": 64,
     "activation_checkpointing": True},
    {"method": "none", "eval": "finetune", "backbone": "cbr_small", "image_size": 224, "batch_size": 64},
]
STEPS = 3


def measure_pretraining(config: TrialConfig) -> int:
    """Peak bytes allocated over STEPS pretraining steps as the loop runs them on one GPU."""
    from trainables.methods import build_method
    from trainables.optimization import build_optimizer
    from trainables.training import memory_format, mixed_precision

    device = torch.device("cuda")
    backbone, feature_dim = build_backbone(config.backbone)
    method = build_method(config.method, backbone, feature_dim, config.method_params)
    method = method.to(device, memory_format=memory_format(device))
    if config.activation_checkpointing:
        enable_activation_checkpointing(method.backbone)
    optimizer = build_optimizer(method, config.resolved_optimizer, config.momentum,
                                config.resolved_weight_decay)
    sizes = [view.size for view in method.views(config.image_size)]
    torch.cuda.reset_peak_memory_stats()
    for _ in range(STEPS):
        views = [torch.randn(config.batch_size, 3, size, size, device=device)
                 .to(memory_format=memory_format(device)) for size in sizes]
        with mixed_precision(device):
            output = method(views)
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        optimizer.step()
        method.after_optimizer_step(0.5)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def measure_finetuning(config: TrialConfig) -> int:
    """Peak bytes allocated over STEPS fine-tuning steps (trainables/evaluation/finetuning.py: a
    trained copy of the backbone and a linear head, fp32, SGD with momentum, the whole batch)."""
    device = torch.device("cuda")
    backbone, feature_dim = build_backbone(config.backbone)
    backbone = backbone.to(device)  # the trial's own backbone stays on the GPU, as in the loop
    if config.activation_checkpointing:
        enable_activation_checkpointing(backbone)
    model = nn.Sequential(copy.deepcopy(backbone), nn.Linear(feature_dim, 10)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    torch.cuda.reset_peak_memory_stats()
    for _ in range(STEPS):
        images = torch.randn(config.batch_size, 3, config.image_size, config.image_size, device=device)
        loss = nn.functional.cross_entropy(model(images), torch.zeros(config.batch_size, dtype=torch.long,
                                                                       device=device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def main() -> None:
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        total = torch.cuda.get_device_properties(0).total_memory
        print(f"GPU: {torch.cuda.get_device_name()} ({total / GIB:.1f} GiB), torch {torch.__version__}")
    else:
        print("no GPU here: estimates only; run this on a machine with a CUDA GPU to measure them")
    header = f"{'case':<62} {'estimate GiB':>12} {'measured GiB':>12} {'measured/est.':>13} {'total GiB':>9}"
    print(header)
    print("-" * len(header))
    for case in CASES:
        config = TrialConfig.from_dict(case)
        estimate = estimate_memory(config, 1, config.activation_checkpointing)
        finetuning = config.eval == "finetune"
        # What the allocator hands out in the phase measured (no margin, context or workspace).
        allocated = estimate.evaluation if finetuning else estimate.pretraining
        name = (f"{config.method}{' finetune' if finetuning else ''} {config.backbone} {config.image_size}px "
                f"batch {config.batch_size}{' ckpt' if config.activation_checkpointing else ''}")
        measured_text, ratio_text = "-", "-"
        if on_gpu:
            torch.cuda.empty_cache()
            measured = measure_finetuning(config) if finetuning else measure_pretraining(config)
            measured_text, ratio_text = f"{measured / GIB:.2f}", f"{measured / allocated:.2f}"
            torch.cuda.empty_cache()
        print(f"{name:<62} {allocated / GIB:>12.2f} {measured_text:>12} {ratio_text:>13} "
              f"{estimate.total / GIB:>9.1f}")
    print(f"total GiB: the planner's per-GPU figure (x{ALLOCATOR_MARGIN} allocator margin, plus CUDA context "
          "and workspaces, which max_memory_allocated does not see)")


if __name__ == "__main__":
    main()
