"""The bytes of a 224 px gray dataset in Ray's object store and resident on the GPU, before and after
gray data was stored as one channel.

Run: python benchmarks/gray_memory.py [--images 1000] [--size 224] [--scale-to 100000]

`--images` gray 256x256 PNGs are written to a temporary folder and read by
`load_dataset("imagefolder", size)` (60/20/20 split). Measured on those real arrays:

- object store: the bytes `ray.put` stores for the trial's splits, ImageSplits.to_arrays
  serialized as Ray serializes it (pickle protocol 5, numpy arrays as out-of-band buffers);
- GPU-resident: what trainables.batches copies to the GPU when the split fits there, the uint8
  training split (`resident_bytes`).

"Before" is the same images with the channel replicated three times, as the loaders stored gray
data until now (tests/trainables/data/test_gray_storage.py shows it is the old decode). The figures
are then scaled linearly to `--scale-to` images. No GPU or Ray is needed.
"""

import argparse
import dataclasses
import pickle
import tempfile
from pathlib import Path

from PIL import Image

from benchmarks.parallel_decoding import smooth_fields
from trainables.batches import resident_bytes
from trainables.data import ImageSplits, load_dataset

IMAGE_FIELDS = ("train_images", "val_images", "test_images")


def object_store_bytes(splits: ImageSplits) -> int:
    """What ray.put keeps: the pickle stream plus its out-of-band (numpy) buffers."""
    buffers: list[pickle.PickleBuffer] = []
    stream = pickle.dumps(splits.to_arrays(), protocol=5, buffer_callback=buffers.append)
    return len(stream) + sum(buffer.raw().nbytes for buffer in buffers)


def replicated(splits: ImageSplits) -> ImageSplits:
    """The same splits with each gray image stored as three equal channels (the old layout)."""
    return dataclasses.replace(splits, **{name: getattr(splits, name).expand(-1, 3, -1, -1).contiguous()
                                          for name in IMAGE_FIELDS})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--scale-to", type=int, default=100_000)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        for class_name in ("normal", "finding"):
            (root / class_name).mkdir()
        for number, pixels in enumerate(smooth_fields(arguments.images, 8, seed=0)):
            Image.fromarray(pixels).save(root / ("normal", "finding")[number % 2] / f"{number:05d}.png")
        after = load_dataset("imagefolder", arguments.size, seed=0, data_root=root, cache=False)
    assert after.grayscale and after.train_images.shape[1] == 1
    before = replicated(after)
    scale = arguments.scale_to / arguments.images
    print(f"{arguments.images} gray images at {arguments.size} px, scaled to {arguments.scale_to:,}:")
    print(f"{'':>22} {'before (3 channels)':>20} {'after (1 channel)':>18}")
    for label, measure in (("object store", object_store_bytes),
                           ("GPU-resident (train)", lambda splits: resident_bytes(splits.train_images))):
        old, new = measure(before), measure(after)
        print(f"{label:>22} {old * scale / 1e9:>17.2f} GB {new * scale / 1e9:>15.2f} GB   "
              f"({old:,} and {new:,} bytes measured, ratio {old / new:.2f})")


if __name__ == "__main__":
    main()
