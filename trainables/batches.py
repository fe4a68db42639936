"""The training step's input: each step's uint8 batch, on the step's device, without stalls.

The batches are uint8 (B, C, S, S) with the split's own channel count: gray data stays one
channel here (a third of the bytes on the device) and becomes three only in each view.

Every worker draws the same permutation of the training split per epoch and takes its own slice
of each global batch, so the workers' slices together are one global batch. Where the images
live depends on the device:

- CPU: the images stay where they are and each batch is gathered by indexing, as a plain loop
  would; the batches are exactly those of `reference_batches`.
- GPU, when the split's bytes fit RESIDENT_MEMORY_FRACTION of the device's memory (most medical
  datasets at 224 px do): the whole uint8 split is copied to the device once. Each epoch's
  permutation goes to the device once, and each batch is a gather on the device: the GPU never
  waits for the host, and the host never waits for the GPU.
- GPU, otherwise ("pinned"): the split stays in ordinary host memory. The next batch is gathered
  on the host into a pinned (page-locked) staging buffer and copied to the device on a side CUDA
  stream while the current step runs; the step's stream waits on that copy's event, on the
  device, not on the host. Only the staging buffers are pinned (`pinned_staging_buffers`): the
  gather reads pageable memory as fast as pinned, and only the copy to the device needs a pinned
  source. Pinning the whole split would lock its bytes (many GB) in RAM for nothing.

Nothing here calls `.item()`, `.cpu()` or indexes a host tensor with a device tensor: inside the
step there is no host-device synchronization.
"""

from collections.abc import Iterator

import torch

# The share of the device's total memory the resident training split may take; the rest is for
# the model, its activations and the optimizer (the memory planner sizes those).
RESIDENT_MEMORY_FRACTION = 0.25
STAGING_BUFFERS = 2  # pinned host buffers: one being copied to the device while the next fills


def epoch_order(count: int, epoch_seed: int) -> torch.Tensor:
    """The epoch's permutation of the training split: the same on every worker."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(epoch_seed))


def reference_batches(images: torch.Tensor, batch_size: int, world_size: int, rank: int,
                      epoch_seed: int) -> Iterator[torch.Tensor]:
    """The obvious indexing, the definition of which images each step sees: this worker's slice of
    each global batch of the epoch's permutation; an incomplete last batch is dropped."""
    order = epoch_order(len(images), epoch_seed)
    local_batch_size = batch_size // world_size
    for batch_index in range(len(images) // batch_size):
        global_batch = order[batch_index * batch_size:(batch_index + 1) * batch_size]
        yield images[global_batch[rank * local_batch_size:(rank + 1) * local_batch_size]]


def resident_bytes(images: torch.Tensor) -> int:
    """The bytes the split takes on the device: its real channel count (1 for gray data, which
    is stored so; the augmentations make three channels per view, not per stored image)."""
    return images.numel() * images.element_size()


def fits_on_device(images: torch.Tensor, device: torch.device,
                   fraction: float = RESIDENT_MEMORY_FRACTION) -> bool:
    """Whether the split's bytes fit `fraction` of the device's total memory."""
    total = torch.cuda.get_device_properties(device).total_memory
    return resident_bytes(images) <= fraction * total


class TrainingBatches:
    """This worker's uint8 batches, epoch by epoch, on `device` (see the module docstring).

        batches = TrainingBatches(data.train_images, device, batch_size, world_size, rank)
        for images in batches.epoch(epoch_seed): ...
    """

    def __init__(self, images: torch.Tensor, device: torch.device, batch_size: int, world_size: int = 1,
                 rank: int = 0, resident_fraction: float = RESIDENT_MEMORY_FRACTION) -> None:
        self.device = torch.device(device)
        self.batch_size, self.world_size, self.rank = batch_size, world_size, rank
        self.local_batch_size = batch_size // world_size
        self.steps_per_epoch = len(images) // batch_size
        self.count = len(images)
        self.placement = "host"
        if self.device.type == "cuda":
            if fits_on_device(images, self.device, resident_fraction):
                self.placement = "device"
                images = images.to(self.device)
            else:
                self.placement = "pinned"  # the split stays as it is: see pinned_staging_buffers
        self.images = images

    def epoch(self, epoch_seed: int) -> Iterator[torch.Tensor]:
        if self.placement == "host":
            return reference_batches(self.images, self.batch_size, self.world_size, self.rank, epoch_seed)
        if self.placement == "device":
            return self._resident_batches(epoch_seed)
        return self._prefetched_batches(epoch_seed)

    def _local_slices(self, order: torch.Tensor) -> Iterator[torch.Tensor]:
        for batch_index in range(self.steps_per_epoch):
            start = batch_index * self.batch_size + self.rank * self.local_batch_size
            yield order[start:start + self.local_batch_size]

    def _resident_batches(self, epoch_seed: int) -> Iterator[torch.Tensor]:
        # One small copy of the permutation per epoch (pinned, so it does not block the host),
        # then every batch is a gather on the device.
        order = epoch_order(self.count, epoch_seed).pin_memory().to(self.device, non_blocking=True)
        for indices in self._local_slices(order):
            yield self.images.index_select(0, indices)

    def _prefetched_batches(self, epoch_seed: int) -> Iterator[torch.Tensor]:
        copy_stream = torch.cuda.Stream(self.device)
        shape = (self.local_batch_size, *self.images.shape[1:])
        staging = pinned_staging_buffers(shape, self.images.dtype)
        copied: list[torch.cuda.Event | None] = [None] * STAGING_BUFFERS

        def start_copy(step: int, indices: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event]:
            slot = step % STAGING_BUFFERS
            if copied[slot] is not None:
                # The copy issued from this buffer two steps ago: long finished in a steady state.
                copied[slot].synchronize()
            torch.index_select(self.images, 0, indices, out=staging[slot])
            with torch.cuda.stream(copy_stream):
                batch = staging[slot].to(self.device, non_blocking=True)
                event = torch.cuda.Event()
                event.record(copy_stream)
            copied[slot] = event
            return batch, event

        slices = list(self._local_slices(epoch_order(self.count, epoch_seed)))
        pending = start_copy(0, slices[0]) if slices else None
        for step in range(len(slices)):
            batch, event = pending
            # The step's stream waits for the copy on the device; the allocator must not reuse
            # the batch's memory (allocated on the copy stream) before the step is done with it.
            torch.cuda.current_stream(self.device).wait_event(event)
            batch.record_stream(torch.cuda.current_stream(self.device))
            yield batch
            # The step's kernels are queued: gather and copy the next batch while they run.
            if step + 1 < len(slices):
                pending = start_copy(step + 1, slices[step + 1])


def pinned_staging_buffers(shape: tuple[int, ...], dtype: torch.dtype,
                           count: int = STAGING_BUFFERS) -> list[torch.Tensor]:
    """The prefetching path's page-locked host buffers, one batch each: the only memory of a split
    it pins."""
    return [torch.empty(shape, dtype=dtype).pin_memory() for _ in range(count)]
