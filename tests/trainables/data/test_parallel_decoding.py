"""Decoding in a process pool gives the one-process result byte for byte: the same images in the
same order, the same channel count, the same unreadable files skipped and counted."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainables.data import load_dataset
from trainables.data import pool as data_pool
from trainables.data.dicom import MultiFrameDicomError
from trainables.data.pool import decode_image_files, decoding_processes

SIZE = 16


def mixed_folder(root: Path, dicom_writer) -> list[Path]:
    """Gray PNGs and JPEGs, DICOMs, a 16-bit PNG, then colour PNGs (so the pool turns three-channel
    mid-way), a corrupt file and a missing one: every path the decoder treats differently."""
    generator = np.random.default_rng(0)
    paths = []
    for number in range(20):
        path = root / f"gray_{number:02d}.{'png' if number % 2 else 'jpg'}"
        Image.fromarray(generator.integers(0, 256, (20, 24), dtype=np.uint8)).save(path)
        paths.append(path)
    for number in range(6):
        path = root / f"scan_{number}.dcm"
        window = (2000.0, 3000.0) if number % 2 else None  # else the percentile window
        dicom_writer(path, generator.integers(0, 4096, (20, 20)), window=window)
        paths.append(path)
    deep = root / "deep.png"
    Image.fromarray(generator.integers(0, 65536, (18, 18), dtype=np.uint16)).save(deep)
    corrupt = root / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG but not really")
    paths += [deep, corrupt, root / "missing.png"]
    for number in range(9):
        path = root / f"colour_{number}.png"
        Image.fromarray(generator.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_the_process_pool_decodes_exactly_what_one_process_does(tmp_path: Path, dicom_writer, capsys,
                                                                 caplog) -> None:
    paths = mixed_folder(tmp_path, dicom_writer)
    with caplog.at_level(logging.WARNING, logger="trainables.data.pool"):
        serial, serial_readable = decode_image_files(paths, SIZE, processes=1, chunk_size=len(paths))
    serial_warnings = [record.getMessage() for record in caplog.records]
    assert capsys.readouterr().out == ""  # one process: no progress lines
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trainables.data.pool"):
        parallel, parallel_readable = decode_image_files(paths, SIZE, processes=2, chunk_size=4)
    assert serial.dtype == parallel.dtype == torch.uint8
    assert serial.shape == parallel.shape == (len(paths) - 2, 3, SIZE, SIZE)  # colour files: three channels
    assert serial.numpy().tobytes() == parallel.numpy().tobytes()
    assert np.array_equal(serial_readable, parallel_readable) and (~serial_readable).sum() == 2
    assert [record.getMessage() for record in caplog.records] == serial_warnings
    assert sum("skipping unreadable image" in line for line in serial_warnings) == 2
    # The gray files fill all three channels; each image is its own file's decode.
    for row, path in enumerate(path for path, read in zip(paths, serial_readable, strict=True) if read):
        decoded = data_pool.decode_image(path, SIZE)
        expected = decoded.transpose(2, 0, 1) if decoded.ndim == 3 else \
            np.broadcast_to(decoded, (3, SIZE, SIZE))
        assert np.array_equal(serial[row].numpy(), expected), path
    # Progress: a line per tenth of the chunks at most, never one per image.
    lines = capsys.readouterr().out.splitlines()
    assert 1 <= len(lines) <= 10 and all("files/s" in line and "2 processes" in line for line in lines)
    count = len(paths)
    assert lines[-1].startswith(f" decoding {count} files in 2 processes: {count}/{count} (100%)")


def test_a_gray_set_stays_one_channel_in_the_pool(tmp_path: Path, dicom_writer) -> None:
    paths = [path for path in mixed_folder(tmp_path, dicom_writer) if "colour" not in path.name]
    serial, _ = decode_image_files(paths, SIZE, processes=1)
    parallel, readable = decode_image_files(paths, SIZE, processes=2, chunk_size=5)
    assert parallel.shape == (len(paths) - 2, 1, SIZE, SIZE) and torch.equal(serial, parallel)


def test_a_multi_frame_dicom_is_refused_with_the_same_line_either_way(tmp_path: Path, dicom_writer) -> None:
    paths = mixed_folder(tmp_path, dicom_writer)
    for name in ("cine_a.dcm", "cine_b.dcm"):
        dicom_writer(tmp_path / name, np.zeros((3, 8, 8), dtype=int))
    paths = paths[:5] + [tmp_path / "cine_a.dcm"] + paths[5:] + [tmp_path / "cine_b.dcm"]
    messages = []
    for processes, chunk_size in ((1, None), (2, 3)):
        with pytest.raises(MultiFrameDicomError) as raised:
            decode_image_files(paths, SIZE, processes=processes, chunk_size=chunk_size)
        messages.append(str(raised.value))
    assert messages[0] == messages[1]
    assert "cine_a.dcm" in messages[0] and "1 other file(s) are multi-frame too" in messages[0]


def test_a_dataset_of_many_files_is_decoded_in_the_pool_to_the_same_splits(tmp_path: Path, monkeypatch,
                                                                             capsys) -> None:
    for class_name in ("a", "b"):
        (tmp_path / class_name).mkdir()
        for number in range(12):
            Image.fromarray(np.random.default_rng(number).integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(
                tmp_path / class_name / f"{number}.png")
    one_process = load_dataset("imagefolder", SIZE, seed=0, data_root=tmp_path, cache=False)
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(data_pool, "PARALLEL_MIN_FILES", 10)  # 24 files: the pool's path
    monkeypatch.setattr(data_pool, "decoding_processes", lambda: 2)
    pooled = load_dataset("imagefolder", SIZE, seed=0, data_root=tmp_path, cache=False)
    assert "decoding 24 files in 2 processes" in capsys.readouterr().out
    assert pooled.split_hash() == one_process.split_hash()


def test_decoding_uses_the_cpus_this_process_may_use(monkeypatch) -> None:
    import os

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert decoding_processes() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a Ray worker of one CPU
    assert decoding_processes() == 1


def test_a_main_module_the_workers_cannot_run_again_falls_back_to_this_process(tmp_path: Path) -> None:
    """Code piped into python (main module '<stdin>', which multiprocessing's workers cannot
    import again) still decodes: the broken pool is said in one line and the files are decoded
    in the calling process, to the same result."""
    import os
    import subprocess
    import sys

    for number in range(6):
        Image.fromarray(np.full((8, 8), 40 * number, dtype=np.uint8)).save(tmp_path / f"{number}.png")
    code = (f"from pathlib import Path\nfrom trainables.data.pool import decode_image_files\n"
            f"images, readable = decode_image_files(sorted(Path({str(tmp_path)!r}).glob('*.png')), 4, "
            "processes=2)\n"
            "print('decoded', tuple(images.shape), images[:, 0, 0, 0].tolist(), readable.all())\n")
    root = Path(__file__).parents[3]
    python_path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    environment = {**os.environ, "PYTHONPATH": python_path}
    finished = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, timeout=300,
                              cwd=root, env=environment)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "decoded (6, 1, 4, 4) [0, 40, 80, 120, 160, 200] True" in finished.stdout
    assert sum("the decoding processes stopped" in line for line in finished.stderr.splitlines()) == 1
