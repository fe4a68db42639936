"""Decoding a dataset folder: one process against the process pool, side by side in one run.

Run: python benchmarks/parallel_decoding.py [--pngs 4000] [--dicoms 1000] [--size 224] [--repeats 3]

The folder, written to a temporary directory first (not timed): `--pngs` 8-bit gray PNGs of
256x256 (smooth fields with noise, like radiographs) and `--dicoms` 12-bit MONOCHROME2 DICOM
files of 256x256 written with pydicom, half with a window centre/width, half percentile-windowed.
Each is decoded and resized to `--size` by trainables.data.pool.decode_image_files:

- one thread: every file one after another in this process (`decode_chunk` on all of them);
- one process: processes=1, this process with its decoding threads (how the driver decoded
  before the process pool; PIL and numpy release the GIL for part of the work);
- process pool: processes=N (default: the CPUs this process may use), chunks in N worker
  processes forked from multiprocessing's fork server; each decode starts its own workers and
  that is in its time. The fork server itself starts once per driver process (it imports torch
  and the data modules): timed apart, on a first small decode.

The three take turns within each repeat. Printed: the median over repeats of images per second
of each, the pool's ratio to each, the load average before and after, and, measured once more
after the repeats, the cores each got: CPU seconds over wall seconds of one thread, and of the
pool's workers (their own CPU clocks) on the same files; on a shared machine these say why the
ratio is what it is. The three results are checked to be equal, byte for byte.
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from trainables.data.pool import _process_pool, decode_chunk, decode_image_files, decoding_processes

SOURCE_SIZE = 256


def smooth_fields(count: int, bits: int, seed: int) -> np.ndarray:
    """(count, 256, 256) smooth random fields with noise, integers of `bits` bits."""
    generator = torch.Generator().manual_seed(seed)
    field = F.interpolate(torch.rand(count, 1, 8, 8, generator=generator), size=(SOURCE_SIZE, SOURCE_SIZE),
                          mode="bicubic", align_corners=False)[:, 0]
    field = (field + 0.05 * torch.randn(field.shape, generator=generator)).clamp(0, 1)
    return (field * (2**bits - 1)).round().numpy().astype(np.uint16 if bits > 8 else np.uint8)


def write_pngs(folder: Path, count: int) -> list[Path]:
    paths = []
    for start in range(0, count, 500):
        for offset, pixels in enumerate(smooth_fields(min(500, count - start), 8, seed=start)):
            path = folder / f"xray_{start + offset:05d}.png"
            Image.fromarray(pixels).save(path)
            paths.append(path)
    return paths


def write_dicoms(folder: Path, count: int) -> list[Path]:
    """12-bit MONOCHROME2 secondary-capture files; every other one carries a window."""
    paths = []
    for start in range(0, count, 500):
        for offset, pixels in enumerate(smooth_fields(min(500, count - start), 12, seed=10**6 + start)):
            number = start + offset
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            dataset = Dataset()
            dataset.file_meta = meta
            dataset.SOPClassUID = SecondaryCaptureImageStorage
            dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
            dataset.Modality, dataset.Rows, dataset.Columns = "CR", SOURCE_SIZE, SOURCE_SIZE
            dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
            dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
            dataset.PixelRepresentation = 0
            if number % 2:
                dataset.WindowCenter, dataset.WindowWidth = 2048, 3000
            dataset.PixelData = pixels.tobytes()
            path = folder / f"scan_{number:05d}.dcm"
            dataset.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def timed_side_by_side(decoders: dict, repeats: int) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Median seconds of each decoder over repeats, the decoders taking turns within each repeat
    (so that a change in the machine's load falls on all of them), and each one's last images."""
    seconds: dict[str, list[float]] = {name: [] for name in decoders}
    images = {}
    for _ in range(repeats):
        for name, decode in decoders.items():
            started = time.perf_counter()
            images[name] = decode()
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in seconds.items()}, images


def cpu_timed_chunk(paths: list[Path], size: int) -> float:
    """decode_chunk's CPU seconds in the worker that ran it."""
    started = time.process_time()
    decode_chunk(paths, size)
    return time.process_time() - started


def cores_received(paths: list[Path], size: int, processes: int) -> tuple[float, float]:
    """(CPU seconds / wall seconds) of one thread and of the pool's workers on the same files: how
    many cores each got from the machine. On an idle machine the pool's is near `processes`."""
    started, cpu = time.perf_counter(), time.process_time()
    decode_chunk(paths, size)
    single = (time.process_time() - cpu) / (time.perf_counter() - started)
    chunk_size = -(-len(paths) // (processes * 8))
    chunks = [paths[start:start + chunk_size] for start in range(0, len(paths), chunk_size)]
    with _process_pool(processes) as executor:
        started = time.perf_counter()
        worker_cpu = sum(executor.map(cpu_timed_chunk, chunks, [size] * len(chunks)))
        return single, worker_cpu / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pngs", type=int, default=4000)
    parser.add_argument("--dicoms", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, default=decoding_processes())
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        paths = write_pngs(folder, arguments.pngs) + write_dicoms(folder, arguments.dicoms)
        print(f"{arguments.pngs} PNGs + {arguments.dicoms} DICOMs ({SOURCE_SIZE} px) -> {arguments.size} px, "
              f"median of {arguments.repeats}, {arguments.processes} processes for the pool, "
              f"load average {os.getloadavg()[0]:.1f}")
        started = time.perf_counter()
        decode_image_files(paths[:64], arguments.size, processes=arguments.processes)
        print(f"fork server start-up and a first decode of 64 files: {time.perf_counter() - started:.1f} s")
        size, processes = arguments.size, arguments.processes
        medians, images = timed_side_by_side({
            "one thread": lambda: torch.from_numpy(decode_chunk(paths, size).images),
            "one process": lambda: decode_image_files(paths, size, processes=1)[0],
            "process pool": lambda: decode_image_files(paths, size, processes=processes)[0],
        }, arguments.repeats)
        reference = images["one thread"]
        assert all(torch.equal(reference, other) for other in images.values()), "results differ"
        single_cores, pool_cores = cores_received(paths, size, processes)
    single, threads, pool = medians["one thread"], medians["one process"], medians["process pool"]
    count = len(paths)
    print(f"{'one thread':>14} {'one process':>14} {'process pool':>14}  "
          "pool / one thread  pool / one process")
    print(f"{count / single:>10.0f} i/s {count / threads:>10.0f} i/s {count / pool:>10.0f} i/s  "
          f"{single / pool:>17.2f}  {threads / pool:>18.2f}   (load average {os.getloadavg()[0]:.1f})")
    print(f"cores received (CPU s / wall s, once more after the repeats): one thread {single_cores:.2f}, "
          f"the pool's {processes} workers {pool_cores:.2f}")


if __name__ == "__main__":
    main()
