"""Weights the sweep's driver resolved and shipped to the trial through Ray's object store.

`weights_path` may name an MLflow model (`runs:/...`, `models:/...`). Workers can reach neither
MLflow nor the driver's disk, so the driver reads the model's safetensors state dict
(orchestrator.lineage) and puts its bytes into the object store; `local_weights_file` writes them to a file on
the worker and hands out the config with `weights_path` pointing there, so every consumer of
`weights_path` (ssl-imagenet, the supervised and transfer inits) reads them as a local file.
"""

import contextlib
import dataclasses
import tempfile
from collections.abc import Iterator
from pathlib import Path

from trainables.config import TrialConfig

SHIPPED_FILE_NAME = "shipped_backbone.safetensors"  # its suffix tells the loaders its format


@contextlib.contextmanager
def local_weights_file(config: TrialConfig, weights: bytes | None) -> Iterator[TrialConfig]:
    """`config` itself when nothing was shipped; else a copy whose weights_path is a temporary file
    holding `weights`, removed when the block ends."""
    if weights is None:
        yield config
        return
    with tempfile.TemporaryDirectory(prefix="shipped-weights-") as directory:
        path = Path(directory) / SHIPPED_FILE_NAME
        path.write_bytes(weights)
        yield dataclasses.replace(config, weights_path=str(path))
