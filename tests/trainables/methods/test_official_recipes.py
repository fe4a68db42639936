"""Defaults fitted to the run as the official recipes set them: SwAV's queue (length, start epoch,
use once full) and SimCLR's temperature by image scale."""

import pytest
import torch

from trainables.backbones import build_backbone
from trainables.methods import RunShape, build_method
from trainables.methods.swav import fitted_queue_length, fitted_queue_start_epoch

SMALL_SWAV = {"projection_hidden_dim": 16, "projection_dim": 8, "num_prototypes": 12, "num_small_crops": 0}


def build(method_name: str, params: dict, run: RunShape | None = None):
    torch.manual_seed(0)
    backbone, feature_dim = build_backbone("cbr_nano")
    return build_method(method_name, backbone, feature_dim, params, run).train()


def naive_sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """SwAV appendix A.1 on one process: alternate prototype (1/K) and sample (1/B) marginals."""
    q = torch.exp(scores.double() / epsilon)
    q = q / q.sum()
    samples, prototypes = q.shape
    for _ in range(iterations):
        q = q / q.sum(dim=0, keepdim=True) / prototypes
        q = q / q.sum(dim=1, keepdim=True) / samples
    return q * samples


@pytest.mark.parametrize(("batch_size", "num_prototypes", "expected"), [
    (256, 3000, 3840),  # the official batch-256 recipe (swav_200ep_bs256_pretrain.sh)
    (4096, 3000, 0),  # the official batch-4096 recipes: no queue
    (64, 100, 128),  # 64 + 128 >= 100 x 4096 / 3000 samples, in whole batches
    (128, 100, 0),  # the batch alone covers the prototypes
])
def test_fitted_queue_length(batch_size: int, num_prototypes: int, expected: int) -> None:
    length = fitted_queue_length(batch_size, num_prototypes)
    assert length == expected
    assert length % batch_size == 0


@pytest.mark.parametrize(("epochs", "expected"), [(200, 15), (400, 15), (100, 8), (15, 1), (2, 1)])
def test_fitted_queue_start_epoch(epochs: int, expected: int) -> None:
    assert fitted_queue_start_epoch(epochs) == expected


def test_swav_queue_is_fitted_to_the_run_unless_method_params_set_it() -> None:
    small = {**SMALL_SWAV, "num_prototypes": 100}
    fitted = build("swav", small, RunShape(batch_size=64, epochs=15, image_size=32))
    assert fitted.queue.shape == (2, 128, 8) and fitted.queue_start_epoch == 1
    official = build("swav", SMALL_SWAV | {"num_prototypes": 3000}, RunShape(256, 200, 224))
    assert official.queue.shape[1] == 3840 and official.queue_start_epoch == 15
    assert build("swav", SMALL_SWAV | {"num_prototypes": 3000}, RunShape(4096, 100, 224)).queue.shape[1] == 0
    explicit = build("swav", small | {"queue_length": 0, "queue_start_epoch": 3}, RunShape(64, 15, 32))
    assert explicit.queue.shape[1] == 0 and explicit.queue_start_epoch == 3
    assert build("swav", SMALL_SWAV).queue.shape[1] == 3840  # without a run: the official values


def test_swav_queue_starts_after_its_epoch_and_is_used_once_full() -> None:
    method = build("swav", SMALL_SWAV | {"queue_length": 8, "queue_start_epoch": 1})
    generator = torch.Generator().manual_seed(3)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        embedding = torch.nn.functional.normalize(torch.randn(4, 8, generator=generator), dim=1)
        return embedding, method.prototypes(embedding).detach()

    method.before_optimizer_step(epoch=1)  # still the first epoch: no queue yet
    embedding, scores = batch()
    torch.testing.assert_close(method.assign(0, embedding).double(), naive_sinkhorn(scores))
    assert int(method.queue_filled) == 0 and not method.queue.any()

    method.before_optimizer_step(epoch=2)  # the queue starts filling
    queued = []
    for _ in range(2):  # two batches of 4 fill a queue of 8; codes still from the batch alone
        embedding, scores = batch()
        torch.testing.assert_close(method.assign(0, embedding).double(), naive_sinkhorn(scores))
        method.assign(1, embedding)
        queued.insert(0, embedding)
    torch.testing.assert_close(method.queue[0], torch.cat(queued))  # newest first

    embedding, scores = batch()  # full: Sinkhorn over the batch and the queue, codes of the batch
    expected = naive_sinkhorn(torch.cat([scores, method.prototypes(torch.cat(queued)).detach()]))[:4]
    torch.testing.assert_close(method.assign(0, embedding).double(), expected)
    torch.testing.assert_close(method.queue[0, :4], embedding)  # the oldest batch went out
    torch.testing.assert_close(method.queue[0, 4:], queued[0])


def test_swav_host_queue_count_follows_the_buffer_after_a_checkpoint_loads() -> None:
    method = build("swav", SMALL_SWAV | {"queue_length": 8, "queue_start_epoch": 1})
    method.load_state_dict(method.state_dict())  # forgets the host copy, as a resumed trial does
    method.enqueue(1, torch.nn.functional.normalize(torch.randn(4, 8), dim=1))  # before any assign
    assert method.host_queue_state()[1] == int(method.queue_filled) == 4


@pytest.mark.parametrize(("image_size", "params", "expected"), [
    (32, {}, 0.5),  # CIFAR-scale: the paper's CIFAR-10 setting
    (224, {}, 0.1),  # ImageNet-scale: the official code's default
    (32, {"temperature": 0.2}, 0.2),  # method_params win
])
def test_simclr_temperature_follows_the_image_scale(image_size: int, params: dict, expected: float) -> None:
    run = RunShape(batch_size=128, epochs=15, image_size=image_size)
    assert build("simclr", {"projection_hidden_dim": 16, **params}, run).temperature == expected
    assert build("simclr", {"projection_hidden_dim": 16}).temperature == 0.1  # no run: the official default


def test_swav_sinkhorn_gets_fp32_scores_under_bf16_autocast() -> None:
    method = build("swav", SMALL_SWAV | {"queue_length": 0})
    generator = torch.Generator().manual_seed(5)
    embedding = torch.nn.functional.normalize(torch.randn(4, 8, generator=generator), dim=1)
    exact = naive_sinkhorn(embedding.double() @ method.prototypes.weight.double().T)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert method.prototypes(embedding).dtype == torch.bfloat16  # what the scores were before
        codes = method.assign(0, embedding)
    assert codes.dtype == torch.float32
    torch.testing.assert_close(codes.double(), exact, atol=1e-5, rtol=1e-4)


def test_the_multi_tensor_ema_equals_the_parameter_by_parameter_update() -> None:
    from trainables.methods.byol import ema_update

    generator = torch.Generator().manual_seed(7)
    shapes = [(16, 3, 3, 3), (16,), (10, 16), (10,)]
    target = [torch.randn(shape, generator=generator) for shape in shapes]
    online = [torch.randn(shape, generator=generator, requires_grad=True) for shape in shapes]
    expected = [t.clone().mul_(0.99).add_(o.detach(), alpha=0.01)
                for t, o in zip(target, online, strict=True)]
    ema_update(target, online, 0.99)
    for updated, reference in zip(target, expected, strict=True):
        torch.testing.assert_close(updated, reference, atol=0, rtol=0)
    with pytest.raises(ValueError):
        ema_update(target[:3], online, 0.99)
