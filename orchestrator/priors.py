"""The prior weight files of a sweep's trials, found by the driver and shipped through Ray.

A worker node has neither the driver's weights_dir nor its caches, and perhaps no internet. So
before any trial starts the driver finds the files each trial's prior is read from, on its own
disk or caches, and downloads here once what is missing (unless HF_HUB_OFFLINE is set):
  - a weights_path file or https URL;
  - the SSL catalogue's checkpoint (ssl-imagenet);
  - supervised weights (imagenet, bit-s, bit-m and the inits built from them):
    `<weights_dir>/<name>.<suffix>`, the Hugging Face hub cache or torch's hub folder;
  - a `timm:` backbone's pretrained weights, and an `hf-hub:` backbone's config.json (its
    architecture, needed even at random init) with its weights for init=pretrained.
It puts their bytes, with the names the loaders look for, into Ray's object store. The worker
writes them into a temporary folder and reads them from there (trainables.shipped_priors). MLflow
URIs travel their own way (orchestrator.lineage). A file the driver can neither find nor download
is not shipped, and the worker looks for it itself, failing the trial with its own words.
"""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from orchestrator.lineage import is_mlflow_uri
from trainables.backbones import is_hub_backbone
from trainables.backbones.hub import hub_prior_files
from trainables.config import TrialConfig
from trainables.initializations import ssl_catalogue
from trainables.initializations.pretrained import (
    MissingWeightsError,
    cached_url,
    fetch_supervised_weights,
    is_url,
    supervised_weights,
)
from trainables.shipped_priors import WEIGHTS_DIR, WEIGHTS_PATH, PriorKey, ShippedFile, ShippedPrior

# (the config field the file stands for, the name the loader looks for, the file on this machine)
PriorFile = tuple[str, str, Path]


def prior_files(config: TrialConfig) -> list[PriorFile]:
    """The files the trial's initialization reads, found (or downloaded) on this machine; [] when
    it reads none (random init of a registered or timm: backbone, an MLflow URI)."""
    files: list[PriorFile] = []
    if is_hub_backbone(config.backbone):
        pretrained = config.init == "pretrained"
        files += [(WEIGHTS_DIR, name, path)
                  for name, path in hub_prior_files(config.backbone, pretrained, config.weights_dir).items()]
    location = config.resolved_weights_path
    if config.init in ("random", "pretrained") or is_mlflow_uri(location):
        return files
    if location:
        path = cached_url(location) if is_url(location) else Path(location).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"weights_path {location} is not a file here")
        return [*files, (WEIGHTS_PATH, path.name, path)]
    if config.init == "ssl-imagenet":
        entry = ssl_catalogue.catalogue_entry(config.method, config.backbone)
        path, _ = ssl_catalogue.fetch(entry, config.weights_dir)  # downloaded here once when missing
        return [*files, (WEIGHTS_DIR, entry.file_name, path)]
    weights = supervised_weights(config.init if config.init in ("bit-s", "bit-m") else "imagenet",
                                 config.backbone)
    found = fetch_supervised_weights(weights, config.weights_dir)
    # A hub cache file has the hub's name (model.safetensors): under weights_dir it is <name>.<suffix>.
    name = found.name if found.name in weights.file_names else weights.name + found.suffix
    if name not in weights.file_names:
        names = ", ".join(weights.file_names)
        raise MissingWeightsError(f"{found} is not a file name the loader reads ({names})")
    return [*files, (WEIGHTS_DIR, name, found)]


def resolve_priors(configs: Iterable[TrialConfig]) -> dict[PriorKey, ShippedPrior]:
    """{prior key: the files' bytes and names} for each distinct prior the trials read; one line
    printed per file. A prior that cannot be had here is left to the worker, as before."""
    resolved: dict[PriorKey, ShippedPrior] = {}
    paths: list[tuple[Path, int]] = []
    for config in configs:
        key = PriorKey.of(config)
        if key in resolved:
            continue
        try:
            found = prior_files(config)
        except (MissingWeightsError, OSError):  # the worker reports it in the trial's own terms
            continue
        if not found:
            continue
        shipped = tuple(ShippedFile(field, name, path.read_bytes()) for field, name, path in found)
        resolved[key] = ShippedPrior(shipped)
        paths += [(path, len(file.data)) for (_, _, path), file in zip(found, shipped, strict=True)]
    # Said once every file is read: from here on the driver's copies may go.
    for path, size in dict(paths).items():
        print(f"weights: {path} shipped to the workers through Ray's object store ({size / 2**20:.1f} MiB)",
              flush=True)
    return resolved


def share_priors(resolved: dict[PriorKey, ShippedPrior]) -> dict[PriorKey, Any]:
    """Each prior into Ray's object store: {prior key: ObjectRef}."""
    import ray

    return {key: ray.put(prior) for key, prior in resolved.items()}
