"""Whether pretrained weights may be fetched, and the error when they cannot be had.

Both the backbones (a hub architecture's own published weights, trainables/backbones/hub.py) and
the initializations (trainables/initializations/) read weights from disk, caches or the network;
this module is what they share, so that neither package imports the other for it.
"""

import os


class MissingWeightsError(RuntimeError):
    """Pretrained weights are neither on disk nor reachable; the message says where to put them."""


def offline_mode() -> bool:
    """HF_HUB_OFFLINE is set: only local files and caches are read, never the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
