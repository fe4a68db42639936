"""How a trial runs on its device: kernels, memory layout and precision, the same for training
and evaluation. On CPUs everything stays plain fp32 in the default layout."""

import contextlib

import torch


def enable_fast_cuda_kernels(device: torch.device) -> None:
    """On GPUs: cuDNN autotuning (every step has the same shapes, so the search pays once) and
    TF32 for what runs in fp32 outside autocast (losses, fine-tuning, evaluation)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on GPUs, where convolutions in that layout are faster."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def mixed_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPUs (each loss upcasts itself to fp32); plain fp32 on CPUs."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
