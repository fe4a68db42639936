"""Initializations: the "prior weights" axis and its companion axes.

`build_initialized_backbone` is the one entry point: it builds a backbone, initializes it (a row
of `INITIALIZATIONS`), then applies the companion axes in this order: CIFAR stem, `norm`,
`weight_standardization`, `dead_filters`, `weight_scaling`. Dead filters come before scaling:
after scaling a layer to norm 1 most of its filters would be below the 0.1 threshold. Pure torch
and timm; everything random is drawn from a generator seeded with `seed`.

The package holds the registry (here) and what it draws on: `pretrained` (supervised ImageNet
and BiT weights from a local file, the Hugging Face cache or timm; a `timm:` or `hf-hub:`
backbone's own weights for init `pretrained` come from `trainables/backbones/hub.py`),
`ssl_catalogue` (the published SSL
checkpoints for double pretraining, with URLs and checksums), `ssl_checkpoint` (any other SSL
checkpoint, from weights_path), `transfer` (Mean-Var init, weight transfusion, slim) and
`surgery` (norm replacement, weight standardization, Frobenius scaling, dead filters). Add an
initialization by writing its function in the module it belongs to and adding a row to
`INITIALIZATIONS`.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from trainables.backbones import (
    BACKBONES,
    backbone_spec,
    build_backbone,
    feature_dimension,
    is_hub_backbone,
    use_cifar_stem,
)
from trainables.backbones.hub import create_hub_model
from trainables.initializations import ssl_catalogue, surgery
from trainables.initializations.pretrained import (
    load_exactly,
    load_supervised_weights,
    supervised_weights,
)
from trainables.initializations.ssl_checkpoint import load_ssl_checkpoint
from trainables.initializations.transfer import mean_var_init, slim, transfuse
from trainables.missing_weights import MissingWeightsError
from trainables.saved_backbone import (
    ARCHITECTURE_FILE,
    WEIGHTS_FILE,
    BackboneArchitecture,
    read_weights,
)

__all__ = ["DEAD_FILTERS", "INITIALIZATIONS", "NORMS", "WEIGHT_SCALINGS", "WEIGHT_STANDARDIZATIONS",
           "MissingWeightsError", "build_architecture", "build_initialized_backbone", "check_combination",
           "load_saved_backbone"]

NORMS = ("as-is", "batchnorm", "groupnorm")
WEIGHT_STANDARDIZATIONS = ("as-is", "drop", "bake")
WEIGHT_SCALINGS = ("none", "frobenius")
DEAD_FILTERS = ("keep", "random", "copy")


@dataclass(frozen=True)
class InitRequest:
    backbone: str
    weights_dir: str | None
    weights_path: str | None
    seed: int
    method: str | None = None  # the SSL method the backbone is for: which ssl-imagenet checkpoint
    weights_sha256: str | None = None  # what weights_path's file must hash to, when given


@dataclass(frozen=True)
class InitializationSpec:
    description: str
    build: Callable[[InitRequest], tuple[nn.Module, str]]  # -> (backbone with a standard stem, report)
    needs_bit: bool = False  # only for resnetv2_50x1_bit
    # Which backbones it applies to: "registered" (rows of BACKBONES), "hub" (timm:/hf-hub:), "any".
    backbones: str = "registered"


def _architecture(request: InitRequest) -> nn.Module:
    """The backbone at its framework's default initialization."""
    if is_hub_backbone(request.backbone):
        return create_hub_model(request.backbone, pretrained=False, weights_dir=request.weights_dir)[0]
    return build_backbone(request.backbone)[0]


def _random(request: InitRequest) -> tuple[nn.Module, str]:
    return _architecture(request), "random: the framework's default initialization"


def _pretrained(request: InitRequest) -> tuple[nn.Module, str]:
    return create_hub_model(request.backbone, pretrained=True, weights_dir=request.weights_dir)


def _supervised(init: str) -> Callable[[InitRequest], tuple[nn.Module, str]]:
    def build(request: InitRequest) -> tuple[nn.Module, str]:
        weights = supervised_weights(init, request.backbone)
        return load_supervised_weights(weights, request.weights_dir, request.weights_path,
                                       request.weights_sha256)
    return build


_imagenet = _supervised("imagenet")


def _ssl_imagenet(request: InitRequest) -> tuple[nn.Module, str]:
    """weights_path when given (any checkpoint, loaded leniently); else the method's catalogued one."""
    if request.weights_path:
        model = _architecture(request)
        return model, load_ssl_checkpoint(model, request.weights_path, request.weights_sha256)
    entry = ssl_catalogue.catalogue_entry(request.method, request.backbone)
    # Fetched first: a missing file fails before anything is built.
    path, checked = ssl_catalogue.fetch(entry, request.weights_dir)
    model = _architecture(request)
    return model, ssl_catalogue.load_catalogued_checkpoint(model, entry, path, checked)


def _mean_var(request: InitRequest) -> tuple[nn.Module, str]:
    pretrained, loaded = _imagenet(request)
    model, report = mean_var_init(pretrained)
    return model, f"{loaded}; {report}"


def _transfusion(blocks: int) -> Callable[[InitRequest], tuple[nn.Module, str]]:
    def build(request: InitRequest) -> tuple[nn.Module, str]:
        pretrained, loaded = _imagenet(request)  # first: missing weights fail before any building
        torch.manual_seed(request.seed)  # the random blocks are those of init "random" with this seed
        random = build_backbone(request.backbone)[0]
        model, report = transfuse(pretrained, random, backbone_spec(request.backbone), blocks)
        return model, f"{loaded}; transfusion-{blocks}: {report}"
    return build


def _slim(request: InitRequest) -> tuple[nn.Module, str]:
    pretrained, loaded = _imagenet(request)
    torch.manual_seed(request.seed)
    random_slim = build_backbone(request.backbone, slim=True)[0]
    model, report = slim(pretrained, random_slim, backbone_spec(request.backbone))
    return model, f"{loaded}; {report}"


INITIALIZATIONS: dict[str, InitializationSpec] = {
    "random": InitializationSpec("the framework's default initialization", _random, backbones="any"),
    "pretrained": InitializationSpec(
        "a timm: or hf-hub: backbone's own published weights (timm's hub loading and cache)", _pretrained,
        backbones="hub"),
    "imagenet": InitializationSpec(
        "supervised ImageNet-1k weights (resnets: timm's <name>.tv_in1k; resnetv2_50x1_bit: BiT-S; "
        "CBR: a local <name>.in1k file, no public weights)", _imagenet),
    "bit-m": InitializationSpec("BiT-M: Big Transfer's ImageNet-21k weights (resnetv2_50x1_bit.goog_in21k)",
                                _supervised("bit-m"), needs_bit=True),
    "bit-s": InitializationSpec("BiT-S: Big Transfer's ImageNet-1k weights (BiT-S-R50x1.npz)",
                                _supervised("bit-s"), needs_bit=True),
    "ssl-imagenet": InitializationSpec(
        "double pretraining (Ciga et al.): the method's published ImageNet SSL checkpoint "
        "(ssl_catalogue.py), or weights_path", _ssl_imagenet, backbones="any"),
    "meanvar": InitializationSpec(
        "Transfusion's Mean-Var init: each tensor i.i.d. from N(mean, var) of the ImageNet tensor",
        _mean_var),
    **{
        f"transfusion-{blocks}": InitializationSpec(
            f"Transfusion's weight transfusion: ImageNet weights for blocks 1-{blocks} (stem in block 1), "
            "random after", _transfusion(blocks))
        for blocks in range(1, 5)
    },
    "slim": InitializationSpec(
        "Transfusion's Slim: ImageNet blocks 1-2, blocks 3-4 random with half the channels", _slim),
}


def check_combination(
    backbone: str, init: str, norm: str = "as-is", weight_standardization: str = "as-is",
    weight_scaling: str = "none", dead_filters: str = "keep", cifar_stem: bool = False,
) -> None:
    """Raise ValueError naming the bad value and the valid ones, or the pair that does not go together."""
    spec = backbone_spec(backbone)
    for axis, value, valid in (("init", init, INITIALIZATIONS), ("norm", norm, NORMS),
                               ("weight_standardization", weight_standardization, WEIGHT_STANDARDIZATIONS),
                               ("weight_scaling", weight_scaling, WEIGHT_SCALINGS),
                               ("dead_filters", dead_filters, DEAD_FILTERS)):
        if value not in valid:
            raise ValueError(f"unknown {axis} {value!r}; valid values: {', '.join(valid)}")
    if INITIALIZATIONS[init].needs_bit and backbone != "resnetv2_50x1_bit":
        raise ValueError(f"init {init!r} is BiT's weights: it needs resnetv2_50x1_bit, not {backbone!r}")
    applies_to = INITIALIZATIONS[init].backbones
    if applies_to == "hub" and not is_hub_backbone(backbone):
        raise ValueError(f"init {init!r} loads a timm: or hf-hub: backbone's own weights, and {backbone!r} "
                         "is neither; for the registered backbones use init=imagenet (or bit-s, bit-m)")
    if applies_to == "registered" and is_hub_backbone(backbone):
        raise ValueError(f"init {init!r} needs a registered backbone ({', '.join(BACKBONES)}); for "
                         f"{backbone!r} use init=pretrained, random or ssl-imagenet")
    if cifar_stem and not spec.has_stem:
        raise ValueError(f"cifar_stem applies to the resnets only; backbone {backbone!r} has no stem")


def build_initialized_backbone(
    backbone: str,
    init: str,
    *,
    norm: str = "as-is",
    weight_standardization: str = "as-is",
    weight_scaling: str = "none",
    dead_filters: str = "keep",
    weights_dir: str | None = None,
    weights_path: str | None = None,
    cifar_stem: bool = False,
    seed: int = 0,
    method: str | None = None,
    weights_sha256: str | None = None,
) -> tuple[nn.Module, int, str]:
    """Return (backbone, feature dimension, a one-paragraph report of what was loaded and changed).

    weights_dir: where `<timm tag>.safetensors|.pth|.npz` files are looked for (see init_pretrained);
    weights_path: one file or URL that wins over it (for ssl-imagenet: instead of the catalogue);
    method: the SSL method, which picks ssl-imagenet's catalogued checkpoint;
    weights_sha256: the sha256 weights_path's file must have (checked after a download too).
    Raises ValueError for a bad value or pair, MissingWeightsError when the weights are not there.
    The global torch generator is left as it was.
    """
    check_combination(backbone, init, norm, weight_standardization, weight_scaling, dead_filters, cifar_stem)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        request = InitRequest(backbone, weights_dir, weights_path, seed, method, weights_sha256)
        model, report = INITIALIZATIONS[init].build(request)
        reports = [report, *_reshape(model, cifar_stem, norm, weight_standardization)]
        if dead_filters != "keep":
            reports.append(surgery.replace_dead_filters(model, dead_filters))
        if weight_scaling == "frobenius":
            reports.append(surgery.scale_by_frobenius_norm(model))
    feature_dim = feature_dimension(model)
    return model, feature_dim, f"{backbone} ({feature_dim} features). " + ". ".join(reports) + "."


def _reshape(model: nn.Module, cifar_stem: bool, norm: str, weight_standardization: str) -> list[str]:
    """The companion axes that change the network itself (its layers, not only its values)."""
    reports = []
    if cifar_stem:
        use_cifar_stem(model)
        reports.append("cifar_stem: 3x3 stride-1 stem conv at random init, no max-pool")
    if norm == "batchnorm":
        reports.append(surgery.group_norm_to_batch_norm(model))
    elif norm == "groupnorm":
        reports.append(surgery.batch_norm_to_group_norm(model))
    if weight_standardization != "as-is":
        reports.append(surgery.drop_weight_standardization(model, bake=weight_standardization == "bake"))
    return reports


def build_architecture(architecture: BackboneArchitecture) -> nn.Module:
    """The network an initialized backbone of `architecture` is, at random init: what its saved
    state dict (trainables.saved_backbone) loads into."""
    name = architecture.backbone
    for axis, value, valid in (("norm", architecture.norm, NORMS),
                               ("weight_standardization", architecture.weight_standardization,
                                WEIGHT_STANDARDIZATIONS)):
        if value not in valid:
            raise ValueError(f"unknown {axis} {value!r}; valid values: {', '.join(valid)}")
    if is_hub_backbone(name):
        model = create_hub_model(name, pretrained=False, weights_dir=architecture.weights_dir)[0]
    else:
        model = build_backbone(name, slim=architecture.slim)[0]
    _reshape(model, architecture.cifar_stem, architecture.norm, architecture.weight_standardization)
    return model


def load_saved_backbone(directory: Path) -> nn.Module:
    """The backbone trainables.saved_backbone left in `directory`: rebuilt from its architecture,
    every tensor loaded from its safetensors file. ValueError with one line for a bad file."""
    directory = Path(directory)
    architecture = BackboneArchitecture.from_json((directory / ARCHITECTURE_FILE).read_text(),
                                                  str(directory / ARCHITECTURE_FILE))
    model = build_architecture(architecture)
    load_exactly(model, read_weights(directory / WEIGHTS_FILE), directory / WEIGHTS_FILE)
    return model
