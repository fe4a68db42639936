"""The prior weight files of a sweep's trials, found by the driver and shipped through Ray.

A worker node has neither the driver's weights_dir nor its caches, and perhaps no internet. So
before any trial starts the driver finds the one file each trial's prior is read from, on its own
disk or caches (a weights_path file or URL, `<weights_dir>/<name>.<suffix>`, the Hugging Face hub
or torch hub cache, the SSL catalogue's checkpoint, downloaded here once if missing) and puts its
bytes, with the name the loader looks for, into Ray's object store. The worker writes them into a
temporary folder and reads them from there (trainables.shipped_priors). MLflow URIs travel their
own way (orchestrator.lineage); hf-hub: folders and timm: backbones are not shipped; a file the
driver cannot find is not shipped either, and the worker looks for it itself as before.
"""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from orchestrator.lineage import is_mlflow_uri
from trainables.backbones import is_hub_backbone
from trainables.config import TrialConfig
from trainables.initializations import ssl_catalogue
from trainables.initializations.pretrained import (
    MissingWeightsError,
    cached_url,
    is_url,
    supervised_weights,
    supervised_weights_on_disk,
)
from trainables.shipped_priors import PriorKey, ShippedPrior


def prior_file(config: TrialConfig) -> tuple[str, str, Path] | None:
    """(the config field the file stands for, the file name the loader looks for, the file on this
    machine), or None when the trial's prior is no single file found here."""
    location = config.resolved_weights_path
    if config.init == "random" or is_mlflow_uri(location):
        return None
    if location:
        path = cached_url(location) if is_url(location) else Path(location).expanduser()
        return ("weights_path", path.name, path) if path.is_file() else None
    if config.init == "ssl-imagenet":
        entry = ssl_catalogue.catalogue_entry(config.method, config.backbone)
        path, _ = ssl_catalogue.fetch(entry, config.weights_dir)  # downloaded here once when missing
        return "weights_dir", entry.file_name, path
    if config.init == "pretrained" or is_hub_backbone(config.backbone):
        return None
    weights = supervised_weights(config.init if config.init in ("bit-s", "bit-m") else "imagenet",
                                 config.backbone)
    found = supervised_weights_on_disk(weights, config.weights_dir)
    if found is None:
        return None
    # A hub cache file has the hub's name (model.safetensors): under weights_dir it is <name>.<suffix>.
    name = found.name if found.name in weights.file_names else weights.name + found.suffix
    return ("weights_dir", name, found) if name in weights.file_names else None


def resolve_priors(configs: Iterable[TrialConfig]) -> dict[PriorKey, ShippedPrior]:
    """{prior key: the file's bytes and name} for each distinct prior file the trials read; one
    line printed each. A prior that is not found here is left to the worker, as before."""
    resolved: dict[PriorKey, ShippedPrior] = {}
    paths: dict[PriorKey, Path] = {}
    for config in configs:
        key = PriorKey.of(config)
        if key in resolved:
            continue
        try:
            found = prior_file(config)
        except (MissingWeightsError, OSError):  # the worker reports it in the trial's own terms
            found = None
        if found is None:
            continue
        field, name, path = found
        resolved[key] = ShippedPrior(field, name, path.read_bytes())
        paths[key] = path
    # Said once every file is read: from here on the driver's copies may go.
    for key, path in paths.items():
        print(f"weights: {path} shipped to the workers through Ray's object store "
              f"({len(resolved[key].data) / 2**20:.1f} MiB)", flush=True)
    return resolved


def share_priors(resolved: dict[PriorKey, ShippedPrior]) -> dict[PriorKey, Any]:
    """Each prior into Ray's object store: {prior key: ObjectRef}."""
    import ray

    return {key: ray.put(prior) for key, prior in resolved.items()}
