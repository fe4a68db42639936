"""Numbers in the trial config: NaN, infinities and out-of-range values are one-line ConfigErrors
naming the key and the allowed range, whether they come from the command line (strings), a
sweep (numbers) or a TrialConfig built directly."""

import math
import typing

import pytest

from trainables.config import (
    NUMBER_RANGES,
    ConfigError,
    TrialConfig,
    coerce,
    coerce_method_param,
)
from trainables.methods import METHODS, method_hyperparameters, method_parameters
from trainables.number_ranges import NumberRange

NOT_FINITE = ("nan", "inf", "-inf")


def numeric_fields() -> list[str]:
    hints = typing.get_type_hints(TrialConfig)
    return [name for name, hint in hints.items()
            if {int, float} & {hint, *typing.get_args(hint)} and hint is not bool]


def numeric_method_params() -> list[tuple[str, str, int | float]]:
    return [(method, name, default) for method in METHODS
            for name, default in method_parameters(method).items()
            if isinstance(default, int | float) and not isinstance(default, bool)]


def assert_one_line_naming(error: pytest.ExceptionInfo[ConfigError], *words: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


FIELD_IS_FLOAT = {name: float in {hint, *typing.get_args(hint)}
                  for name, hint in typing.get_type_hints(TrialConfig).items()}
POSITIVE_INTEGERS = ("epochs", "batch_size", "probe_epochs", "probe_repeats", "knn_k", "num_workers",
                     "finetune_epochs")


def cases(key: str, allowed: str, *values: str) -> list[tuple[str, str, str]]:
    return [(key, value, allowed) for value in values]


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        *cases("learning_rate", "a finite number > 0", *NOT_FINITE, "-1", "0"),
        *cases("weight_decay", "a finite number >= 0", *NOT_FINITE, "-1e-4"),
        *cases("momentum", "in [0, 1)", *NOT_FINITE, "1", "-0.1", "1.5"),
        *cases("finetune_learning_rate", "> 0", *NOT_FINITE, "0", "-0.01"),
        *cases("label_fraction", "in (0, 1]", *NOT_FINITE, "0", "1.01", "-0.5"),
        *cases("focal_gamma", ">= 0", *NOT_FINITE, "-1"),
        *((key, "0", "an integer >= 1") for key in POSITIVE_INTEGERS),
        ("warmup_epochs", "-1", ">= 0"),
        ("image_size", "8", ">= 16"),
        ("seed", "-1", ">= 0"),
    ],
)
def test_out_of_range_numbers_are_rejected_naming_the_key_and_range(key: str, value: str,
                                                                    allowed: str) -> None:
    with pytest.raises(ConfigError) as from_the_command_line:
        TrialConfig.from_dict({key: value})
    assert_one_line_naming(from_the_command_line, f"for {key};", allowed)
    with pytest.raises(ConfigError) as from_a_sweep:
        coerce(key, float(value) if FIELD_IS_FLOAT[key] else int(value))
    assert_one_line_naming(from_a_sweep, f"for {key};", allowed)


@pytest.mark.parametrize(("key", "value"), [("learning_rate", math.nan), ("learning_rate", math.inf),
                                          ("learning_rate", -1.0), ("focal_gamma", -math.inf),
                                          ("momentum", 1.0), ("label_fraction", math.nan)])
def test_validate_catches_a_bad_number_that_skipped_coercion(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"for {key};"):
        TrialConfig(**{key: value}).validate()


def test_the_edges_of_each_range_are_accepted() -> None:
    config = TrialConfig.from_dict({
        "learning_rate": "none", "weight_decay": "0", "momentum": "0", "label_fraction": "1",
        "focal_gamma": "0", "warmup_epochs": "0", "finetune_learning_rate": "1e-9", "seed": "0",
        "image_size": "16", "epochs": "1", "batch_size": "2",
    })
    assert config.learning_rate is None  # the method's paper value
    assert config.resolved_learning_rate == METHODS["simclr"].base_learning_rate
    assert TrialConfig.from_dict({"learning_rate": "1e+12"}).learning_rate == 1e12
    assert TrialConfig.from_dict({"momentum": 0.999}).momentum == 0.999


def test_every_number_of_the_config_has_a_range_and_its_default_is_in_it() -> None:
    assert sorted(NUMBER_RANGES) == sorted(numeric_fields())
    defaults = TrialConfig()
    for key, allowed in NUMBER_RANGES.items():
        default = getattr(defaults, key)
        assert default is None or default in allowed, key


def test_every_method_param_declares_what_it_allows_and_its_paper_default_is_allowed() -> None:
    """Numbers carry a range (trainables.number_ranges), strings a Literal of choices, next to the
    default in the method's __init__; and the config accepts the default."""
    for method in METHODS:
        for name, declared in method_hyperparameters(method).items():
            assert isinstance(declared.default, declared.type), (method, name)
            if declared.type in (int, float):
                assert declared.allowed_range is not None, f"{method}.{name}: annotate it with its range"
                assert declared.default in declared.allowed_range, f"{method}.{name}'s paper default"
            elif declared.type is str:
                assert declared.choices and declared.default in declared.choices, f"{method}.{name}"
            else:
                assert declared.type is bool, (method, name, declared.type)
            assert coerce_method_param(method, name, str(declared.default)) == declared.default


@pytest.mark.parametrize(("method", "name", "value", "allowed"), [
    ("simclr", "temperature", "0", "> 0"), ("mocov2", "encoder_momentum", "1.5", "in [0, 1]"),
    ("swav", "queue_length", "-3", ">= 0"), ("byol", "projection_dim", "0", ">= 1"),
    ("barlowtwins", "standardization", "zscore", "valid values: batchnorm, unbiased"),
    ("simsiam", "head_norm", "layernorm", "valid values: batchnorm, groupnorm"),
])
def test_a_method_param_outside_what_its_method_declares_is_one_line(method: str, name: str, value: str,
                                                                      allowed: str) -> None:
    with pytest.raises(ConfigError) as raised:
        TrialConfig.from_dict({"method": method, "method_params": {name: value}})
    assert_one_line_naming(raised, f"method_params.{name}", allowed)


@pytest.mark.parametrize(("method", "name", "default"),
                         [case for case in numeric_method_params() if isinstance(case[2], float)],
                         ids=lambda value: str(value))
def test_every_float_method_param_must_be_finite(method: str, name: str, default: float) -> None:
    for value in NOT_FINITE:
        with pytest.raises(ConfigError) as raised:
            coerce_method_param(method, name, value)
        assert_one_line_naming(raised, f"method_params.{name}", "finite")
        with pytest.raises(ConfigError) as raised:
            TrialConfig.from_dict({"method": method, "method_params": {name: float(value)}})
        assert_one_line_naming(raised, f"method_params.{name}", "finite")
        with pytest.raises(ConfigError, match=f"method_params.{name}"):
            TrialConfig(method=method, method_params={name: float(value)}).validate()


@pytest.mark.parametrize(
    ("method", "name", "value", "allowed"),
    [
        ("simclr", "temperature", "0", "> 0"),
        ("mocov2", "temperature", "-0.2", "> 0"),
        ("swav", "temperature", "0", "> 0"),
        ("swav", "sinkhorn_epsilon", "0", "> 0"),
        ("byol", "base_momentum", "1.5", "in [0, 1]"),
        ("mocov2", "encoder_momentum", "-0.1", "in [0, 1]"),
        ("barlowtwins", "off_diagonal_weight", "-0.0051", ">= 0"),
        ("vicreg", "variance_weight", "-25", ">= 0"),
        ("vicreg", "covariance_weight", "-1", ">= 0"),
        ("simclr", "projection_dim", "0", ">= 1"),
        ("swav", "sinkhorn_iterations", "0", ">= 1"),
        ("swav", "queue_length", "-1", ">= 0"),
    ],
)
def test_method_params_out_of_range_are_rejected(method: str, name: str, value: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as raised:
        coerce_method_param(method, name, value)
    assert_one_line_naming(raised, f"method_params.{name}", allowed)


def test_method_params_at_the_edges_are_accepted() -> None:
    assert coerce_method_param("byol", "base_momentum", "1") == 1.0  # a frozen target
    assert coerce_method_param("vicreg", "covariance_weight", "0") == 0.0  # an ablation
    assert coerce_method_param("swav", "queue_length", "0") == 0
    assert coerce_method_param("simclr", "temperature", "1e-3") == 1e-3


@pytest.mark.parametrize(
    ("allowed", "inside", "outside", "description"),
    [
        (NumberRange(minimum=1), [1, 10**9], [0, -1], ">= 1"),
        (NumberRange(minimum=0, minimum_included=False), [1e-12, 1e12], [0.0, -1e-12, math.inf], "> 0"),
        (NumberRange(minimum=0, maximum=1, maximum_included=False), [0.0, 0.999], [1.0, -0.1], "in [0, 1)"),
        (NumberRange(maximum=2.5), [2.5, -1e9], [2.6, -math.inf], "<= 2.5"),
        (NumberRange(), [0.0, -1e300], [math.nan, math.inf, -math.inf], ""),
    ],
)
def test_number_range_membership_and_description(allowed: NumberRange, inside: list[float],
                                                 outside: list[float], description: str) -> None:
    assert all(value in allowed for value in inside)
    assert not any(value in allowed for value in outside)
    assert allowed.describe() == description


@pytest.mark.parametrize("method", METHODS)
def test_every_methods_resolved_config_is_a_valid_config_that_resolves_to_itself(method: str) -> None:
    """What the Tune driver hands the workers (orchestrator.grid.running_config) passes the
    workers' own validation, and resolving it again changes nothing."""
    for image_size, batch_size in ((32, 64), (224, 256)):
        resolved = TrialConfig(method=method, image_size=image_size, batch_size=batch_size).resolved()
        assert TrialConfig.from_dict(resolved.to_dict()) == resolved == resolved.resolved()
        assert set(resolved.method_params) == set(method_parameters(method))
