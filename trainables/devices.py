"""How a trial runs on its device: kernels, memory layout and precision, the same for training
and evaluation. On CPUs everything stays plain fp32 in the default layout."""

import contextlib

import torch
from torch import nn

# torch.compile's own backends: inductor generates fused kernels (C++ through the host compiler
# on CPUs, Triton on GPUs); aot_eager and eager trace the step but run torch's kernels, which
# checks what compiling changes without inductor's compile time.
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")


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


def compile_forward_and_loss(method: nn.Module, backend: str) -> None:
    """torch.compile the method's forward and loss (its whole call: backbone, heads, loss), in
    place; the backward pass comes compiled with it, the optimizer step and the methods' hooks
    around it stay eager. In place (nn.Module.compile), so the module keeps its own state-dict
    keys (no `_orig_mod.` prefix): checkpoints load whether or not the trial that wrote them or
    the one reading them compiles, and copies of the module are plain, uncompiled ones. Before
    any DDP wrapping, as torch's "Where to apply torch.compile?" advises; inside DDP's forward
    the compiler still splits the graph at DDP's gradient buckets (DDPOptimizer)."""
    method.compile(backend=backend)
