"""The published ImageNet SSL checkpoints behind `init=ssl-imagenet` (double pretraining, P2X).

One row per (method, backbone) in `CATALOGUE`: where the file is published, its checksum as the
publisher gives it, and how the publisher's file lays out the backbone's tensors. Official
PyTorch checkpoints where the authors publish one (facebookresearch: MoCo v2, SimSiam, SwAV,
Barlow Twins, VICReg); where the official release is not PyTorch (SimCLR: TensorFlow; BYOL:
JAX), the PyTorch reproduction of OpenMMLab's maintained model zoo (mmselfsup, now mmpretrain).
Only MoCo v2 (md5 prefix in its README) and the OpenMMLab files (sha256 prefix in the file
name) have a published checksum, and only as a prefix; for the others none is published, and the
report says so. A whole digest, where a row has one, is checked in full. Whatever the checksum, a
file is read as tensors and plain values only (`torch.load(weights_only=True)`), never unpickled.

A file is looked for, first match wins, at `<weights_dir>/<file_name>` and in the cache,
torch's hub folder (`$TORCH_HOME/hub/checkpoints/<file_name>`); missing, it is downloaded into the
cache once (where there is internet and HF_HUB_OFFLINE is unset) and checked. Offline, the
error names the file, the URL and where to put it. A file whose checksum differs is refused.
`weights_path` bypasses the catalogue (any file, loaded by the lenient `load_ssl_checkpoint`).
"""

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from trainables.initializations.pretrained import load_exactly
from trainables.initializations.ssl_checkpoint import read_checkpoint
from trainables.missing_weights import MissingWeightsError, offline_mode


class WeightsChecksumError(MissingWeightsError):
    """A catalogued checkpoint on disk whose checksum is not the published one."""


@dataclass(frozen=True)
class Checksum:
    algorithm: str  # "sha256" or "md5"
    published: str  # the hex digest as published: whole, or its first characters

    def matches(self, digest: str) -> bool:
        return digest.startswith(self.published.lower())

    @property
    def is_whole(self) -> bool:
        return len(self.published) == hashlib.new(self.algorithm).digest_size * 2

    def describe(self) -> str:
        if self.is_whole:
            return f"{self.algorithm} digest {self.published}"
        # A prefix catches a corrupt or wrong download, not a forged file; the file is never
        # unpickled either way (load_catalogued_checkpoint).
        return f"{self.algorithm} digest prefix {self.published}, as published; a corruption check only"


@dataclass(frozen=True)
class KeyLayout:
    """How a publisher's file holds the backbone: the dict key around the state dict (None: the
    file is the state dict), the prefix before the backbone's own key names, and the key names
    under that prefix that are heads, not backbone. Keys without the prefix (momentum encoders,
    queues, necks, optimizer state) are not the backbone either."""

    name: str
    wrapper: str | None
    prefix: str
    heads: tuple[str, ...] = ()

    def backbone_tensors(self, checkpoint: dict) -> dict[str, torch.Tensor]:
        state = checkpoint[self.wrapper] if self.wrapper else checkpoint
        if not isinstance(state, dict):
            raise ValueError(f"no state dict under {self.wrapper!r} ({self.name} layout)")
        tensors = {}
        for key, value in state.items():
            if not key.startswith(self.prefix) or not isinstance(value, torch.Tensor):
                continue
            name = key.removeprefix(self.prefix)
            if not name.startswith(self.heads):  # startswith(()) is False: no heads, keep all
                tensors[name] = value
        return tensors


# Layouts, from each publisher's own loading code:
# MoCo: facebookresearch/moco main_lincls.py keeps 'module.encoder_q.*' but 'module.encoder_q.fc'.
MOCO = KeyLayout("moco", "state_dict", "module.encoder_q.", heads=("fc.",))
# SimSiam: facebookresearch/simsiam main_lincls.py keeps 'module.encoder.*' but 'module.encoder.fc'.
SIMSIAM = KeyLayout("simsiam", "state_dict", "module.encoder.", heads=("fc.",))
# SwAV: facebookresearch/swav hubconf.py strips "module." from a plain state dict; src/resnet50.py
# names the heads projection_head and prototypes.
SWAV = KeyLayout("swav", None, "module.", heads=("projection_head.", "prototypes."))
# Barlow Twins (main.py) and VICReg (main_vicreg.py) save `model.module.backbone.state_dict()`:
# torchvision ResNet-50 names, fc already an Identity.
BACKBONE_ONLY = KeyLayout("backbone-only", None, "")
# OpenMMLab (mmselfsup 1.x / mmpretrain): {"meta", "state_dict"} with "backbone.*" (torchvision
# names: conv1, bn1, layerN.M.downsample.0), "neck.*", "head.*", BYOL's "target_net.*".
OPENMMLAB = KeyLayout("openmmlab", "state_dict", "backbone.")


@dataclass(frozen=True)
class CataloguedCheckpoint:
    method: str
    backbone: str
    url: str
    file_name: str  # its name in the cache and in weights_dir: unique across the catalogue
    checksum: Checksum | None  # None: the publisher gives none
    layout: KeyLayout
    source: str  # who published it, and what it is
    notes: tuple[str, ...] = field(default=(), compare=False)

    def describe_checksum(self) -> str:
        return self.checksum.describe() if self.checksum else "no published checksum"


def _entry(method: str, url: str, checksum: Checksum | None, layout: KeyLayout, source: str,
           file_name: str | None = None) -> CataloguedCheckpoint:
    return CataloguedCheckpoint(method, "resnet50", url, file_name or os.path.basename(url), checksum,
                                layout, source)


_OPENMMLAB = "https://download.openmmlab.com/mmselfsup/1.x"
CATALOGUE: dict[tuple[str, str], CataloguedCheckpoint] = {
    (entry.method, entry.backbone): entry
    for entry in (
        # facebookresearch/moco README.md, "Models": MoCo v2, 800 epochs, 71.1% linear; md5 a04e12f8.
        _entry("mocov2", "https://dl.fbaipublicfiles.com/moco/moco_checkpoints/moco_v2_800ep/"
               "moco_v2_800ep_pretrain.pth.tar", Checksum("md5", "a04e12f8"), MOCO,
               "official (facebookresearch/moco), 800 epochs"),
        # facebookresearch/simsiam README.md, "Models and Logs": 100 epochs, 68.1% linear; no checksum.
        _entry("simsiam", "https://dl.fbaipublicfiles.com/simsiam/models/100ep/pretrain/checkpoint_0099.pth.tar",
               None, SIMSIAM, "official (facebookresearch/simsiam), 100 epochs",
               file_name="simsiam_100ep_checkpoint_0099.pth.tar"),
        # facebookresearch/swav hubconf.py (resnet50, 75.3% linear); no checksum.
        _entry("swav", "https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar", None, SWAV,
               "official (facebookresearch/swav), 800 epochs"),
        # facebookresearch/barlowtwins hubconf.py; no checksum.
        _entry("barlowtwins", "https://dl.fbaipublicfiles.com/barlowtwins/ep1000_bs2048_lrw0.2_lrb0.0048_lambd0.0051/"
               "resnet50.pth", None, BACKBONE_ONLY, "official (facebookresearch/barlowtwins), 1000 epochs",
               file_name="barlowtwins_ep1000_resnet50.pth"),
        # facebookresearch/vicreg hubconf.py; no checksum.
        _entry("vicreg", "https://dl.fbaipublicfiles.com/vicreg/resnet50.pth", None, BACKBONE_ONLY,
               "official (facebookresearch/vicreg)", file_name="vicreg_resnet50.pth"),
        # open-mmlab/mmpretrain configs/simclr/metafile.yml (800 epochs, 69.2% linear). The official
        # SimCLR release is TensorFlow. The file name ends in the first 8 hex digits of its sha256
        # (mmpretrain tools/model_converters/publish_model.py).
        _entry("simclr", f"{_OPENMMLAB}/simclr/simclr_resnet50_16xb256-coslr-800e_in1k/"
               "simclr_resnet50_16xb256-coslr-800e_in1k_20220825-85fcc4de.pth",
               Checksum("sha256", "85fcc4de"), OPENMMLAB,
               "OpenMMLab reproduction (mmpretrain model zoo), 800 epochs"),
        # open-mmlab/mmpretrain configs/byol/metafile.yml (200 epochs, 71.8% linear). The official
        # BYOL release is a JAX pickle.
        _entry("byol", f"{_OPENMMLAB}/byol/byol_resnet50_16xb256-coslr-200e_in1k/"
               "byol_resnet50_16xb256-coslr-200e_in1k_20220825-de817331.pth", Checksum("sha256", "de817331"),
               OPENMMLAB, "OpenMMLab reproduction (mmpretrain model zoo), 200 epochs"),
    )
}


def catalogue_entry(method: str | None, backbone: str) -> CataloguedCheckpoint:
    if method is None or (method, backbone) not in CATALOGUE:
        covered = ", ".join(f"{m}/{b}" for m, b in CATALOGUE)
        raise MissingWeightsError(
            f"no published ImageNet SSL checkpoint of {method} for {backbone} is catalogued (catalogue: "
            f"{covered}; trainables/initializations/ssl_catalogue.py): set weights_path to your own file"
        )
    return CATALOGUE[method, backbone]


def cache_folder() -> Path:
    """torch's hub folder, where torch.hub and timm keep downloaded checkpoints too."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def locate(entry: CataloguedCheckpoint, weights_dir: str | None) -> Path | None:
    folders = ([Path(weights_dir)] if weights_dir else []) + [cache_folder()]
    return next((folder / entry.file_name for folder in folders if (folder / entry.file_name).is_file()),
                None)


def verify(entry: CataloguedCheckpoint, path: Path) -> str:
    """A few words on how the file was checked; WeightsChecksumError when it does not match."""
    if entry.checksum is None:
        return "not verified: no published checksum"
    digest = file_digest(path, entry.checksum.algorithm)
    if not entry.checksum.matches(digest):
        raise WeightsChecksumError(
            f"{path} is not the published {entry.method} checkpoint: its {entry.checksum.algorithm} is "
            f"{digest[:16]}..., published {entry.checksum.published}; delete it and download {entry.url} "
            "again"
        )
    return f"verified ({entry.checksum.describe()})"


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(entry: CataloguedCheckpoint, weights_dir: str | None) -> tuple[Path, str]:
    """(path, how it was checked) of the entry's file: on disk, else downloaded once into the cache."""
    path = locate(entry, weights_dir)
    if path is not None:
        return path, verify(entry, path)
    target = cache_folder() / entry.file_name
    missing = (f"the {entry.method} ImageNet checkpoint for {entry.backbone} ({entry.source}) is not on this "
               f"machine: download {entry.url} and put it at {target} or {weights_dir or '<weights_dir>'}/"
               f"{entry.file_name}")
    if offline_mode():
        raise MissingWeightsError(f"{missing}; HF_HUB_OFFLINE is set")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Downloaded beside the target and renamed once checked: a half-written or wrong file never
    # sits under the name that is looked for.
    with tempfile.TemporaryDirectory(dir=target.parent) as folder:
        partial = Path(folder) / entry.file_name
        try:
            torch.hub.download_url_to_file(entry.url, str(partial), progress=False)
        except Exception as error:  # no network, a moved file: the same to the user
            raise MissingWeightsError(f"{missing} (the download failed: {type(error).__name__})") from error
        checked = verify(entry, partial)
        os.replace(partial, target)
    return target, checked


def load_catalogued_checkpoint(
    model: nn.Module, entry: CataloguedCheckpoint, path: Path, checked: str
) -> str:
    """Load the backbone tensors of a catalogued file into `model`, every one of them, exactly."""
    # Read as tensors and plain values only, whatever its checksum: a published prefix of 8 hex
    # digits is forged with about 2**32 hashes, so a match is no licence to unpickle.
    checkpoint = read_checkpoint(path)
    tensors = entry.layout.backbone_tensors(checkpoint)
    load_exactly(model, tensors, f"{path} ({entry.layout.name} layout)")
    return (f"ssl-imagenet: loaded all {len(tensors)} backbone tensors of the {entry.method} checkpoint "
            f"({entry.source}) from {path}, {checked}")


def availability(entry: CataloguedCheckpoint, weights_dir: str | None) -> str:
    """For the dry run: whether the entry's file is here and checks out, without downloading it."""
    path = locate(entry, weights_dir)
    if path is None:
        return (f"missing: {entry.file_name} (downloaded on first use from {entry.url}; offline, put it in "
                f"{cache_folder()})")
    try:
        return f"{verify(entry, path)}: {path}"
    except WeightsChecksumError as error:
        return f"refused: {error}"
