"""SSL methods: the losses against naive paper-definition references; every registered method,
its training step and its paper's augmentation recipe."""

import dataclasses
import math

import pytest
import torch

from trainables.augmentations import AugmentationRecipe
from trainables.backbones import build_backbone
from trainables.methods import METHODS, PRETRAINING_METHODS, build_method, method_parameters
from trainables.methods.simclr import nt_xent_loss
from trainables.methods.simsiam import simsiam_loss

SMALL_DIM = 32


def cosine(first: torch.Tensor, second: torch.Tensor) -> float:
    """Cosine similarity of two vectors, in float64."""
    first, second = first.double(), second.double()
    return float(first @ second / (first.norm() * second.norm()))


def naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    """SimCLR eq. 1 per anchor: -log(exp(s_ip/t) / sum_{k != i} exp(s_ik/t)), mean over 2N."""
    embeddings = torch.cat([z1, z2])
    count = z1.shape[0]
    losses = []
    for anchor in range(2 * count):
        positive = (anchor + count) % (2 * count)
        numerator = math.exp(cosine(embeddings[anchor], embeddings[positive]) / temperature)
        denominator = sum(
            math.exp(cosine(embeddings[anchor], embeddings[other]) / temperature)
            for other in range(2 * count)
            if other != anchor
        )
        losses.append(-math.log(numerator / denominator))
    return sum(losses) / len(losses)


def naive_simsiam(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> float:
    """SimSiam eq. 2 row by row: 0.5 * D(p1, z2) + 0.5 * D(p2, z1), D = -cos, batch mean."""
    count = p1.shape[0]
    first = sum(-cosine(p1[row], z2[row]) for row in range(count)) / count
    second = sum(-cosine(p2[row], z1[row]) for row in range(count)) / count
    return 0.5 * first + 0.5 * second


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_matches_naive_reference(temperature: float) -> None:
    generator = torch.Generator().manual_seed(0)
    z1 = torch.randn(6, 16, generator=generator)
    z2 = torch.randn(6, 16, generator=generator)
    loss = nt_xent_loss(z1, z2, temperature)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(naive_nt_xent(z1, z2, temperature), abs=1e-5)


def test_nt_xent_is_invariant_to_embedding_scale() -> None:
    """The similarity is cosine: rescaling each embedding must not change the loss."""
    generator = torch.Generator().manual_seed(1)
    z1 = torch.randn(5, 8, generator=generator)
    z2 = torch.randn(5, 8, generator=generator)
    scales = torch.rand(5, 1, generator=generator) * 10 + 0.1
    assert nt_xent_loss(z1 * scales, z2, 0.5).item() == pytest.approx(
        nt_xent_loss(z1, z2, 0.5).item(), abs=1e-5
    )


def test_nt_xent_slices_of_a_global_batch_average_to_the_full_loss() -> None:
    """What each DDP rank computes (its slice as anchors, the global batch as candidates)."""
    generator = torch.Generator().manual_seed(2)
    global_z1 = torch.randn(12, 16, generator=generator)
    global_z2 = torch.randn(12, 16, generator=generator)
    temperature = 0.2
    full_loss = nt_xent_loss(global_z1, global_z2, temperature).item()
    slice_size = 4
    slice_losses = [
        nt_xent_loss(
            global_z1[start : start + slice_size],
            global_z2[start : start + slice_size],
            temperature,
            rank_offset=start,
            global_z1=global_z1,
            global_z2=global_z2,
        ).item()
        for start in range(0, 12, slice_size)
    ]
    assert sum(slice_losses) / len(slice_losses) == pytest.approx(full_loss, abs=1e-5)
    assert full_loss == pytest.approx(naive_nt_xent(global_z1, global_z2, temperature), abs=1e-5)


def test_nt_xent_slice_gradients_sum_to_the_full_batch_gradient() -> None:
    """Averaged over ranks (as DDP does), the sliced losses give the full-batch gradient."""
    generator = torch.Generator().manual_seed(6)
    global_z1 = torch.randn(8, 16, generator=generator).requires_grad_()
    global_z2 = torch.randn(8, 16, generator=generator).requires_grad_()
    full_gradients = torch.autograd.grad(
        nt_xent_loss(global_z1, global_z2, 0.3), [global_z1, global_z2]
    )
    sliced_loss = (
        sum(
            nt_xent_loss(
                global_z1[start : start + 4],
                global_z2[start : start + 4],
                0.3,
                rank_offset=start,
                global_z1=global_z1,
                global_z2=global_z2,
            )
            for start in (0, 4)
        )
        / 2
    )
    sliced_gradients = torch.autograd.grad(sliced_loss, [global_z1, global_z2])
    for full, sliced in zip(full_gradients, sliced_gradients, strict=True):
        torch.testing.assert_close(sliced, full, atol=1e-6, rtol=1e-5)


def test_nt_xent_with_wrong_rank_offset_differs() -> None:
    """Guards the previous test against a rank_offset that is silently ignored."""
    generator = torch.Generator().manual_seed(3)
    global_z1 = torch.randn(8, 16, generator=generator)
    global_z2 = torch.randn(8, 16, generator=generator)
    right = nt_xent_loss(
        global_z1[4:], global_z2[4:], 0.5, rank_offset=4, global_z1=global_z1, global_z2=global_z2
    )
    wrong = nt_xent_loss(
        global_z1[4:], global_z2[4:], 0.5, rank_offset=0, global_z1=global_z1, global_z2=global_z2
    )
    assert abs(right.item() - wrong.item()) > 1e-3


def test_simsiam_loss_matches_naive_reference() -> None:
    generator = torch.Generator().manual_seed(4)
    p1, p2, z1, z2 = (torch.randn(7, 12, generator=generator) for _ in range(4))
    loss = simsiam_loss(p1, p2, z1, z2)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(naive_simsiam(p1, p2, z1, z2), abs=1e-5)


def test_simsiam_loss_stops_the_gradient_to_z() -> None:
    generator = torch.Generator().manual_seed(5)
    p1, p2, z1, z2 = (torch.randn(7, 12, generator=generator).requires_grad_() for _ in range(4))
    simsiam_loss(p1, p2, z1, z2).backward()
    assert z1.grad is None and z2.grad is None
    # The predictions do get the gradient of the reference loss with constant targets.
    reference_p1, reference_p2 = (
        p1.detach().clone().requires_grad_(),
        p2.detach().clone().requires_grad_(),
    )
    reference = (
        0.5 * -torch.nn.functional.cosine_similarity(reference_p1, z2.detach(), dim=1).mean()
        + 0.5 * -torch.nn.functional.cosine_similarity(reference_p2, z1.detach(), dim=1).mean()
    )
    reference.backward()
    torch.testing.assert_close(p1.grad, reference_p1.grad)
    torch.testing.assert_close(p2.grad, reference_p2.grad)


def small_overrides(method_name: str) -> dict[str, int]:
    """Every integer *_dim hyperparameter shrunk to SMALL_DIM; everything else at its default."""
    return {
        name: SMALL_DIM
        for name, default in method_parameters(method_name).items()
        if name.endswith("_dim") and isinstance(default, int)
    }




def test_none_is_the_only_method_that_does_not_pretrain() -> None:
    assert sorted(set(METHODS) - set(PRETRAINING_METHODS)) == ["none"]


@pytest.mark.parametrize("method_name", PRETRAINING_METHODS)
def test_every_method_trains_one_step(method_name: str) -> None:
    torch.manual_seed(0)
    backbone, feature_dim = build_backbone("cbr_nano")
    overrides = small_overrides(method_name)
    method = build_method(method_name, backbone, feature_dim, overrides)
    method.train()
    views = [torch.randn(8, 3, spec.size, spec.size) for spec in method.views(32)]
    assert len(views) >= 2 and views[0].shape[-1] == 32

    output = method(views)

    assert output.loss.shape == ()
    assert torch.isfinite(output.loss)
    assert output.embedding.ndim == 2 and output.embedding.shape[0] == 8
    if "projection_dim" in overrides:
        assert output.embedding.shape == (8, SMALL_DIM)
    output.loss.backward()
    trainable = [
        (name, parameter)
        for name, parameter in method.named_parameters()
        if parameter.requires_grad
    ]
    assert trainable
    for name, parameter in trainable:
        assert parameter.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"
    assert any(parameter.grad.abs().sum() > 0 for parameter in method.backbone.parameters())
    method.after_optimizer_step(0.5)


def test_build_method_rejects_unknown_name_listing_valid_ones() -> None:
    backbone, feature_dim = build_backbone("cbr_nano")
    with pytest.raises(ValueError) as raised:
        build_method("no_such_method", backbone, feature_dim, {})
    message = str(raised.value)
    assert "no_such_method" in message
    for name in METHODS:
        assert name in message


# Each method's paper recipe, written out as numbers (not via the named recipes): per view, crop
# area, jitter strengths (brightness, contrast, saturation, hue), blur and solarization probability.
MOCO_V2_VIEW = ((0.2, 1.0), (0.4, 0.4, 0.4, 0.1), 0.5, 0.0)
SIMCLR_VIEW = ((0.08, 1.0), (0.8, 0.8, 0.8, 0.2), 0.5, 0.0)
BYOL_VIEWS = [((0.08, 1.0), (0.4, 0.4, 0.2, 0.1), 1.0, 0.0), ((0.08, 1.0), (0.4, 0.4, 0.2, 0.1), 0.1, 0.2)]
SWAV_GLOBAL_VIEW = ((0.14, 1.0), (0.8, 0.8, 0.8, 0.2), 0.5, 0.0)
SWAV_SMALL_VIEW = ((0.05, 0.14), (0.8, 0.8, 0.8, 0.2), 0.5, 0.0)
PAPER_VIEWS = {
    "simsiam": [MOCO_V2_VIEW] * 2,
    "mocov2": [MOCO_V2_VIEW] * 2,
    "simclr": [SIMCLR_VIEW] * 2,
    "byol": BYOL_VIEWS,
    "barlowtwins": BYOL_VIEWS,
    "vicreg": BYOL_VIEWS,
    "swav": [SWAV_GLOBAL_VIEW] * 2 + [SWAV_SMALL_VIEW] * 6,
    "none": [MOCO_V2_VIEW] * 2,  # the base class's default; it never pretrains
}


def test_every_registered_method_has_a_paper_recipe_here() -> None:
    assert sorted(PAPER_VIEWS) == sorted(METHODS)


@pytest.mark.parametrize("method_name", sorted(METHODS))
def test_views_carry_the_papers_recipes(method_name: str) -> None:
    backbone, feature_dim = build_backbone("cbr_nano")
    method = build_method(method_name, backbone, feature_dim, small_overrides(method_name))
    specs = method.views(32)
    assert all(isinstance(spec.recipe, AugmentationRecipe) for spec in specs)
    assert [spec.size for spec in specs[:2]] == [32, 32]
    described = [
        (spec.recipe.crop_scale,
         (spec.recipe.brightness, spec.recipe.contrast, spec.recipe.saturation, spec.recipe.hue),
         spec.recipe.blur_probability, spec.recipe.solarize_probability)
        for spec in specs
    ]
    assert described == PAPER_VIEWS[method_name]
    for spec in specs:  # shared by every paper: jitter p 0.8, grayscale p 0.2, no up-down flips
        recipe = spec.recipe
        assert (recipe.color_jitter_probability, recipe.grayscale_probability) == (0.8, 0.2)
        assert (recipe.horizontal_flip_probability, recipe.vertical_flip_probability) == (0.5, 0.0)
        assert recipe.blur_sigma == (0.1, 2.0)


@pytest.mark.parametrize("method_name", ["byol", "barlowtwins", "vicreg"])
def test_byol_style_views_are_asymmetric(method_name: str) -> None:
    """BYOL's table 6: view 1 always blurred and never solarized, view 2 the other way round."""
    backbone, feature_dim = build_backbone("cbr_nano")
    first, second = (spec.recipe for spec in
                     build_method(method_name, backbone, feature_dim, small_overrides(method_name)).views(32))
    assert (first.blur_probability, first.solarize_probability) == (1.0, 0.0)
    assert (second.blur_probability, second.solarize_probability) == (0.1, 0.2)
    assert dataclasses.replace(first, blur_probability=0.1, solarize_probability=0.2) == second


def test_every_method_declares_its_step_cost_and_only_none_costs_nothing() -> None:
    """The dry run's GPU-hour estimate (orchestrator/estimates.py) reads it; methods with a second
    network in the step (BYOL's target, MoCo's key encoder) or extra crops (SwAV) cost more."""
    for name, method in METHODS.items():
        assert "relative_step_cost" in vars(method), f"{name}: declare relative_step_cost"
        assert (method.relative_step_cost == 0) == (not method.pretrains), name
    for name in ("byol", "mocov2", "swav"):
        assert METHODS[name].relative_step_cost > METHODS["simclr"].relative_step_cost == 1.0
