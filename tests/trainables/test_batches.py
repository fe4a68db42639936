"""The training step's batches: the same images as the loop's original indexing, on every device."""

import ast
import inspect

import pytest
import torch

from trainables import batches as batches_module
from trainables.batches import TrainingBatches


def original_loop_batches(images: torch.Tensor, batch_size: int, world_size: int, rank: int,
                          epoch_seed: int) -> list[torch.Tensor]:
    """The training loop's indexing before TrainingBatches, copied verbatim: the reference."""
    local_batch_size = batch_size // world_size
    steps_per_epoch = len(images) // batch_size
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(epoch_seed))
    batches = []
    for batch_index in range(steps_per_epoch):
        global_batch = order[batch_index * batch_size:(batch_index + 1) * batch_size]
        local_batch = global_batch[rank * local_batch_size:(rank + 1) * local_batch_size]
        batches.append(images[local_batch].to("cpu", non_blocking=True))
    return batches


def numbered_images(count: int) -> torch.Tensor:
    """uint8 images whose first pixel is their index mod 256 (and second its index // 256)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, 4, 4), dtype=torch.uint8, generator=generator)
    images[:, 0, 0, 0] = torch.arange(count) % 256
    images[:, 0, 0, 1] = torch.arange(count) // 256
    return images


def image_indices(batch: torch.Tensor) -> list[int]:
    return (batch[:, 0, 0, 0].long() + 256 * batch[:, 0, 0, 1].long()).tolist()


@pytest.mark.parametrize(("count", "batch_size", "world_size"), [(100, 16, 1), (300, 64, 2), (257, 30, 3)])
def test_cpu_batches_are_the_original_loops_for_every_worker_and_epoch(count: int, batch_size: int,
                                                                       world_size: int) -> None:
    images = numbered_images(count)
    for rank in range(world_size):
        batches = TrainingBatches(images, torch.device("cpu"), batch_size, world_size, rank)
        for epoch_seed in (0, 10_008, 31):
            ours = list(batches.epoch(epoch_seed))
            reference = original_loop_batches(images, batch_size, world_size, rank, epoch_seed)
            assert len(ours) == len(reference) == count // batch_size
            for mine, theirs in zip(ours, reference, strict=True):
                assert mine.dtype == torch.uint8 and torch.equal(mine, theirs)


def test_workers_slices_make_disjoint_global_batches_and_epochs_differ() -> None:
    images, batch_size, world_size = numbered_images(300), 64, 2
    per_rank = [list(TrainingBatches(images, torch.device("cpu"), batch_size, world_size, rank).epoch(7))
                for rank in range(world_size)]
    seen = [index for step in zip(*per_rank, strict=True) for batch in step for index in image_indices(batch)]
    assert len(seen) == len(set(seen)) == (300 // batch_size) * batch_size  # each image at most once
    other_epoch = list(TrainingBatches(images, torch.device("cpu"), batch_size).epoch(8))
    assert image_indices(other_epoch[0]) != image_indices(
        list(TrainingBatches(images, torch.device("cpu"), batch_size).epoch(7))[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("resident_fraction", [1.0, 0.0])  # on the device; pinned host + prefetch
def test_gpu_batches_equal_the_cpu_batches(resident_fraction: float) -> None:
    images, device = numbered_images(300), torch.device("cuda")
    batches = TrainingBatches(images, device, 64, 2, 1, resident_fraction=resident_fraction)
    assert batches.placement == ("device" if resident_fraction else "pinned")
    reference = list(TrainingBatches(images, torch.device("cpu"), 64, 2, 1).epoch(3))
    ours = [batch.clone() for batch in batches.epoch(3)]
    torch.cuda.synchronize()
    assert len(ours) == len(reference)
    for mine, theirs in zip(ours, reference, strict=True):
        assert mine.device.type == "cuda" and torch.equal(mine.cpu(), theirs)
    # The prefetching path pins its staging buffers only, never the split itself.
    assert not batches.images.is_pinned() and not images.is_pinned()


def test_only_the_staging_buffers_are_pinned() -> None:
    # On a CPU nothing can be pinned; read the code instead: every pin_memory call in
    # trainables/batches.py is in the staging buffers' allocator or pins the epoch's permutation.
    tree = ast.parse(inspect.getsource(batches_module))
    pinning = {function.name for function in ast.walk(tree) if isinstance(function, ast.FunctionDef)
               for call in ast.walk(function) if isinstance(call, ast.Call)
               and isinstance(call.func, ast.Attribute) and call.func.attr == "pin_memory"}
    assert pinning == {"pinned_staging_buffers", "_resident_batches"}
    resident = inspect.getsource(TrainingBatches._resident_batches)
    assert "epoch_order(self.count, epoch_seed).pin_memory()" in resident  # the permutation, not images


def test_one_channel_batches_keep_one_channel_and_are_channel_zero_of_the_replicated_batches() -> None:
    """Gray data is stored as one channel: its batches are (B, 1, S, S), the same images as the
    old three replicated channels' batches, with a third of the bytes resident."""
    from trainables.batches import resident_bytes

    gray = numbered_images(100)[:, :1].contiguous()
    replicated = gray.expand(-1, 3, -1, -1).contiguous()
    ours = list(TrainingBatches(gray, torch.device("cpu"), 16).epoch(5))
    old = list(TrainingBatches(replicated, torch.device("cpu"), 16).epoch(5))
    assert len(ours) == len(old) == 6
    for mine, theirs in zip(ours, old, strict=True):
        assert mine.shape == (16, 1, 4, 4) and torch.equal(mine[:, 0], theirs[:, 0])
    assert 3 * resident_bytes(gray) == resident_bytes(replicated) == 100 * 3 * 4 * 4
