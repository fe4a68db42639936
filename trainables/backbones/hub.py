"""Any timm architecture or Hugging Face hub model as a backbone, with its own published weights.

    backbone=timm:NAME          a timm architecture, optionally with its pretrained tag
                                (timm:convnext_tiny.fb_in22k); init=pretrained loads that tag
    backbone=hf-hub:ORG/NAME    a timm model on the Hugging Face hub (config.json + weights);
                                its architecture comes from config.json, so even init=random needs it

Where the files come from, first match wins, so that a trial whose files are on disk never
touches the network (and N workers do not ask the hub N times):
  1. `weights_dir`: `<weights_dir>/ORG--NAME/` holding config.json and model.safetensors (what
     `hf download ORG/NAME --local-dir <weights_dir>/ORG--NAME` or timm's `save_for_hf` writes);
     for timm:NAME, `<weights_dir>/<NAME.tag>.safetensors|.pth`;
  2. the Hugging Face hub cache (`HF_HUB_CACHE`, default ~/.cache/huggingface/hub), and for
     weights timm fetches by URL, torch's hub folder (`TORCH_HOME`/hub/checkpoints);
  3. timm's own download (`timm.create_model(..., pretrained=True)`), into those caches.
With HF_HUB_OFFLINE=1, or when the download fails, the trial stops at once with one line naming
the files and where to put them. On a cluster the sweep's driver finds these files
(`hub_prior_files`, downloading them once into its own caches when they are missing and the network
is allowed) and ships them to the workers (orchestrator.priors): a worker node needs neither.
"""

import os
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from timm.models import PretrainedCfg, get_pretrained_cfg
from torch import nn

from trainables.downloads import download_from_hub, download_url
from trainables.missing_weights import MissingWeightsError, offline_mode

TIMM_PREFIX, HF_HUB_PREFIX = "timm:", "hf-hub:"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's hub weight files, preferred first
LOCAL_SUFFIXES = (".safetensors", ".pth")


def hub_architecture(name: str) -> tuple[str, Callable[[bool], nn.Module]]:
    """(description, build) of a `timm:` or `hf-hub:` backbone, what the registry's BackboneSpec
    holds for its rows; ValueError naming the problem for a bad name."""
    if name.startswith(TIMM_PREFIX):
        model_name = name.removeprefix(TIMM_PREFIX)
        if not timm.is_model(model_name):
            raise ValueError(f"unknown backbone {name!r}: timm has no model {model_name!r} "
                             "(timm.list_models() lists them)")
        description = f"timm {model_name}"
    else:
        repo_id = name.removeprefix(HF_HUB_PREFIX)
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise ValueError(f"bad backbone {name!r}: write hf-hub:ORG/NAME, "
                             "e.g. hf-hub:timm/resnet50.a1_in1k")
        description = f"the Hugging Face hub model {repo_id} (timm)"

    def build(slim: bool) -> nn.Module:
        if slim:
            raise ValueError(f"slim needs a registered backbone, not {name!r}")
        return create_hub_model(name, pretrained=False)[0]

    return description, build


def create_hub_model(name: str, pretrained: bool, weights_dir: str | None = None) -> tuple[nn.Module, str]:
    """(feature extractor, report) for a `timm:` or `hf-hub:` backbone, with or without its weights."""
    if name.startswith(TIMM_PREFIX):
        return _create_timm(name.removeprefix(TIMM_PREFIX), pretrained, weights_dir)
    return _create_hf_hub(name.removeprefix(HF_HUB_PREFIX), pretrained, weights_dir)


def _create_timm(model_name: str, pretrained: bool, weights_dir: str | None) -> tuple[nn.Module, str]:
    if not pretrained:
        return timm_model(model_name, pretrained=False), f"random: timm {model_name}"
    config, tag = _timm_pretrained_config(model_name)
    found = _timm_weights_on_disk(config, tag, weights_dir)
    if found is not None:
        model = timm_model(model_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(found)))
        return model, f"pretrained: timm {tag} weights from {found}"
    where = (f"{weights_dir or '<weights_dir>'}/{tag}.safetensors (or .pth), "
             + (f"or the hub snapshot {_hub_folder(config.hf_hub_id)}" if config.hf_hub_id
                else f"or {_torch_hub_file(config.url)}"))
    source = f"the hub repo {config.hf_hub_id}" if config.hf_hub_id else config.url
    message = f"pretrained weights of timm {tag} ({source}) are not on this machine: put them at {where}"
    return _download(lambda: timm_model(model_name, pretrained=True), message,
                     f"pretrained: timm {tag} weights through timm (hub cache or download)")


def _timm_pretrained_config(model_name: str) -> tuple[PretrainedCfg, str]:
    """timm's pretrained config of NAME or NAME.tag (the default tag for NAME), and the full tag."""
    config = get_pretrained_cfg(model_name)
    if config is None or not (config.hf_hub_id or config.url):
        raise MissingWeightsError(f"timm lists no pretrained weights for {model_name!r}; name a tag that has "
                                  f"them (timm.list_pretrained('{model_name.split('.')[0]}*'))")
    return config, f"{config.architecture}.{config.tag}" if config.tag else config.architecture


def timm_weights_on_disk(model_name: str, weights_dir: str | None) -> Path | None:
    """Where the pretrained weights of timm NAME[.tag] are on this machine, if anywhere."""
    return _timm_weights_on_disk(*_timm_pretrained_config(model_name), weights_dir)


def _timm_weights_on_disk(config: PretrainedCfg, tag: str, weights_dir: str | None) -> Path | None:
    if weights_dir:
        for suffix in LOCAL_SUFFIXES:
            if (Path(weights_dir) / f"{tag}{suffix}").is_file():
                return Path(weights_dir) / f"{tag}{suffix}"
    if config.hf_hub_id:
        for file_name in (config.hf_hub_filename,) if config.hf_hub_filename else WEIGHT_FILES:
            cached = try_to_load_from_cache(config.hf_hub_id, file_name)
            if isinstance(cached, str):
                return Path(cached)
    if config.url and _torch_hub_file(config.url).is_file():
        return _torch_hub_file(config.url)
    return None


def hub_prior_files(name: str, pretrained: bool, weights_dir: str | None) -> dict[str, Path]:
    """{the name create_hub_model looks for under weights_dir: the file on this machine} for a
    `timm:` or `hf-hub:` backbone, each downloaded once into the hub cache (or torch's hub folder)
    when missing, unless offline; {} for a timm: architecture without weights (timm's code builds
    it). MissingWeightsError when a file can be neither found nor downloaded."""
    if name.startswith(TIMM_PREFIX):
        if not pretrained:
            return {}
        config, tag = _timm_pretrained_config(name.removeprefix(TIMM_PREFIX))
        found = _timm_weights_on_disk(config, tag, weights_dir) or _fetch_timm_weights(config, tag)
        return {tag + (".safetensors" if found.suffix == ".safetensors" else ".pth"): found}
    repo_id = name.removeprefix(HF_HUB_PREFIX)
    folder = hub_model_folder(repo_id, pretrained, weights_dir)
    if folder is None:
        _offline_refusal(f"hf-hub:{repo_id} is not on this machine")
        folder = download_from_hub(repo_id, ("config.json",), f"hf-hub:{repo_id}").parent
        if pretrained:
            download_from_hub(repo_id, WEIGHT_FILES, f"hf-hub:{repo_id}")
    names = ["config.json"]
    if pretrained:
        names.append(next(file_name for file_name in WEIGHT_FILES if (folder / file_name).is_file()))
    return {f"{local_folder_name(repo_id)}/{file_name}": folder / file_name for file_name in names}


def _fetch_timm_weights(config: PretrainedCfg, tag: str) -> Path:
    _offline_refusal(f"pretrained weights of timm {tag} are not on this machine")
    if config.hf_hub_id:
        file_names = (config.hf_hub_filename,) if config.hf_hub_filename else WEIGHT_FILES
        return download_from_hub(config.hf_hub_id, file_names, f"timm {tag}")
    return download_url(config.url, _torch_hub_file(config.url), f"timm {tag}")


def _offline_refusal(message: str) -> None:
    if offline_mode():
        raise MissingWeightsError(f"{message}, and HF_HUB_OFFLINE forbids the download")


def _create_hf_hub(repo_id: str, pretrained: bool, weights_dir: str | None) -> tuple[nn.Module, str]:
    folder = hub_model_folder(repo_id, pretrained, weights_dir)
    what = "pretrained" if pretrained else "random"
    if folder is not None:
        model = timm_model(f"local-dir:{folder}", pretrained=pretrained)
        return model, f"{what}: hf-hub:{repo_id} from {folder}"
    files = "config.json and model.safetensors" if pretrained else "config.json"
    message = (f"hf-hub:{repo_id} is not on this machine: put its {files} in "
               f"{weights_dir or '<weights_dir>'}/{local_folder_name(repo_id)}/ (hf download {repo_id} "
               f"--local-dir ... where there is internet), or its snapshot under {_hub_folder(repo_id)}")
    return _download(lambda: timm_model(f"hf-hub:{repo_id}", pretrained=pretrained),
                     message, f"{what}: hf-hub:{repo_id} through timm (hub cache or download)")


def timm_model(name: str, pretrained: bool, **options: object) -> nn.Module:
    """timm.create_model as a feature extractor, with `dynamic_img_size` where the architecture
    has it (ViTs, Swin): their position embeddings follow the trial's image size instead of
    refusing any but the size they were trained at. The others refuse the option at once, before
    any weights are read."""
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, dynamic_img_size=True, **options)
    except TypeError as error:
        if "dynamic_img_size" not in str(error):
            raise
        return timm.create_model(name, pretrained=pretrained, num_classes=0, **options)


def hub_model_folder(repo_id: str, pretrained: bool, weights_dir: str | None) -> Path | None:
    """A local folder holding the hub model's config.json (and weights, if `pretrained`), or None."""
    candidates = []
    if weights_dir:
        candidates.append(Path(weights_dir) / local_folder_name(repo_id))
    config_file = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(config_file, str):
        candidates.append(Path(config_file).parent)  # the cached snapshot
    for folder in candidates:
        has_weights = any((folder / file_name).is_file() for file_name in WEIGHT_FILES)
        if (folder / "config.json").is_file() and (has_weights or not pretrained):
            return folder
    return None


def local_folder_name(repo_id: str) -> str:
    """ORG/NAME -> ORG--NAME, the hub cache's own spelling (one folder per repo, no nesting)."""
    return repo_id.replace("/", "--")


def _hub_folder(repo_id: str) -> str:
    return f"{hub_constants.HF_HUB_CACHE}/models--{local_folder_name(repo_id)}/"


def _torch_hub_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _download(create: Callable[[], nn.Module], message: str, report: str) -> tuple[nn.Module, str]:
    if offline_mode():
        raise MissingWeightsError(f"{message}; or unset HF_HUB_OFFLINE to download them")
    try:
        model = create()
    except Exception as error:  # no network, an unknown repo, a gated one: the same to the user
        raise MissingWeightsError(f"{message} (the download failed: {type(error).__name__})") from error
    return model, report
