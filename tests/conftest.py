"""Fixtures shared by the test packages: writers of medical image files (DICOM), and files that
run code when unpickled (to show that no weights file is ever unpickled)."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid


def write_dicom(path: Path, stored: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 12,
                signed: bool = False, rescale: tuple[float, float] | None = None,
                window: tuple[float, float] | None = None,
                voi_lut: tuple[int, np.ndarray] | None = None) -> None:
    """A Part 10 file of `stored` values (Rows, Columns) or (frames, Rows, Columns); rescale is
    (slope, intercept); window (centre, width); voi_lut (first mapped value, 16-bit entries)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "CR"
    if stored.ndim == 3:
        dataset.NumberOfFrames = stored.shape[0]
    dataset.Rows, dataset.Columns = stored.shape[-2:]
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, photometric
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, bits_stored, bits_stored - 1
    dataset.PixelRepresentation = int(signed)
    if rescale is not None:
        dataset.RescaleSlope, dataset.RescaleIntercept = rescale
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    if voi_lut is not None:
        first_mapped, entries = voi_lut
        item = Dataset()
        item.LUTDescriptor = [len(entries), first_mapped, 16]
        item.add_new("LUTData", "US", [int(value) for value in entries])
        dataset.VOILUTSequence = [item]
    dataset.PixelData = stored.astype(np.int16 if signed else np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="session")
def dicom_writer() -> Callable[..., None]:
    """write_dicom, for tests in any folder (a conftest's functions cannot be imported by them)."""
    return write_dicom


class PickleBomb:
    """Unpickled, it creates the file `marker`: the stand-in for any code a stranger's pickle runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@pytest.fixture
def pickle_bomb(tmp_path: Path) -> tuple[Callable[[Path], Path], Path]:
    """(plant, marker): plant(path) writes a torch.save file holding a tensor and a PickleBomb at
    `path`; `marker` exists afterwards only if something unpickled one."""
    import pickle

    import torch

    marker = tmp_path / "code-ran"
    # The bomb is live: plain unpickling runs it (into a second marker, so `marker` stays clean).
    armed = tmp_path / "bomb-is-live"
    pickle.loads(pickle.dumps(PickleBomb(armed)))
    assert armed.exists()

    def plant(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": {"conv.weight": torch.zeros(1)}, "args": PickleBomb(marker)}, path)
        return path

    return plant, marker
