"""The one typed trial config, and its validation.

A Tune trial's config dict becomes a `TrialConfig` in exactly one place, `TrialConfig.from_dict`,
which rejects unknown keys and bad values with errors that name the key and what is allowed.
It lives here, beside the code that consumes it, so workers never import the orchestrator.
"""

import dataclasses
import re
import string
import typing
from dataclasses import dataclass, field
from typing import Any

from trainables import metrics
from trainables.backbones import BACKBONE_NAMES
from trainables.data import DATASETS, LABELED_DATASETS
from trainables.data.splits import SPLIT_POLICIES
from trainables.devices import COMPILE_BACKENDS
from trainables.initializations import (
    DEAD_FILTERS,
    INITIALIZATIONS,
    NORMS,
    WEIGHT_SCALINGS,
    WEIGHT_STANDARDIZATIONS,
    MissingWeightsError,
    check_combination,
)
from trainables.initializations.pretrained import check_url_scheme
from trainables.initializations.ssl_catalogue import catalogue_entry
from trainables.methods import (
    METHODS,
    Hyperparameter,
    RunShape,
    method_hyperparameters,
    method_parameters,
    resolved_method_params,
)
from trainables.monitoring import DEFAULT_KNN_EVERY
from trainables.number_ranges import ANY_FINITE, AT_LEAST_ONE, NOT_NEGATIVE, POSITIVE, NumberRange


class ConfigError(ValueError):
    """A bad trial config: the message names the key and the allowed values."""




@dataclass(frozen=True)
class TrialConfig:
    method: str = "simclr"
    init: str = "random"
    backbone: str = "cbr_nano"
    # Companion axes of the prior (trainables/initializations/).
    norm: str = "as-is"  # "batchnorm": the BiT + SimSiam GroupNorm -> BatchNorm surgery
    weight_standardization: str = "as-is"  # "drop": BiT's StdConv2d -> plain Conv2d
    weight_scaling: str = "none"  # "frobenius": Ciga et al.'s scaling before double pretraining
    dead_filters: str = "keep"  # "random" / "copy": replace filters with norm < 0.1
    cifar_stem: bool = False  # 3x3 stride-1 first conv, no max-pool (32 px images)
    weights_dir: str | None = None  # local pretrained weights: <weights_dir>/<timm tag>.pth|.safetensors
    # A checkpoint file or URL (ssl-imagenet's P2X start); {method} and {backbone} are filled in.
    weights_path: str | None = None
    # The sha256 of weights_path's file (64 hex digits): checked before it is read, and a download
    # is kept only if it matches.
    weights_sha256: str | None = None
    dataset: str = "digits"
    data_root: str = "data"
    split: str = "default"  # the dataset's own protocol; "random": stratified 60/20/20
    download: bool = False  # fetch a missing dataset where its source allows it
    # What SSL pretrains on: a registered dataset (its train split, labels ignored) or "unlabeled"
    # (every image under pretrain_data_root); None = the evaluation dataset's train split.
    pretrain_dataset: str | None = None
    pretrain_data_root: str | None = None  # None = data_root
    pretrain_fraction: float = 1.0  # a subset of the pretraining pool, drawn with the seed
    batch_size: int = 128
    image_size: int = 32
    epochs: int = 5
    seed: int = 0
    # Base learning rate at batch 256, scaled by batch/256; None = the method's paper default.
    learning_rate: float | None = None
    learning_rate_scaling: str = "linear"
    weight_decay: float | None = None
    optimizer: str | None = None  # None = the method's paper optimizer (sgd or lars)
    momentum: float = 0.9
    warmup_epochs: int = 0
    num_workers: int = 1
    # Recompute activations in the backward pass instead of keeping them
    # (trainables/activation_checkpointing.py); the sweep's planner switches it on where a trial
    # fits the GPUs no other way.
    activation_checkpointing: bool = False
    # Epochs between checkpoints; None: chosen from the measured write and epoch times so that
    # checkpointing costs at most ~5% (trainables/checkpoint_schedule.py). The last epoch always.
    checkpoint_every: int | None = None
    # torch.compile the step's forward and loss (trainables.devices.compile_forward_and_loss);
    # off by default: never measured against eager on a GPU. compile_backend: inductor, or
    # aot_eager / eager (trace only: what compiling changes, without inductor's compile time).
    compile: bool = False
    compile_backend: str = "inductor"
    knn_k: int = 20
    knn_every: int = DEFAULT_KNN_EVERY  # the kNN monitor's period in epochs (also epoch 0 and the last)
    # Evaluation after pretraining: linear probe on frozen features, kNN, or full fine-tuning.
    eval: str = "linear"
    probe_epochs: int = 100
    probe_repeats: int = 3  # label subsets (or seeds, at label_fraction 1) averaged
    label_fraction: float = 1.0  # stratified fraction of training labels the evaluation sees
    focal_gamma: float = 0.0  # 0: cross entropy; the BiT + SimSiam study uses 4
    class_weighted: bool = False  # inverse-frequency class weights in the evaluation's loss
    finetune_epochs: int = 10
    finetune_learning_rate: float = 0.01
    # Per-block CKA and SVCCA to the initialization, before vs after fine-tuning and between two
    # random inits (trainables/evaluation/block_similarity.py); off by default: about 30-40 s per
    # trial at smoke scale on a CPU, hours for resnet50 at 224 px on a CPU (README, "Per-block similarity").
    block_similarity: bool = False
    method_params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrialConfig":
        unknown = sorted(set(values) - set(FIELD_TYPES))
        if unknown:
            raise ConfigError(f"unknown config key {unknown[0]!r}; valid keys: {', '.join(FIELD_TYPES)}")
        typed = {key: coerce(key, value) for key, value in values.items()}
        method = typed.get("method", cls.method)
        if method in METHODS:
            typed["method_params"] = {name: coerce_method_param(method, name, value)
                                      for name, value in typed.get("method_params", {}).items()}
        config = cls(**typed)
        config.validate()
        return config

    @property
    def resolved_optimizer(self) -> str:
        """The optimizer the trial uses: the config's, else the method's paper optimizer."""
        return self.optimizer or METHODS[self.method].optimizer

    @property
    def resolved_learning_rate(self) -> float:
        """The base learning rate (at batch 256): the config's, else the method's paper value."""
        return METHODS[self.method].base_learning_rate if self.learning_rate is None else self.learning_rate

    @property
    def resolved_weight_decay(self) -> float:
        """The weight decay: the config's, else the method's paper value."""
        return METHODS[self.method].weight_decay if self.weight_decay is None else self.weight_decay

    @property
    def resolved_weights_path(self) -> str | None:
        """weights_path with {method} and {backbone} filled in: P2X starts from the same method's
        ImageNet checkpoint, so one sweep can name every method's file at once."""
        if self.weights_path is None:
            return None
        return self.weights_path.format(method=self.method, backbone=self.backbone)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def run_shape(self) -> RunShape:
        """What the method's run-dependent defaults depend on (SSLMethod.run_defaults)."""
        return RunShape(self.batch_size, self.epochs, self.image_size)

    def resolved(self) -> "TrialConfig":
        """The trial with every value its method decides written in: the paper optimizer, base
        learning rate and weight decay where the config leaves them to the method, and every
        hyperparameter with the defaults fitted to the run (SwAV's queue, SimCLR's temperature by
        image size). What the workers train with and MLflow records; resolving it again changes
        nothing. A method that does not pretrain (`none`) has no optimizer: those stay unset."""
        method_params = {**method_parameters(self.method),
                         **resolved_method_params(self.method, self.method_params, self.run_shape)}
        if not METHODS[self.method].pretrains:
            return dataclasses.replace(self, method_params=method_params)
        return dataclasses.replace(self, optimizer=self.resolved_optimizer,
                                   learning_rate=self.resolved_learning_rate,
                                   weight_decay=self.resolved_weight_decay, method_params=method_params)

    @property
    def resolved_pretrain_dataset(self) -> str:
        return self.pretrain_dataset or self.dataset

    @property
    def resolved_pretrain_data_root(self) -> str:
        return self.pretrain_data_root or self.data_root

    @property
    def pretrains_on_evaluation_files(self) -> bool:
        """Whether SSL pretrains on the evaluation dataset's own files (then on their train split)."""
        return (self.resolved_pretrain_dataset == self.dataset
                and self.resolved_pretrain_data_root == self.data_root)

    def validate(self) -> None:
        for key, registry in CHOICES.items():
            if key in DEFAULTS_FROM_METHOD and getattr(self, key) is None:
                continue
            if getattr(self, key) not in registry:
                raise ConfigError(
                    f"bad value {getattr(self, key)!r} for {key}; valid values: {', '.join(registry)}"
                )
        for key, allowed in NUMBER_RANGES.items():
            check_range(key, getattr(self, key), allowed)
        if self.batch_size < 2 * self.num_workers:
            raise ConfigError(
                f"bad value {self.batch_size} for batch_size; each of the {self.num_workers} "
                "workers needs at least 2 images per step"
            )
        if not self.warmup_epochs < self.epochs:
            raise ConfigError(f"bad value {self.warmup_epochs} for warmup_epochs; it must be in [0, epochs)")
        try:
            check_combination(self.backbone, self.init, self.norm, self.weight_standardization,
                              self.weight_scaling, self.dead_filters, self.cifar_stem)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        self.validate_weights_path()
        self.validate_weights_location()
        for name, value in self.method_params.items():
            check_method_param(self.method, name, value)


    def validate_weights_path(self) -> None:
        """weights_path only where the init reads it, with known {placeholders}; ssl-imagenet
        without it needs a catalogued checkpoint."""
        if self.weights_path is not None:
            if self.init in INITS_IGNORING_WEIGHTS_PATH:
                raise ConfigError(f"weights_path is set but init {self.init} does not read it; drop "
                                  "weights_path, or use an init that loads it (ssl-imagenet, imagenet, "
                                  "bit-s...)")
            try:
                fields = {name for _, name, _, _ in string.Formatter().parse(self.weights_path)
                          if name is not None}
            except ValueError as error:
                raise ConfigError(f"bad weights_path {self.weights_path!r}: {error}") from None
            if unknown := sorted(fields - set(WEIGHTS_PATH_PLACEHOLDERS)):
                valid = ", ".join("{" + name + "}" for name in WEIGHTS_PATH_PLACEHOLDERS)
                raise ConfigError(f"unknown placeholder {{{unknown[0]}}} in weights_path "
                                  f"{self.weights_path!r}; valid: {valid}")
        elif self.init == "ssl-imagenet" and METHODS[self.method].pretrains:
            try:
                catalogue_entry(self.method, self.backbone)
            except MissingWeightsError as error:
                raise ConfigError(f"init ssl-imagenet: {error}") from None

    def validate_weights_location(self) -> None:
        """weights_path: a path, an https URL or an MLflow model; weights_sha256: 64 hex digits, for
        a weights_path that is a file or URL."""
        location = self.weights_path or ""
        if "://" in location:
            try:
                check_url_scheme(location)
            except ValueError as error:
                raise ConfigError(str(error)) from None
        if self.weights_sha256 is None:
            return
        if not re.fullmatch(r"[0-9a-fA-F]{64}", self.weights_sha256):
            raise ConfigError(f"bad value {self.weights_sha256!r} for weights_sha256; it must be a whole "
                              "sha256, 64 hex digits (sha256sum FILE)")
        if not location or location.startswith(("runs:/", "models:/")):
            raise ConfigError("weights_sha256 checks the file or https URL weights_path names; set "
                              "weights_path to one (an MLflow model's weights are MLflow's), or drop "
                              "weights_sha256")


# Inits that never read weights_path (trainables.initializations: only the supervised ones and
# ssl-imagenet do), and what weights_path may name in braces (resolved_weights_path).
INITS_IGNORING_WEIGHTS_PATH = ("random", "pretrained")
WEIGHTS_PATH_PLACEHOLDERS = ("method", "backbone")

CHOICES: dict[str, typing.Iterable[str]] = {
    "method": METHODS,
    "init": INITIALIZATIONS,
    "backbone": BACKBONE_NAMES,
    "dataset": LABELED_DATASETS,
    "pretrain_dataset": DATASETS,
    "learning_rate_scaling": ("linear", "sqrt"),
    "optimizer": ("sgd", "lars"),
    "eval": metrics.PREFIXES,
    "split": SPLIT_POLICIES,
    "norm": NORMS,
    "weight_standardization": WEIGHT_STANDARDIZATIONS,
    "weight_scaling": WEIGHT_SCALINGS,
    "dead_filters": DEAD_FILTERS,
    "compile_backend": COMPILE_BACKENDS,
}
# Choices whose None means "the method's paper value".
DEFAULTS_FROM_METHOD = ("optimizer", "pretrain_dataset")
FIELD_TYPES: dict[str, Any] = typing.get_type_hints(TrialConfig)

# Every int and float field of TrialConfig, and what it allows (None, where the type allows it,
# means the method's paper value and is not checked).
NUMBER_RANGES: dict[str, NumberRange] = {
    "batch_size": AT_LEAST_ONE,
    "image_size": NumberRange(minimum=16),
    "epochs": AT_LEAST_ONE,
    "seed": NOT_NEGATIVE,  # numpy's generators refuse negative seeds
    "learning_rate": POSITIVE,
    "weight_decay": NOT_NEGATIVE,
    "momentum": NumberRange(minimum=0, maximum=1, maximum_included=False),  # 1 never forgets a gradient
    "warmup_epochs": NOT_NEGATIVE,  # and < epochs, checked in TrialConfig.validate
    "num_workers": AT_LEAST_ONE,
    "knn_k": AT_LEAST_ONE,
    "knn_every": AT_LEAST_ONE,
    "checkpoint_every": AT_LEAST_ONE,
    "probe_epochs": AT_LEAST_ONE,
    "probe_repeats": AT_LEAST_ONE,
    "label_fraction": NumberRange(minimum=0, maximum=1, minimum_included=False),
    "pretrain_fraction": NumberRange(minimum=0, maximum=1, minimum_included=False),
    "focal_gamma": NOT_NEGATIVE,
    "finetune_epochs": AT_LEAST_ONE,
    "finetune_learning_rate": POSITIVE,
}

def check_range(label: str, value: Any, allowed: NumberRange) -> None:
    """A ConfigError naming `label` and the allowed range unless the number `value` is in it.

    None (a method default) and non-numbers (checked as choices elsewhere) pass.
    """
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return
    if value not in allowed:
        kind = "an integer" if isinstance(value, int) else "a finite number"
        requirement = f"{kind} {allowed.describe()}".rstrip()
        raise ConfigError(f"bad value {value!r} for {label}; it must be {requirement}")


def convert(value: Any, target: type, label: str) -> Any:
    """`value` as `target` (int, float, str, bool), or a ConfigError naming `label`.

    Strings from the command line are parsed; a float that is not whole is no int, and a bool
    is no number.
    """
    if isinstance(value, bool) and target is not bool:
        raise ConfigError(f"bad value {value!r} for {label}; it must be {target.__name__}")
    if isinstance(value, target):
        return value
    try:
        if target is bool:
            if str(value).lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return str(value).lower() in ("true", "1")
        if target is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return target(value)
    except (TypeError, ValueError):
        raise ConfigError(f"bad value {value!r} for {label}; it must be {target.__name__}") from None


def coerce(key: str, value: Any) -> Any:
    """Convert a value (possibly a command-line string) to the declared type of `key`, and check
    that a number is in its range (so `--set learning_rate=nan` fails before anything starts)."""
    declared = FIELD_TYPES[key]
    if key == "method_params":
        if not isinstance(value, dict):
            raise ConfigError(f"bad value {value!r} for method_params; it must be a mapping")
        return dict(value)
    optional = type(None) in typing.get_args(declared)
    if optional and (value is None or (isinstance(value, str) and value.lower() == "none")):
        return None
    target = next(t for t in (typing.get_args(declared) or (declared,)) if t is not type(None))
    converted = convert(value, target, key)
    check_range(key, converted, NUMBER_RANGES.get(key, ANY_FINITE))
    return converted


def declared_method_param(method: str, name: str) -> Hyperparameter:
    """What `method` declares for its hyperparameter `name`, or a ConfigError naming the valid keys."""
    declared = method_hyperparameters(method)
    if name not in declared:
        raise ConfigError(f"unknown method_params key {name!r} for method {method}; "
                          f"valid keys: {', '.join(declared) or '(none)'}")
    return declared[name]


def check_method_param(method: str, name: str, value: Any) -> None:
    """A ConfigError naming method_params.NAME unless `value` is in the range or among the choices
    the method declares for it (trainables.methods.method_hyperparameters)."""
    declared = declared_method_param(method, name)
    label = f"method_params.{name}"
    if declared.choices is not None and value not in declared.choices:
        raise ConfigError(f"bad value {value!r} for {label}; valid values: {', '.join(declared.choices)}")
    # Numbers without a declared range must still be finite.
    check_range(label, value, declared.allowed_range or ANY_FINITE)


def coerce_method_param(method: str, name: str, value: Any) -> Any:
    """Convert a method hyperparameter to its declared type, and check its range or choices."""
    converted = convert(value, declared_method_param(method, name).type, f"method_params.{name}")
    check_method_param(method, name, converted)
    return converted
