"""DICOM files and 16-bit PNG/TIFF written here, read through load_dataset as a user would, and
checked against the DICOM standard's display pipeline computed independently in numpy."""

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.uid import JPEG2000Lossless, RLELossless

from trainables.data import ImageSplits, load_dataset
from trainables.data.dicom import MultiFrameDicomError
from trainables.data.windowing import PERCENTILE_WINDOW

DicomWriter = Callable[..., None]  # tests/conftest.py's write_dicom
SIZE = 16  # images are written at the loaded size, so nothing is resized and every value is exact


# The standard's formulas, written out here rather than taken from the code under test.
def linear_window_levels(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 (LINEAR) with output range 0..255, unrounded."""
    low_edge, high_edge = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    inside = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.where(values <= low_edge, 0.0, np.where(values > high_edge, 255.0, inside))


def percentile_levels(values: np.ndarray) -> np.ndarray:
    low, high = np.percentile(values.astype(np.float64), PERCENTILE_WINDOW)
    return np.minimum(np.maximum((values - low) * 255 / (high - low), 0.0), 255.0)


def assert_levels(decoded: np.ndarray, levels: np.ndarray) -> None:
    """decoded uint8 == levels rounded; where a level is within 1e-6 of a .5 tie either neighbour."""
    expected = np.rint(levels)
    tie = np.abs(levels - np.floor(levels) - 0.5) < 1e-6
    assert (decoded[~tie] == expected[~tie]).all(), np.argwhere(decoded != expected)[:5]
    assert (np.abs(decoded[tie].astype(int) - expected[tie]) <= 1).all()


def all_images(splits: ImageSplits) -> torch.Tensor:
    return torch.cat([splits.train_images, splits.val_images, splits.test_images])


def find(images: torch.Tensor, levels: np.ndarray) -> np.ndarray:
    """The one loaded image (1, H, W) within one gray level of `levels` (the files are random,
    so no other image comes near), as a uint8 array (H, W); its exact values are checked by the caller."""
    target = torch.as_tensor(np.rint(levels), dtype=torch.int16)
    distance = (images.to(torch.int16) - target).abs().amax(dim=(1, 2, 3))
    matches = (distance <= 1).nonzero().flatten()
    assert len(matches) == 1, f"{len(matches)} loaded images match, distances {sorted(distance.tolist())[:3]}"
    assert images.shape[1] == 1  # gray: stored as one channel
    return images[matches[0], 0].numpy()


def write_fillers(dicom_writer: DicomWriter, folder: Path, count: int, size: int, seed: int) -> None:
    """`count` random windowed DICOMs, so that a class has enough images to be split."""
    generator = np.random.default_rng(seed)
    for index in range(count):
        dicom_writer(folder / f"filler_{index}.dcm", generator.integers(0, 4096, (size, size)),
                    window=(2048, 4001))


@pytest.fixture(scope="module")
def dicom_folder(tmp_path_factory: pytest.TempPathFactory,
                 dicom_writer: DicomWriter) -> tuple[Path, dict[str, np.ndarray]]:
    """Two classes of 16x16 DICOMs, each kind of file twice, one corrupt file; returns the folder
    and the expected unrounded gray levels (0..255) of every readable file."""
    root = tmp_path_factory.mktemp("dicom")
    generator = np.random.default_rng(0)
    expected: dict[str, np.ndarray] = {}
    for label in ("normal", "abnormal"):
        for copy in range(2):
            name = f"{label}/{copy}"
            # MONOCHROME2, 12 bits stored, rescale 2x - 1024 and a window (centre 300, width 1001):
            # (w - 1) = 1000 keeps every level off a .5 tie.
            stored = generator.integers(0, 4096, (SIZE, SIZE))
            dicom_writer(root / label / f"windowed_{copy}.dcm", stored, rescale=(2, -1024),
                         window=(300, 1001))
            expected[f"{name} windowed"] = linear_window_levels(stored * 2.0 - 1024, 300, 1001)
            # MONOCHROME1 (low is white), signed 16-bit, rescale and window: inverted after windowing.
            stored = generator.integers(-2000, 2000, (SIZE, SIZE))
            dicom_writer(root / label / f"inverted_{copy}.dcm", stored, "MONOCHROME1", bits_stored=16,
                        signed=True, rescale=(1, 24), window=(40, 401))
            expected[f"{name} inverted"] = 255 - linear_window_levels(stored + 24.0, 40, 401)
            # No window: the robust percentile window of the modality values.
            stored = generator.integers(0, 1024, (SIZE, SIZE))
            stored[0, 0] = 60000  # one hot pixel the percentile window ignores
            dicom_writer(root / label / f"percentile_{copy}.dcm", stored, bits_stored=16, rescale=(0.5, 10))
            expected[f"{name} percentile"] = percentile_levels(stored * 0.5 + 10)
            # A VOI LUT beside a window: the LUT wins. Entries sorted 16-bit values, first mapped 100.
            stored = generator.integers(0, 1024, (SIZE, SIZE))
            entries = np.sort(generator.integers(0, 65536, 700))
            dicom_writer(root / label / f"lut_{copy}.dcm", stored, voi_lut=(100, entries), window=(500, 100))
            expected[f"{name} lut"] = entries[np.clip(stored - 100, 0, len(entries) - 1)] * 255 / 65535
    # An extensionless file with the DICM marker, as PACS exports name them.
    stored = generator.integers(0, 4096, (SIZE, SIZE))
    dicom_writer(root / "normal" / "IM000001", stored, window=(2048, 2001))
    expected["extensionless"] = linear_window_levels(stored.astype(np.float64), 2048, 2001)
    # A copy cut short, as an interrupted transfer leaves it.
    whole = (root / "normal" / "windowed_0.dcm").read_bytes()
    (root / "normal" / "truncated.dcm").write_bytes(whole[: len(whole) - 200])
    return root, expected


def test_dicom_files_decode_to_the_standard_display_values(dicom_folder, caplog) -> None:
    root, expected = dicom_folder
    with caplog.at_level(logging.WARNING):
        splits = load_dataset("imagefolder", SIZE, seed=0, data_root=root, cache=False)
    images = all_images(splits)
    assert splits.class_names == ("abnormal", "normal")
    assert len(images) == len(expected)
    for name, levels in expected.items():
        decoded = find(images, levels)
        assert_levels(decoded, levels)
        assert decoded.min() < 64 and decoded.max() > 192, name  # the window spreads the values
    # The corrupt file is skipped, counted and logged by name; nothing else is lost.
    assert splits.skipped_images == 1
    assert any("truncated.dcm" in record.getMessage() for record in caplog.records)
    assert splits.grayscale


def test_compressed_dicom_decodes_like_uncompressed(tmp_path: Path, dicom_writer: DicomWriter) -> None:
    """JPEG 2000 lossless (pylibjpeg's openjpeg plugin) and RLE lossless (pydicom's own); 32 px,
    the smallest side openjpeg's default six resolution levels encode."""
    generator = np.random.default_rng(6)
    expected = []
    for label, syntax in (("jpeg2000", JPEG2000Lossless), ("rle", RLELossless)):
        stored = generator.integers(0, 4096, (32, 32))
        path = tmp_path / label / "image.dcm"
        dicom_writer(path, stored, window=(1000, 1001))
        dataset = pydicom.dcmread(path)
        dataset.compress(syntax)
        dataset.save_as(path)
        assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
        expected.append(linear_window_levels(stored.astype(np.float64), 1000, 1001))
        write_fillers(dicom_writer, path.parent, 4, 32, seed=len(expected))
    splits = load_dataset("imagefolder", 32, seed=0, data_root=tmp_path, cache=False)
    assert splits.skipped_images == 0
    for levels in expected:
        assert_levels(find(all_images(splits), levels), levels)


def test_monochrome1_is_the_inverse_of_monochrome2(tmp_path: Path, dicom_writer: DicomWriter) -> None:
    generator = np.random.default_rng(1)
    for index in range(5):
        stored = generator.integers(0, 4096, (SIZE, SIZE))
        for photometric, label in (("MONOCHROME1", "one"), ("MONOCHROME2", "two")):
            dicom_writer(tmp_path / label / f"{index}.dcm", stored, photometric, window=(2000, 3001))
    splits = load_dataset("imagefolder", SIZE, seed=0, data_root=tmp_path, cache=False)
    images = all_images(splits).to(torch.int16)
    labels = torch.cat([splits.train_labels, splits.val_labels, splits.test_labels])
    inverted, plain = images[labels == 0], images[labels == 1]
    assert len(inverted) == len(plain) == 5
    for image in inverted:  # each MONOCHROME1 image is 255 minus its MONOCHROME2 twin
        assert sum(torch.equal(255 - image, other) for other in plain) == 1


def test_a_multi_frame_dicom_is_refused_with_one_line(tmp_path: Path, dicom_writer: DicomWriter) -> None:
    generator = np.random.default_rng(2)
    for label in ("a", "b"):
        for index in range(3):
            dicom_writer(tmp_path / label / f"{index}.dcm", generator.integers(0, 4096, (SIZE, SIZE)))
    dicom_writer(tmp_path / "b" / "series.dcm", generator.integers(0, 4096, (4, SIZE, SIZE)))
    with pytest.raises(MultiFrameDicomError) as raised:
        load_dataset("imagefolder", SIZE, seed=0, data_root=tmp_path, cache=False)
    message = str(raised.value)
    assert "\n" not in message
    assert str(tmp_path / "b" / "series.dcm") in message and "4 frames" in message
    assert "single-frame" in message


def test_csvfolder_names_dicom_files_by_their_file_name(tmp_path: Path, dicom_writer: DicomWriter) -> None:
    generator = np.random.default_rng(3)
    rows, expected = ["image,label"], []
    for index in range(10):
        stored = generator.integers(0, 4096, (SIZE, SIZE))
        dicom_writer(tmp_path / "images" / f"scan{index}.dcm", stored, window=(2048, 1001))
        expected.append(linear_window_levels(stored.astype(np.float64), 2048, 1001))
        rows.append(f"scan{index}.dcm,{'yes' if index % 2 else 'no'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    splits = load_dataset("csvfolder", SIZE, seed=0, data_root=tmp_path, cache=False)
    images = all_images(splits)
    assert len(images) == 10 and splits.skipped_images == 0 and splits.grayscale
    for levels in expected:
        assert_levels(find(images, levels), levels)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_images_are_read_at_full_depth_and_percentile_windowed(tmp_path: Path, suffix: str) -> None:
    generator = np.random.default_rng(4)
    expected = []
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for index in range(5):
            values = generator.integers(20000, 50000, (SIZE, SIZE)).astype(np.uint16)
            image = Image.fromarray(values)
            assert image.mode == "I;16"
            image.save(tmp_path / label / f"{index}{suffix}")
            expected.append(percentile_levels(values.astype(np.float64)))
    splits = load_dataset("imagefolder", SIZE, seed=0, data_root=tmp_path, cache=False)
    images = all_images(splits)
    assert len(images) == 10 and splits.grayscale
    for levels in expected:
        decoded = find(images, levels)
        assert_levels(decoded, levels)
        # Truncated to 8 bits, every one of these values (all above 255) would have been 255.
        assert len(np.unique(decoded)) > 100


def test_resized_dicom_keeps_the_window(tmp_path: Path, dicom_writer: DicomWriter) -> None:
    """At another image size the windowed image is resized: a constant region stays its level."""
    stored = np.full((64, 64), 1000)
    stored[:, 32:] = 3000
    for label in ("a", "b"):
        for index in range(5):
            dicom_writer(tmp_path / label / f"{index}.dcm", stored, window=(2000, 4001))
    splits = load_dataset("imagefolder", 16, seed=0, data_root=tmp_path, cache=False)
    expected = np.rint(linear_window_levels(np.array([1000.0, 3000.0]), 2000, 4001))
    assert 0 < expected[0] < expected[1] < 255
    for image in all_images(splits)[:, 0].numpy():
        assert (image[:, :7] == expected[0]).all() and (image[:, 9:] == expected[1]).all()


def test_colour_images_are_not_grayscale(tmp_path: Path) -> None:
    generator = np.random.default_rng(5)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for index in range(5):
            rgb = generator.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(tmp_path / label / f"{index}.png")
    assert not load_dataset("imagefolder", SIZE, seed=0, data_root=tmp_path, cache=False).grayscale
