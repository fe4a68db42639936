"""The pretraining optimizer: which parameters get weight decay, LARS adaptation and a decaying
learning rate, for every registered method."""

import pytest
import torch

from trainables.backbones import build_backbone
from trainables.methods import METHODS, PRETRAINING_METHODS, build_method
from trainables.optimization import CONSTANT_LEARNING_RATE, build_optimizer, set_learning_rates, warmup_cosine

WEIGHT_DECAY = 1e-4
PEAK, TOTAL_STEPS, WARMUP_STEPS = 0.3, 100, 10


def small_method(method_name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    backbone, feature_dim = build_backbone("cbr_nano")
    return build_method(method_name, backbone, feature_dim, {})


def group_of(optimizer: torch.optim.Optimizer) -> dict[int, dict]:
    """id(parameter) -> its param group; fails if a parameter is in two groups."""
    groups: dict[int, dict] = {}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            assert id(parameter) not in groups, "a parameter is in two groups"
            groups[id(parameter)] = group
    return groups


@pytest.mark.parametrize("optimizer_name", ["sgd", "lars"])
@pytest.mark.parametrize("method_name", PRETRAINING_METHODS)
def test_every_trainable_parameter_is_optimized_once(method_name: str, optimizer_name: str) -> None:
    method = small_method(method_name)
    groups = group_of(build_optimizer(method, optimizer_name, 0.9, WEIGHT_DECAY))
    trainable = {id(p): name for name, p in method.named_parameters() if p.requires_grad}
    frozen = {id(p): name for name, p in method.named_parameters() if not p.requires_grad}
    assert set(groups) == set(trainable), "trainable parameters missing from the optimizer"
    assert not set(groups) & set(frozen), "a frozen parameter (EMA target, key encoder) is optimized"


@pytest.mark.parametrize("method_name", PRETRAINING_METHODS)
def test_lars_excludes_biases_and_norm_parameters_from_weight_decay(method_name: str) -> None:
    method = small_method(method_name)
    groups = group_of(build_optimizer(method, "lars", 0.9, WEIGHT_DECAY))
    for name, parameter in method.named_parameters():
        if not parameter.requires_grad:
            continue
        expected = WEIGHT_DECAY if parameter.ndim > 1 else 0.0
        assert groups[id(parameter)]["weight_decay"] == expected, name


@pytest.mark.parametrize("optimizer_name", ["sgd", "lars"])
def test_simsiam_predictor_keeps_its_peak_learning_rate(optimizer_name: str) -> None:
    # SimSiam's "fix lr for predictor": the predictor's rate does not decay, everything else does.
    method = small_method("simsiam")
    optimizer = build_optimizer(method, optimizer_name, 0.9, WEIGHT_DECAY)
    groups = group_of(optimizer)
    for step in (0, WARMUP_STEPS, TOTAL_STEPS - 1):
        logged = set_learning_rates(optimizer, step, TOTAL_STEPS, WARMUP_STEPS, PEAK)
        assert logged == pytest.approx(warmup_cosine(step, TOTAL_STEPS, WARMUP_STEPS, PEAK))
        for name, parameter in method.named_parameters():
            rate = groups[id(parameter)]["lr"]
            if name.startswith("predictor."):
                assert rate == pytest.approx(PEAK / WARMUP_STEPS if step == 0 else PEAK), name
            else:
                assert rate == pytest.approx(logged), name
    assert logged < PEAK * 1e-3  # at the last step the backbone has decayed, the predictor has not


@pytest.mark.parametrize("method_name", sorted(set(PRETRAINING_METHODS) - {"simsiam"}))
def test_other_methods_decay_every_learning_rate(method_name: str) -> None:
    optimizer = build_optimizer(small_method(method_name), METHODS[method_name].optimizer, 0.9, WEIGHT_DECAY)
    assert not any(group[CONSTANT_LEARNING_RATE] for group in optimizer.param_groups)
    set_learning_rates(optimizer, TOTAL_STEPS - 1, TOTAL_STEPS, WARMUP_STEPS, PEAK)
    assert all(group["lr"] < PEAK * 1e-3 for group in optimizer.param_groups)


@pytest.mark.parametrize("method_name", PRETRAINING_METHODS)
def test_biases_and_norms_learn_at_the_methods_ratio_under_lars(method_name: str) -> None:
    # Barlow Twins' official recipe: weights at 0.2, biases and BatchNorm parameters at 0.0048
    # (x batch/256), on the same schedule; every other method: one rate for all.
    method = small_method(method_name)
    ratio = 0.0048 / 0.2 if method_name == "barlowtwins" else 1.0
    assert method.bias_and_norm_learning_rate_ratio == pytest.approx(ratio)
    optimizer = build_optimizer(method, "lars", 0.9, WEIGHT_DECAY)
    groups = group_of(optimizer)
    for step in (0, WARMUP_STEPS, TOTAL_STEPS // 2):
        set_learning_rates(optimizer, step, TOTAL_STEPS, WARMUP_STEPS, PEAK)
        weights = [groups[id(p)]["lr"] for p in method.parameters() if p.requires_grad and p.ndim > 1
                   and groups[id(p)][CONSTANT_LEARNING_RATE] is False]
        biases = [groups[id(p)]["lr"] for p in method.parameters() if p.requires_grad and p.ndim <= 1
                  and groups[id(p)][CONSTANT_LEARNING_RATE] is False]
        assert biases and weights
        assert biases == pytest.approx([ratio * weights[0]] * len(biases))


def test_unknown_optimizer_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown optimizer 'adam'; use 'sgd' or 'lars'"):
        build_optimizer(small_method("simclr"), "adam", 0.9, WEIGHT_DECAY)
