"""What a training epoch cost: images per second and the worker's peak memory, as report metrics."""

import resource
import sys
from pathlib import Path

import torch

from trainables import metrics


def images_per_second(images: int, seconds: float) -> float:
    return images / seconds if seconds > 0 else float("nan")


def peak_memory(device: torch.device) -> dict[str, float]:
    """This worker's peak memory since it started, in MiB, under the name of what was measured:
    torch's peak allocation on a GPU, else the peak resident set of the whole process."""
    if device.type == "cuda":
        return {metrics.PEAK_GPU_MEMORY_ALLOCATED_MIB: torch.cuda.max_memory_allocated(device) / 2**20}
    return {metrics.PEAK_PROCESS_RSS_MIB: peak_process_rss_bytes() / 2**20}


def peak_process_rss_bytes() -> int:
    """The kernel's high-water mark of the resident set (VmHWM, never below the VmRSS of the same
    moment) on Linux; getrusage's ru_maxrss elsewhere (bytes on macOS), which can lag the RSS."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
