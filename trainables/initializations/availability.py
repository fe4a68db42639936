"""Whether the weights an arm starts from are on this machine, without downloading anything.

The dry run prints one line per distinct prior of a sweep from `weights_availability`; the same
files are looked for in the same places as when the trial loads them (hub.py, pretrained.py,
ssl_catalogue.py), on the machine that runs the dry run.
"""

from pathlib import Path

from trainables.backbones import is_hub_backbone
from trainables.backbones.hub import HF_HUB_PREFIX, TIMM_PREFIX, hub_model_folder, timm_weights_on_disk
from trainables.initializations import ssl_catalogue
from trainables.initializations.pretrained import (
    MissingWeightsError,
    check_sha256,
    is_url,
    supervised_weights,
    supervised_weights_on_disk,
    url_cache_path,
)
from trainables.redaction import redact_uri

DOWNLOADED_LATER = "not on this machine: downloaded on first use where there is internet"


def weights_availability(init: str, backbone: str, method: str, weights_dir: str | None,
                         weights_path: str | None, weights_sha256: str | None = None) -> str | None:
    """A phrase saying where the arm's weights are, or that they are missing; None for random init."""
    if init == "random":
        return None
    if weights_path:
        # A URL is downloaded into torch's hub folder under a hash of it (pretrained.url_cache_path).
        path = url_cache_path(weights_path) if is_url(weights_path) else Path(weights_path)
        if not path.is_file():
            return f"missing: weights_path {redact_uri(weights_path)}"
        if weights_sha256:
            try:
                check_sha256(path, weights_sha256, weights_path)
            except MissingWeightsError as error:
                return f"refused: {error}"
            return f"weights_path: {path} (sha256 verified)"
        return f"weights_path: {path}"
    if init == "ssl-imagenet":
        try:
            return ssl_catalogue.availability(ssl_catalogue.catalogue_entry(method, backbone), weights_dir)
        except MissingWeightsError as error:
            return f"missing: {error}"
    if init == "pretrained":
        return _hub_availability(backbone, weights_dir)
    if is_hub_backbone(backbone):
        return None
    weights = supervised_weights("imagenet" if init not in ("bit-s", "bit-m") else init, backbone)
    found = supervised_weights_on_disk(weights, weights_dir)
    if found is not None:
        return f"on disk: {found}"
    if weights.in_timm or weights.url:
        return DOWNLOADED_LATER
    return f"missing: {weights.name} (no public download)"


def _hub_availability(backbone: str, weights_dir: str | None) -> str:
    if backbone.startswith(HF_HUB_PREFIX):
        folder = hub_model_folder(backbone.removeprefix(HF_HUB_PREFIX), True, weights_dir)
        return f"on disk: {folder}" if folder else DOWNLOADED_LATER
    try:
        found = timm_weights_on_disk(backbone.removeprefix(TIMM_PREFIX), weights_dir)
    except MissingWeightsError as error:
        return f"missing: {error}"
    return f"on disk: {found}" if found else DOWNLOADED_LATER
