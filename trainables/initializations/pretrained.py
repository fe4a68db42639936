"""Pretrained weights: which file each (init, backbone) needs, where it is looked for, how it loads.

Where weights come from, first match wins:
  1. `weights_path`: a file, or an https URL downloaded once into torch's hub folder under a hash
     of the URL (`url_cache_path`); with `weights_sha256` the file must have that sha256;
  2. `<weights_dir>/<name>.safetensors|.pth|.npz`, where <name> is the timm pretrained tag (e.g.
     `resnet50.tv_in1k`, `resnetv2_50x1_bit.goog_in21k`) or, for weights timm does not list, the
     name `supervised_weights` gives (`BiT-S-R50x1`, BiT's published name; `cbr_tiny.in1k`). BiT's
     published `BiT-M-R50x1.npz` is accepted too. `.npz` means BiT's format, read by timm's loader;
  3. timm's own loading (the Hugging Face hub cache, or a download when the network is allowed).
     With HF_HUB_OFFLINE=1 nothing touches the network: only the hub cache is read.
Failing all three raises `MissingWeightsError` with one line naming the weights and where to put them.
"""

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from timm.models import load_state_dict
from torch import nn

from trainables.backbones import backbone_spec
from trainables.downloads import (
    check_sha256,
    download_from_hub,
    download_url,
)
from trainables.missing_weights import MissingWeightsError, offline_mode
from trainables.redaction import redact_uri
from trainables.saved_backbone import unpickling_refused

BIT_S_URL = "https://storage.googleapis.com/bit_models/BiT-S-R50x1.npz"


@dataclass(frozen=True)
class PretrainedWeights:
    init: str  # the init these weights serve, for messages
    backbone: str
    name: str  # the timm pretrained tag when timm knows the weights; the local file stem otherwise
    published_file_names: tuple[str, ...] = ()  # accepted in weights_dir besides <name>.<suffix>
    in_timm: bool = False  # timm.create_model(name, pretrained=True) can fetch them
    url: str | None = None  # where to download them when timm does not list them

    @property
    def suffixes(self) -> tuple[str, ...]:
        """The preferred suffix first; .npz (BiT's format) only for the BiT backbone."""
        if self.url and self.url.endswith(".npz"):
            return (".npz", ".pth", ".safetensors")
        bit_format = (".npz",) if self.backbone.startswith("resnetv2") else ()
        return (".pth", ".safetensors", *bit_format)

    @property
    def file_names(self) -> tuple[str, ...]:
        return (*(self.name + suffix for suffix in self.suffixes), *self.published_file_names)


_BIT_S = dict(name="BiT-S-R50x1", url=BIT_S_URL)  # timm lists no BiT-S: its published file name


def supervised_weights(init: str, backbone: str) -> PretrainedWeights:
    """The supervised weights behind `imagenet`, `bit-s` and `bit-m` (and the transfer inits).

    For resnetv2_50x1_bit "imagenet" means BiT-S, BiT's supervised ImageNet-1k weights. The CBR
    networks have no public ImageNet weights: train one and give the file.
    """
    if init in ("bit-m", "bit-s") and backbone != "resnetv2_50x1_bit":
        raise ValueError(f"init {init!r} is BiT's weights: it needs resnetv2_50x1_bit, not {backbone!r}")
    if init == "bit-m":
        return PretrainedWeights(init, backbone, "resnetv2_50x1_bit.goog_in21k",
                                 published_file_names=("BiT-M-R50x1.npz",), in_timm=True)
    if init == "bit-s" or backbone == "resnetv2_50x1_bit":
        return PretrainedWeights(init, backbone, **_BIT_S)
    if backbone in ("resnet18", "resnet50"):
        return PretrainedWeights(init, backbone, f"{backbone}.tv_in1k", in_timm=True)
    backbone_spec(backbone)  # an unknown name fails here with the valid ones
    return PretrainedWeights(init, backbone, f"{backbone}.in1k")


def load_supervised_weights(
    weights: PretrainedWeights, weights_dir: str | None, weights_path: str | None,
    weights_sha256: str | None = None,
) -> tuple[nn.Module, str]:
    """Build the backbone (standard stem, full width) with the weights loaded exactly; and a report."""
    found = _local_file(weights, weights_dir, weights_path, weights_sha256)
    if found is None:
        found = _hub_cache_file(weights) if offline_mode() else None
    if found is None:
        return _download_through_timm(weights, weights_dir)
    if found.suffix == ".npz":
        return _load_npz(weights, found)
    model = _build(weights.backbone)
    try:  # timm reads .safetensors as such and the rest with torch.load(weights_only=True)
        state_dict = load_state_dict(str(found))  # also unwraps "state_dict"/"model" and strips "module."
    except (pickle.UnpicklingError, RuntimeError) as error:  # timm wraps torch's refusal in a RuntimeError
        cause = error if isinstance(error, pickle.UnpicklingError) else error.__cause__
        if not isinstance(cause, pickle.UnpicklingError):
            raise
        raise ValueError(unpickling_refused(found, cause)) from None
    dropped = [key for key in state_dict if key.split(".")[0] in _classifier_names(model)]
    for key in dropped:
        del state_dict[key]
    load_exactly(model, state_dict, found)
    return model, (
        f"{weights.init}: loaded all {len(state_dict)} tensors of {weights.name} from {found} exactly"
        + (f"; classifier dropped ({', '.join(dropped)})" if dropped else "")
    )


def _build(backbone: str) -> nn.Module:
    spec = backbone_spec(backbone)
    if spec.timm_name is not None:
        return timm.create_model(spec.timm_name, pretrained=False, num_classes=0)
    return spec.build(False)


def _classifier_names(model: nn.Module) -> set[str]:
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier") or "fc"
    return {classifier.split(".")[0], "fc", "classifier"}


def load_exactly(model: nn.Module, state_dict: dict[str, torch.Tensor], source: Path | str) -> None:
    """Load every tensor of the model from `state_dict`; ValueError listing what does not fit."""
    expected = model.state_dict()
    # Older checkpoints (torchvision's first ResNets) have no BatchNorm step counters: harmless.
    missing = [key for key in expected if key not in state_dict and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [key for key in state_dict
                  if key in expected and state_dict[key].shape != expected[key].shape]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{source} does not fit {type(model).__name__}: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]}, {len(mismatched)} shape mismatches "
            f"{mismatched[:3]}; is it the right file?"
        )
    model.load_state_dict(state_dict, strict=False)


def _load_npz(weights: PretrainedWeights, path: Path) -> tuple[nn.Module, str]:
    """BiT's published .npz through timm's own ResNetV2 loader (`_load_weights`)."""
    spec = backbone_spec(weights.backbone)
    if spec.timm_name is None or not spec.timm_name.startswith("resnetv2"):
        raise ValueError(f"{path}: .npz files are BiT's format and load into resnetv2 backbones only")
    model = timm.create_model(spec.timm_name, pretrained=True, num_classes=0,
                              pretrained_cfg_overlay=dict(file=str(path), custom_load=True))
    return model, f"{weights.init}: loaded {weights.name} from BiT .npz {path} (timm's loader; head unused)"


def _local_file(weights: PretrainedWeights, weights_dir: str | None, weights_path: str | None,
                weights_sha256: str | None = None) -> Path | None:
    if weights_path:
        return weights_file(weights_path, weights_sha256, weights)
    if weights_dir:
        for file_name in weights.file_names:
            if (Path(weights_dir) / file_name).is_file():
                return Path(weights_dir) / file_name
    return None


def supervised_weights_on_disk(weights: PretrainedWeights, weights_dir: str | None) -> Path | None:
    """The weights in weights_dir or a cache, if there; never downloads (for the dry run)."""
    if weights_dir:
        for file_name in weights.file_names:
            if (Path(weights_dir) / file_name).is_file():
                return Path(weights_dir) / file_name
    return _hub_cache_file(weights)


def _hub_cache_file(weights: PretrainedWeights) -> Path | None:
    """The weights in the Hugging Face hub cache, or in torch's hub folder for a URL, if there."""
    if weights.in_timm:
        from huggingface_hub import try_to_load_from_cache

        for file_name in ("model.safetensors", "pytorch_model.bin"):
            cached = try_to_load_from_cache(f"timm/{weights.name}", file_name)
            if isinstance(cached, str):
                return Path(cached)
    if weights.url:
        cached_path = _torch_hub_path(weights.url)
        return cached_path if cached_path.is_file() else None
    return None


def fetch_supervised_weights(weights: PretrainedWeights, weights_dir: str | None) -> Path:
    """The weights' file on this machine: in weights_dir or a cache, else downloaded once into the
    cache timm reads (the Hugging Face hub cache, or torch's hub folder for a URL), so that the
    sweep's driver can ship it; MissingWeightsError when offline, undownloadable or failed."""
    found = supervised_weights_on_disk(weights, weights_dir)
    if found is not None:
        return found
    if offline_mode() or not (weights.in_timm or weights.url):
        raise MissingWeightsError(_missing_message(weights, weights_dir))
    if weights.in_timm:
        return download_from_hub(f"timm/{weights.name}", ("model.safetensors", "pytorch_model.bin"),
                                 _what(weights))
    return download_url(weights.url, _torch_hub_path(weights.url), _what(weights))


def _download_through_timm(weights: PretrainedWeights, weights_dir: str | None) -> tuple[nn.Module, str]:
    if offline_mode() or not (weights.in_timm or weights.url):
        raise MissingWeightsError(_missing_message(weights, weights_dir))
    try:
        if weights.in_timm:
            model = timm.create_model(weights.name, pretrained=True, num_classes=0)
        else:
            model = timm.create_model(
                backbone_spec(weights.backbone).timm_name, pretrained=True, num_classes=0,
                pretrained_cfg_overlay=dict(url=weights.url, hf_hub_id=None, custom_load=True),
            )
    except Exception as error:  # any failure to fetch means the same to the user
        message = f"{_missing_message(weights, weights_dir)} ({type(error).__name__})"
        raise MissingWeightsError(message) from error
    return model, f"{weights.init}: loaded {weights.name} through timm (hub cache or download)"


def _missing_message(weights: PretrainedWeights, weights_dir: str | None) -> str:
    where = weights_dir or "<weights_dir>"
    first, *suffixes = weights.suffixes
    others = ", ".join([*suffixes, *weights.published_file_names])
    if not (weights.in_timm or weights.url):
        how = "train them yourself (no public download)"
    else:
        how = ("unset HF_HUB_OFFLINE to download them" if offline_mode()
               else "check the network for the download")
    return (f"{_what(weights)} not found: put the file at {where}/{weights.name}{first} (or {others}), "
            f"set weights_path, or {how}; see trainables/initializations/pretrained.py")


def _what(weights: PretrainedWeights) -> str:
    source = "timm tag" if weights.in_timm else "file name"
    return f"{weights.init} weights for {weights.backbone} ({source} {weights.name})"


URL_SCHEME = "https"  # the only one downloaded: http and ftp can be altered on the way


def cached_url(url: str, weights: PretrainedWeights | None = None, sha256: str | None = None) -> Path:
    """A local copy of the https `url` in torch's hub folder (url_cache_path), downloaded unless
    offline; when `sha256` is given, a download is kept only if its sha256 is that."""
    what = _what(weights) if weights else "weights"
    check_url_scheme(url)
    path = url_cache_path(url)
    if not path.is_file():
        if offline_mode():
            raise MissingWeightsError(f"{what} at {redact_uri(url)} not in {path.parent} and HF_HUB_OFFLINE "
                                      "is set")
        download_url(url, path, what, sha256)
    return path


def check_url_scheme(url: str) -> None:
    scheme = url.split("://", 1)[0].lower()
    if scheme != URL_SCHEME:
        raise ValueError(f"weights_path {redact_uri(url)}: only https:// URLs are downloaded ({scheme} can "
                         "be altered on the way); give its https:// address, or download the file and give "
                         "its path")


def url_cache_path(url: str) -> Path:
    """Where the download of `url` is kept: a folder named for a hash of the whole URL (two URLs
    with one file name are two files), holding the URL's file name (its suffix tells the format)."""
    key = hashlib.sha256(url.encode()).hexdigest()[:32]
    name = os.path.basename(urlparse(url).path) or "weights"
    return Path(torch.hub.get_dir()) / "checkpoints" / "urls" / key / name


def weights_file(location: str, sha256: str | None = None, weights: PretrainedWeights | None = None) -> Path:
    """The local file weights_path names (the path, or an https URL's download), checked against
    weights_sha256 when given."""
    path = cached_url(location, weights, sha256) if is_url(location) else Path(location)
    if not path.is_file():
        what = _what(weights) if weights else "weights"
        raise MissingWeightsError(f"{what} not found at weights_path {redact_uri(location)}")
    if sha256:
        check_sha256(path, sha256, location)
    return path


def _torch_hub_path(url: str) -> Path:
    """Where timm keeps a download of a weights URL it fetched itself (by file name)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def is_url(location: str) -> bool:
    """Any `scheme://` location (runs:/ and models:/ have one slash): refused unless https."""
    return "://" in location
