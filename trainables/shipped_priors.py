"""Prior weight files the sweep's driver found on its own disk and shipped to the trial through
Ray's object store (orchestrator.priors), so that a worker needs neither the files nor the internet.

`local_prior_file` writes the bytes into a temporary folder under the names the loaders look for
and hands out the config with `weights_dir` (and `weights_path`, when a file stood for it)
pointing there; the loaders read them as local files, as they do on the driver's machine.
"""

import contextlib
import dataclasses
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from trainables.config import TrialConfig

WEIGHTS_DIR, WEIGHTS_PATH = "weights_dir", "weights_path"


class PriorKey(NamedTuple):
    """What decides which files a trial's prior is read from."""

    init: str
    backbone: str
    method: str
    weights_dir: str | None
    weights_path: str | None

    @classmethod
    def of(cls, config: TrialConfig) -> "PriorKey":
        # Only ssl-imagenet's file depends on the method (its catalogue row): trials of other
        # methods share one shipped copy.
        method = config.method if config.init == "ssl-imagenet" else ""
        return cls(config.init, config.backbone, method, config.weights_dir, config.resolved_weights_path)


@dataclasses.dataclass(frozen=True)
class ShippedFile:
    field: str  # WEIGHTS_DIR: it lies at <weights_dir>/<name>; WEIGHTS_PATH: it is the weights_path
    name: str  # the path the loader looks for under weights_dir (a hub folder's files: ORG--NAME/...)
    data: bytes


@dataclasses.dataclass(frozen=True)
class ShippedPrior:
    files: tuple[ShippedFile, ...]

    @property
    def size(self) -> int:
        return sum(len(file.data) for file in self.files)


@contextlib.contextmanager
def local_prior_file(config: TrialConfig, prior: ShippedPrior | None) -> Iterator[TrialConfig]:
    """`config` itself when nothing was shipped; else a copy reading the prior from temporary files
    holding its bytes, removed when the block ends."""
    if prior is None:
        yield config
        return
    with tempfile.TemporaryDirectory(prefix="shipped-prior-") as directory:
        changes: dict[str, str] = {}
        for file in prior.files:
            # weights_path's file sits apart, so that it cannot shadow a weights_dir name.
            folder = Path(directory) / ("weights_path" if file.field == WEIGHTS_PATH else "weights_dir")
            path = folder / file.name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(file.data)
            changes[file.field] = str(path) if file.field == WEIGHTS_PATH else str(folder)
        yield dataclasses.replace(config, **changes)
