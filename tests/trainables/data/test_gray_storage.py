"""Gray data is stored as one channel: decoded, cached and split with C = 1, equal to channel 0 of
what the loaders stored before (three replicated channels), and a third of its bytes."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainables.data import cache as data_cache
from trainables.data import load_dataset
from trainables.data.pool import decode_image, to_one_channel

SIZE = 16


def old_decode(path: Path, size: int) -> np.ndarray:
    """How an 8-bit file was decoded when every image was stored as RGB: (S, S, 3)."""
    with Image.open(path) as image:
        image.draft("RGB", (size, size))
        return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


def gray_pixels(seed: int, shape: tuple[int, int] = (24, 30)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


GRAY_FILE_KINDS = ["L_png", "L_jpeg", "LA_png", "RGB_png_of_gray", "RGB_jpeg_of_gray", "1_png"]


@pytest.mark.parametrize("kind", GRAY_FILE_KINDS)
def test_a_gray_file_decodes_to_one_channel_equal_to_the_old_rgb_channel_zero(kind: str,
                                                                              tmp_path: Path) -> None:
    pixels = gray_pixels(1)
    mode, _, suffix = kind.partition("_")
    image = Image.fromarray(pixels)
    if mode == "LA":
        image = Image.merge("LA", (image, Image.fromarray(np.full_like(pixels, 200))))
    elif mode == "1":
        image = image.convert("1")
    elif mode == "RGB":
        image = image.convert("RGB")
    path = tmp_path / f"image.{suffix.split('_')[0]}"
    image.save(path, quality=90) if path.suffix == ".jpeg" else image.save(path)
    decoded, old = decode_image(path, SIZE), old_decode(path, SIZE)
    assert decoded.shape == (SIZE, SIZE) and decoded.dtype == np.uint8
    assert (old == old[:, :, :1]).all()  # the old way: one gray channel three times
    assert np.array_equal(decoded, old[:, :, 0])


def test_a_colour_file_keeps_three_channels(tmp_path: Path) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (24, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "colour.png")
    decoded = decode_image(tmp_path / "colour.png", SIZE)
    assert decoded.shape == (SIZE, SIZE, 3)
    assert np.array_equal(decoded, old_decode(tmp_path / "colour.png", SIZE))


def write_folder(root: Path, colour_files: int = 0) -> None:
    """An imagefolder of gray PNGs, two classes of 8; the first `colour_files` are colour."""
    written = 0
    for class_index, class_name in enumerate(("a", "b")):
        (root / class_name).mkdir(parents=True, exist_ok=True)
        for number in range(8):
            pixels = gray_pixels(100 * class_index + number)
            if written < colour_files:
                image = Image.fromarray(np.stack([pixels, pixels // 2, 255 - pixels], axis=-1))
            else:
                image = Image.fromarray(pixels)
            image.save(root / class_name / f"{number}.png")
            written += 1


def all_images(splits) -> torch.Tensor:
    return torch.cat([splits.train_images, splits.val_images, splits.test_images])


def test_a_gray_folder_is_split_and_cached_as_one_channel_equal_to_the_old_pool(tmp_path: Path) -> None:
    write_folder(tmp_path)
    splits = load_dataset("imagefolder", SIZE, seed=0, data_root=tmp_path)
    assert splits.grayscale and all_images(splits).shape == (16, 1, SIZE, SIZE)
    cached = data_cache.read_pool(data_cache.cache_file(tmp_path, "imagefolder", SIZE))
    assert cached.images.shape == (16, 1, SIZE, SIZE)
    # The pool in file order equals channel 0 of the old decode, image by image.
    paths = sorted(tmp_path.glob("[ab]/*.png"))
    old = np.stack([old_decode(path, SIZE).transpose(2, 0, 1) for path in paths])
    assert np.array_equal(cached.images.numpy(), old[:, :1])
    # And a third of the bytes: one byte per pixel instead of three.
    assert cached.images.numpy().nbytes * 3 == old.nbytes
    again = load_dataset("imagefolder", SIZE, seed=0, data_root=tmp_path)  # from the cache
    assert torch.equal(all_images(again), all_images(splits))


def test_one_colour_file_keeps_a_detected_folder_in_three_channels(tmp_path: Path) -> None:
    write_folder(tmp_path, colour_files=1)
    splits = load_dataset("imagefolder", SIZE, seed=0, data_root=tmp_path, cache=False)
    images = all_images(splits)
    assert not splits.grayscale and images.shape[1] == 3
    gray = images[(images[:, :1] == images).flatten(1).all(dim=1)]
    assert len(gray) == 15  # the gray files fill all three channels


def test_a_dataset_marked_gray_stores_its_colour_files_as_their_luma(tmp_path: Path, caplog) -> None:
    """kermany_cxr is gray by its spec: a colour JPEG in it becomes one channel, PIL's luma."""
    base = tmp_path / "kermany_cxr" / "chest_xray"
    write_folder(base / "train", colour_files=2)
    for class_name in ("NORMAL", "PNEUMONIA"):  # the folder names kermany expects
        (base / "train" / ("a" if class_name == "NORMAL" else "b")).rename(base / "train" / class_name)
        (base / "test" / class_name).mkdir(parents=True)
        Image.fromarray(gray_pixels(7)).save(base / "test" / class_name / "t.png")
    with caplog.at_level(logging.WARNING, logger="trainables.data"):
        splits = load_dataset("kermany_cxr", SIZE, seed=0, data_root=tmp_path, cache=False)
    assert splits.grayscale and all_images(splits).shape[1] == 1
    assert any("2 of its 18 images were in colour" in record.getMessage() for record in caplog.records)
    colour = base / "train" / "NORMAL" / "0.png"
    expected = np.asarray(Image.open(colour).convert("L").resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    luma_of_resized = np.asarray(Image.fromarray(old_decode(colour, SIZE)).convert("L"))
    assert any(np.array_equal(image[0].numpy(), luma_of_resized) for image in all_images(splits))
    assert np.abs(expected.astype(int) - luma_of_resized).max() <= 1  # luma, to within resampling


def test_to_one_channel_is_pils_luma_and_exact_on_gray() -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (5, 9, 11, 3), dtype=np.uint8)
    ours = to_one_channel(torch.from_numpy(rgb).permute(0, 3, 1, 2))
    pil = np.stack([np.asarray(Image.fromarray(image).convert("L")) for image in rgb])
    assert ours.shape == (5, 1, 9, 11) and np.array_equal(ours[:, 0].numpy(), pil)
    gray = torch.from_numpy(rgb[..., 0]).unsqueeze(1)
    assert torch.equal(to_one_channel(gray.expand(-1, 3, -1, -1)), gray)


def test_a_cache_of_an_older_format_is_rebuilt_with_one_line(tmp_path: Path, caplog) -> None:
    write_folder(tmp_path)
    old = data_cache.cache_file(tmp_path, "imagefolder", SIZE).with_name(
        f"imagefolder-{SIZE}px-v{data_cache.CACHE_VERSION - 1}.npz")
    old.parent.mkdir(parents=True)
    old.write_bytes(b"an older format")
    with caplog.at_level(logging.WARNING, logger="trainables.data.cache"):
        splits = load_dataset("imagefolder", SIZE, seed=0, data_root=tmp_path)
    lines = [record.getMessage() for record in caplog.records if "older format" in record.getMessage()]
    assert len(lines) == 1 and old.name in lines[0] and "\n" not in lines[0]
    assert splits.grayscale and data_cache.cache_file(tmp_path, "imagefolder", SIZE).exists()


def test_a_224_px_gray_split_ships_and_stays_resident_in_a_third_of_the_bytes(tmp_path: Path) -> None:
    """What goes into Ray's object store (ImageSplits.to_arrays) and what trainables.batches
    copies to the GPU (the uint8 training split, counted by resident_bytes) for a 224 px gray
    folder: one byte per pixel, a third of the three replicated channels stored before.
    benchmarks/gray_memory.py measures the same for 1,000 images (the README's figures)."""
    from trainables.batches import resident_bytes

    for number in range(12):
        folder = tmp_path / ("a" if number % 2 else "b")
        folder.mkdir(exist_ok=True)
        Image.fromarray(gray_pixels(number, (256, 256))).save(folder / f"{number}.png")
    splits = load_dataset("imagefolder", 224, seed=0, data_root=tmp_path, cache=False)
    arrays = splits.to_arrays()
    image_bytes = sum(arrays[name].nbytes for name in ("train_images", "val_images", "test_images"))
    assert image_bytes == 12 * 224 * 224
    replicated = splits.train_images.expand(-1, 3, -1, -1).contiguous()
    assert resident_bytes(splits.train_images) * 3 == resident_bytes(replicated)
    assert resident_bytes(splits.train_images) == len(splits.train_images) * 224 * 224
