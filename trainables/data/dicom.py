"""DICOM files (pydicom): one single-frame image -> uint8 (S, S) gray or (S, S, 3) colour, as a
reading station shows it.

Pixel data is decoded by pydicom's own numpy handlers (uncompressed little/big endian, deflated,
RLE lossless) and by pylibjpeg's plugins (JPEG baseline and extended, JPEG lossless, JPEG-LS,
JPEG 2000). A gray image (MONOCHROME1/2) goes through DICOM's display pipeline (PS3.3 C.11):

1. modality: stored value * RescaleSlope + RescaleIntercept (or the Modality LUT Sequence);
2. window, the first that the file has: its VOI LUT Sequence (the first LUT; entries / (2^bits - 1)),
   its WindowCenter/WindowWidth (the first pair, with its VOILUTFunction: LINEAR by default,
   LINEAR_EXACT, SIGMOID), else the percentile window of `trainables.data.windowing`;
3. MONOCHROME1 (the lowest value is white): inverted, 1 - y, so bone is bright in every image.

Colour files (RGB, YBR_*, PALETTE COLOR) are converted to RGB by pydicom and scaled from
BitsStored to 8 bits. A multi-frame file (a CT/MR series or a cine loop in one file) is refused
with MultiFrameDicomError: which frame is "the image" is the user's call. A file that pydicom
cannot read or decode raises ValueError, which the dataset loaders count as unreadable and skip.
"""

from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi

from trainables.data.windowing import gray_to_uint8, linear_window, percentile_window

DICOM_EXTENSIONS = (".dcm", ".dicom")
DICOM_MAGIC_OFFSET, DICOM_MAGIC = 128, b"DICM"  # after the 128-byte preamble of a Part 10 file
GRAY = ("MONOCHROME1", "MONOCHROME2")
# What pydicom raises on damaged files: bad headers, truncated or undecodable pixel data, missing
# or malformed elements. Caught only around pydicom's calls, and reported as a ValueError.
PYDICOM_ERRORS = (InvalidDicomError, ValueError, AttributeError, KeyError, TypeError, EOFError,
                  NotImplementedError, RuntimeError, OSError)


class MultiFrameDicomError(ValueError):
    """A DICOM file holding more than one frame; str() is one line naming it and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def is_dicom_file(path: Path) -> bool:
    """A .dcm/.dicom file, or an extensionless file with the DICM marker (PACS exports often have
    no extension)."""
    if path.suffix.lower() in DICOM_EXTENSIONS:
        return True
    if path.suffix or not path.is_file():
        return False
    try:
        with open(path, "rb") as file:
            file.seek(DICOM_MAGIC_OFFSET)
            return file.read(len(DICOM_MAGIC)) == DICOM_MAGIC
    except OSError:  # unreadable: not taken for an image
        return False


def decode_dicom(path: Path, image_size: int) -> np.ndarray:
    """One single-frame DICOM file -> uint8 (image_size, image_size) for a gray image, windowed as
    above, or (image_size, image_size, 3) for a colour one."""
    try:
        dataset = pydicom.dcmread(path)
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise MultiFrameDicomError(
                f"{path} is a multi-frame DICOM ({frames} frames); only single-frame images are read: "
                "save each frame you want as its own .dcm file, or move this file out of the dataset folder"
            )
        pixels = dataset.pixel_array
        photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        if photometric in GRAY:
            gray = display_gray(pixels, dataset)
            return gray_to_uint8(1 - gray if photometric == "MONOCHROME1" else gray, image_size)
        if photometric == "PALETTE COLOR":
            pixels = apply_color_lut(pixels, dataset)
            bits = 16 if pixels.dtype == np.uint16 else 8
        else:
            bits = int(dataset.get("BitsStored", 8))
    except MultiFrameDicomError:
        raise
    except PYDICOM_ERRORS as error:
        raise ValueError(f"not a readable DICOM image ({type(error).__name__}: {error})") from error
    return rgb_to_uint8(pixels, bits, image_size)


def display_gray(pixels: np.ndarray, dataset: pydicom.Dataset) -> np.ndarray:
    """Stored gray values -> [0, 1]: the modality LUT, then the first window the file has (VOI LUT,
    window centre/width, else the percentile window). MONOCHROME1 is not inverted here."""
    values = apply_modality_lut(pixels, dataset)
    voi_luts = dataset.get("VOILUTSequence")
    if voi_luts and "LUTDescriptor" in voi_luts[0] and "LUTData" in voi_luts[0]:
        # The VOI LUT's input is the modality output, an integer for every LUT-bearing file.
        entries = apply_voi(np.rint(values).astype(np.int64), dataset)
        bits = int(voi_luts[0].LUTDescriptor[2])
        return entries.astype(np.float64) / (2**bits - 1)
    if "WindowCenter" in dataset and "WindowWidth" in dataset:
        center, width = (_first(dataset[name].value) for name in ("WindowCenter", "WindowWidth"))
        return linear_window(values, center, width, str(dataset.get("VOILUTFunction", "LINEAR")))
    return percentile_window(values)


def _first(value: object) -> float:
    """The first of a multi-valued element (a file may offer several windows; the first is the default)."""
    if isinstance(value, list | tuple | MultiValue):
        return float(value[0])
    return float(value)


def rgb_to_uint8(pixels: np.ndarray, bits: int, image_size: int) -> np.ndarray:
    """RGB (H, W, 3) of `bits` bits -> uint8 (image_size, image_size, 3)."""
    rgb = np.asarray(pixels, dtype=np.float64)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected RGB pixels (H, W, 3), got shape {rgb.shape}")
    levels = np.rint(np.clip(rgb / (2**bits - 1), 0, 1) * 255).astype(np.uint8)
    image = Image.fromarray(levels)
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)
