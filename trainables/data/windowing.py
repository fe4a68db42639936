"""Windowing: high-bit-depth gray values (DICOM, 16-bit PNG/TIFF) -> display values in [0, 1].

A radiograph stores 10 to 16 bits per pixel; a network sees 8. Which 8 is the window: the
stored VOI LUT or window centre/width of a DICOM file (DICOM PS3.3 C.11.2), else a robust
percentile window of the image itself (the 0.5th to the 99.5th percentile, so a few hot or dead
pixels and burnt-in labels do not squash the anatomy into a handful of gray levels). The rule
for each file format is in `trainables.data.dicom` and `decode_high_depth_image` here.
"""

import numpy as np
from PIL import Image

PERCENTILE_WINDOW = (0.5, 99.5)  # the robust window when a file gives none, in percent
# PIL modes of more than 8 bits per gray pixel (16-bit PNG and TIFF open as I;16*, 32-bit TIFF as I or F).
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def linear_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM's VOI window (PS3.3 C.11.2.1.2 and C.11.2.1.3) with output range [0, 1].

    LINEAR: 0 for x <= c - 0.5 - (w - 1) / 2, 1 for x > c - 0.5 + (w - 1) / 2, else
    (x - (c - 0.5)) / (w - 1) + 0.5; LINEAR_EXACT: the same with c and w as given; SIGMOID:
    1 / (1 + exp(-4 (x - c) / w)).
    """
    values = np.asarray(values, dtype=np.float64)
    function = function.upper()
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"window width {width} must be > 0 for SIGMOID")
        return 1 / (1 + np.exp(-4 * (values - center) / width))
    if function == "LINEAR":
        if width < 1:
            raise ValueError(f"window width {width} must be >= 1 for LINEAR")
        center, width = center - 0.5, width - 1
    elif function != "LINEAR_EXACT":
        raise ValueError(f"unknown VOI LUT function {function!r}; DICOM has LINEAR, LINEAR_EXACT, SIGMOID")
    if width == 0:  # LINEAR with width 1: a threshold at the centre
        return (values > center).astype(np.float64)
    return np.clip((values - center) / width + 0.5, 0.0, 1.0)


def percentile_window(values: np.ndarray, percentiles: tuple[float, float] = PERCENTILE_WINDOW) -> np.ndarray:
    """Map the image's low..high percentile values linearly to 0..1, clipping outside; a flat image is 0."""
    values = np.asarray(values, dtype=np.float64)
    low, high = np.percentile(values, percentiles)
    if high <= low:
        return np.zeros_like(values)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def gray_to_uint8(gray: np.ndarray, image_size: int) -> np.ndarray:
    """[0, 1] gray (H, W) -> uint8 (image_size, image_size), resized (bilinear, antialiased)
    before it is rounded, so no precision is lost to an 8-bit intermediate. One channel: it is
    stored so, and expanded to three only when a view is normalized (`trainables.augmentations`)."""
    gray = np.asarray(gray, dtype=np.float64)
    if gray.shape != (image_size, image_size):
        resized = Image.fromarray(gray.astype(np.float32)).resize(
            (image_size, image_size), Image.Resampling.BILINEAR)
        gray = np.asarray(resized, dtype=np.float64)
    return np.rint(np.clip(gray, 0.0, 1.0) * 255).astype(np.uint8)


def decode_high_depth_image(image: Image.Image, image_size: int) -> np.ndarray:
    """A PIL image of more than 8 bits per gray pixel (HIGH_DEPTH_MODES) -> uint8 (S, S), read at
    full depth and percentile-windowed (PNG and TIFF carry no window of their own)."""
    return gray_to_uint8(percentile_window(np.asarray(image)), image_size)
