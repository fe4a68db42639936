"""Prior weight files the sweep's driver found on its own disk and shipped to the trial through
Ray's object store (orchestrator.priors), so that a worker needs neither the file nor the internet.

`local_prior_file` writes the bytes into a temporary folder under the name the loader looks for
and hands out the config with `weights_dir` (or `weights_path`, whichever the file stood for)
pointing there; the loaders read it as a local file, as they do on the driver's machine.
"""

import contextlib
import dataclasses
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from trainables.config import TrialConfig


class PriorKey(NamedTuple):
    """What decides which file a trial's prior is read from."""

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
class ShippedPrior:
    field: str  # "weights_dir" or "weights_path": what the file stands for in the config
    file_name: str  # the name the loader looks for in weights_dir
    data: bytes


@contextlib.contextmanager
def local_prior_file(config: TrialConfig, prior: ShippedPrior | None) -> Iterator[TrialConfig]:
    """`config` itself when nothing was shipped; else a copy reading the prior from a temporary
    file holding its bytes, removed when the block ends."""
    if prior is None:
        yield config
        return
    with tempfile.TemporaryDirectory(prefix="shipped-prior-") as directory:
        path = Path(directory) / prior.file_name
        path.write_bytes(prior.data)
        where = directory if prior.field == "weights_dir" else str(path)
        yield dataclasses.replace(config, **{prior.field: where})
