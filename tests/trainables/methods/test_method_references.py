"""BYOL, Barlow Twins, VICReg and MoCo v2: losses against naive references (the official code's
conventions by default, the paper's formula one option away), gradients, EMA, queue."""

import math

import pytest
import torch

from trainables.backbones import build_backbone
from trainables.methods import METHODS, build_method, method_parameters
from trainables.methods.barlowtwins import barlow_twins_loss
from trainables.methods.byol import byol_loss, cosine_momentum
from trainables.methods.mocov2 import moco_infonce_loss
from trainables.methods.vicreg import vicreg_loss

SMALL = 64
TARGET_PREFIXES = ("target_", "key_")  # the EMA copies: BYOL's target network, MoCo's key encoder
PAPER_DEFAULTS = {
    "byol": {"projection_hidden_dim": 4096, "projection_dim": 256, "predictor_hidden_dim": 4096,
             "base_momentum": 0.996},
    "barlowtwins": {"projection_hidden_dim": 8192, "projection_dim": 8192, "off_diagonal_weight": 0.0051,
                    "standardization": "batchnorm", "bias_learning_rate_ratio": 0.0048 / 0.2},
    "vicreg": {"projection_hidden_dim": 8192, "projection_dim": 8192, "invariance_weight": 25.0,
               "variance_weight": 25.0, "covariance_weight": 1.0, "halve_variance": True},
    "mocov2": {"projection_hidden_dim": 2048, "projection_dim": 128, "queue_size": 65536,
               "temperature": 0.2, "encoder_momentum": 0.999},
}
NEW_METHODS = sorted(PAPER_DEFAULTS)


@pytest.fixture(autouse=True)
def single_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def random_pair(rows: int, columns: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, columns, generator=generator, dtype=torch.float64) * 1.5 + 0.3,
            torch.randn(rows, columns, generator=generator, dtype=torch.float64))


# ---- naive references, written from the papers' definitions with Python loops ----

def naive_byol(p1, p2, z1, z2) -> float:
    """BYOL eq. 2: ||p/|p| - z'/|z'|||^2 for both directions, summed, mean over the batch."""
    def squared_distance(p, z):
        p_norm, z_norm = math.sqrt(sum(x * x for x in p)), math.sqrt(sum(x * x for x in z))
        return sum((a / p_norm - b / z_norm) ** 2 for a, b in zip(p, z, strict=True))
    rows = len(p1)
    return sum(squared_distance(p1[i], z2[i]) + squared_distance(p2[i], z1[i]) for i in range(rows)) / rows


def column_mean(z, d):
    return sum(row[d] for row in z) / len(z)


def column_var(z, d, unbiased: bool = True):  # unbiased as torch.var / torch.std; biased as BatchNorm
    mean = column_mean(z, d)
    return sum((row[d] - mean) ** 2 for row in z) / (len(z) - 1 if unbiased else len(z))


def naive_barlow_twins(z1, z2, lam: float, standardization: str = "batchnorm") -> float:
    """Barlow Twins eq. 1 with C = z1n^T z2n / N. Standardized as the official code's
    BatchNorm1d(affine=False): (z - mean) / sqrt(biased var + 1e-5); or as the paper's
    Algorithm 1: (z - mean) / unbiased std."""
    rows, dims = len(z1), len(z1[0])
    def scale(z, d):
        if standardization == "batchnorm":
            return math.sqrt(column_var(z, d, unbiased=False) + 1e-5)
        return math.sqrt(column_var(z, d))
    def standardize(z):
        stats = [(column_mean(z, d), scale(z, d)) for d in range(dims)]
        return [[(row[d] - stats[d][0]) / stats[d][1] for d in range(dims)] for row in z]
    a, b = standardize(z1), standardize(z2)
    loss = 0.0
    for i in range(dims):
        for j in range(dims):
            c = sum(a[n][i] * b[n][j] for n in range(rows)) / rows
            loss += (1 - c) ** 2 if i == j else lam * c * c
    return loss


def naive_vicreg(z1, z2, lam: float, mu: float, nu: float, halve_variance: bool = True) -> float:
    """lam * mse + mu * v + nu * (off-diag cov^2 / D, z1 + z2), where v is the std hinge of z1 plus
    that of z2, halved as in the official code (main_vicreg.py), or not as in Algorithm 1."""
    rows, dims = len(z1), len(z1[0])
    invariance = sum((z1[n][d] - z2[n][d]) ** 2 for n in range(rows) for d in range(dims)) / (rows * dims)
    variance = covariance = 0.0
    for z in (z1, z2):
        variance += sum(max(0.0, 1 - math.sqrt(column_var(z, d) + 1e-4)) for d in range(dims)) / dims
        means = [column_mean(z, d) for d in range(dims)]
        for i in range(dims):
            for j in range(dims):
                if i != j:
                    cov = sum((z[n][i] - means[i]) * (z[n][j] - means[j]) for n in range(rows)) / (rows - 1)
                    covariance += cov * cov / dims
    if halve_variance:
        variance /= 2
    return lam * invariance + mu * variance + nu * covariance


def naive_infonce(q, k, queue, temperature: float) -> float:
    """MoCo eq. 1 per query: -log(exp(q.k+/t) / (exp(q.k+/t) + sum_j exp(q.queue_j/t))), mean."""
    rows, dims, size = len(q), len(q[0]), len(queue[0])
    total = 0.0
    for n in range(rows):
        positive = math.exp(sum(q[n][d] * k[n][d] for d in range(dims)) / temperature)
        negatives = sum(math.exp(sum(q[n][d] * queue[d][j] for d in range(dims)) / temperature)
                        for j in range(size))
        total += -math.log(positive / (positive + negatives))
    return total / rows


# ---- losses ----

def test_byol_loss_matches_naive_reference() -> None:
    p1, z1 = random_pair(7, 12, seed=0)
    p2, z2 = random_pair(7, 12, seed=1)
    loss = byol_loss(p1, p2, z1, z2)
    assert loss.shape == ()
    expected = naive_byol(p1.tolist(), p2.tolist(), z1.tolist(), z2.tolist())
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_byol_loss_stops_the_gradient_to_the_targets() -> None:
    p1, z1 = (t.requires_grad_() for t in random_pair(5, 8, seed=2))
    p2, z2 = (t.requires_grad_() for t in random_pair(5, 8, seed=3))
    byol_loss(p1, p2, z1, z2).backward()
    assert z1.grad is None and z2.grad is None and p1.grad is not None


@pytest.mark.parametrize("standardization", ["batchnorm", "unbiased"])
@pytest.mark.parametrize("lam", [0.0051, 0.5])
def test_barlow_twins_loss_matches_naive_reference(lam: float, standardization: str) -> None:
    z1, z2 = random_pair(10, 6, seed=4)
    loss = barlow_twins_loss(z1, z2, lam, standardization)
    assert loss.shape == ()
    expected = naive_barlow_twins(z1.tolist(), z2.tolist(), lam, standardization)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_barlow_twins_default_is_the_official_batchnorm_standardization() -> None:
    # The official code: c = bn(z1).T @ bn(z2) / N with bn = BatchNorm1d(D, affine=False), training mode.
    z1, z2 = random_pair(5, 4, seed=8)
    batchnorm = torch.nn.BatchNorm1d(4, affine=False).double().train()
    correlation = batchnorm(z1).T @ batchnorm(z2) / 5
    diagonal = torch.diagonal(correlation)
    expected = (1 - diagonal).pow(2).sum() + 0.0051 * (correlation.pow(2).sum() - diagonal.pow(2).sum())
    torch.testing.assert_close(barlow_twins_loss(z1, z2), expected)
    # At a batch this small the paper's unbiased std gives a visibly different loss.
    assert abs(barlow_twins_loss(z1, z2, standardization="unbiased").item() - expected.item()) > 1e-2


def test_barlow_twins_rejects_an_unknown_standardization() -> None:
    with pytest.raises(ValueError, match="unknown standardization 'sample'; valid: batchnorm, unbiased"):
        build_small("barlowtwins", standardization="sample")


@pytest.mark.parametrize("halve_variance", [True, False])
@pytest.mark.parametrize(("lam", "mu", "nu"), [(25.0, 25.0, 1.0), (1.0, 3.0, 0.5)])
def test_vicreg_loss_matches_naive_reference(lam: float, mu: float, nu: float, halve_variance: bool) -> None:
    z1, z2 = random_pair(10, 6, seed=5)
    z1 = z1 * 0.4  # std below 1 in some dimensions, so the variance hinge is active
    loss = vicreg_loss(z1, z2, lam, mu, nu, halve_variance=halve_variance)
    assert loss.shape == ()
    expected = naive_vicreg(z1.tolist(), z2.tolist(), lam, mu, nu, halve_variance)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_vicreg_official_variance_weight_is_half_the_papers() -> None:
    # Halving the two branches' sum is the paper's formula at half the variance weight.
    z1, z2 = random_pair(10, 6, seed=9)
    z1 = z1 * 0.4
    official = vicreg_loss(z1, z2, 25.0, 25.0, 1.0)
    torch.testing.assert_close(official, vicreg_loss(z1, z2, 25.0, 12.5, 1.0, halve_variance=False))
    assert official < vicreg_loss(z1, z2, 25.0, 25.0, 1.0, halve_variance=False)


@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
def test_moco_infonce_matches_naive_reference(temperature: float) -> None:
    q, k = (torch.nn.functional.normalize(t, dim=1) for t in random_pair(6, 8, seed=6))
    generator = torch.Generator().manual_seed(7)
    queue = torch.nn.functional.normalize(torch.randn(8, 20, generator=generator, dtype=torch.float64), dim=0)
    loss = moco_infonce_loss(q, k, queue, temperature)
    assert loss.shape == ()
    expected = naive_infonce(q.tolist(), k.tolist(), queue.tolist(), temperature)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_byol_cosine_momentum_schedule() -> None:
    assert cosine_momentum(0.0, 0.996) == pytest.approx(0.996, abs=1e-12)
    assert cosine_momentum(1.0, 0.996) == pytest.approx(1.0, abs=1e-12)
    assert cosine_momentum(0.5, 0.996) == pytest.approx(0.998, abs=1e-12)


# ---- the methods as modules ----

def build_small(method_name: str, **overrides):
    torch.manual_seed(0)
    backbone, feature_dim = build_backbone("cbr_nano")
    small = {name: SMALL for name in method_parameters(method_name) if name.endswith("_dim")}
    if method_name == "mocov2":
        small["queue_size"] = 32
    method = build_method(method_name, backbone, feature_dim, {**small, **overrides})
    return method.train()


def random_views(seed: int = 0, batch: int = 8) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 32, 32, generator=generator) for _ in range(2)]


def is_target(name: str) -> bool:
    return name.startswith(TARGET_PREFIXES)


@pytest.mark.parametrize("method_name", NEW_METHODS)
def test_registered_with_paper_defaults(method_name: str) -> None:
    assert method_name in METHODS and METHODS[method_name].name == method_name
    parameters = method_parameters(method_name)
    for key, value in PAPER_DEFAULTS[method_name].items():
        assert parameters[key] == value, key


@pytest.mark.parametrize("method_name", NEW_METHODS)
def test_gradients_reach_every_trainable_parameter_and_no_target(method_name: str) -> None:
    method = build_small(method_name)
    output = method(random_views())
    assert output.loss.shape == () and torch.isfinite(output.loss)
    assert output.embedding.shape == (8, SMALL)
    output.loss.backward()
    for name, parameter in method.named_parameters():
        if is_target(name):
            assert not parameter.requires_grad, name
            assert parameter.grad is None, name
        else:
            assert parameter.requires_grad, name
            assert parameter.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(parameter.grad).all(), name
    has_target = any(is_target(name) for name, _ in method.named_parameters())
    assert has_target == (method_name in ("byol", "mocov2"))


def online_and_target(method, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One weight tensor of the online/query network and its EMA copy."""
    online = method.backbone.blocks[1][0].weight
    target = (method.target_backbone if name == "byol" else method.key_backbone).blocks[1][0].weight
    return online, target


@pytest.mark.parametrize(("method_name", "progress"), [("byol", 0.0), ("byol", 0.3), ("byol", 1.0),
                                                       ("mocov2", 0.0), ("mocov2", 0.7)])
def test_after_optimizer_step_is_the_ema(method_name: str, progress: float) -> None:
    method = build_small(method_name)
    online, target = online_and_target(method, method_name)
    assert online.data_ptr() != target.data_ptr()
    torch.testing.assert_close(online, target)  # the copy starts equal
    with torch.no_grad():  # stand-in for an optimizer step on the online network
        for parameter in method.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter))
    online_before, target_before = online.detach().clone(), target.detach().clone()
    method.after_optimizer_step(progress)
    if method_name == "byol":
        tau = 1 - (1 - 0.996) * (math.cos(math.pi * progress) + 1) / 2
    else:
        tau = 0.999
    torch.testing.assert_close(target, tau * target_before + (1 - tau) * online_before, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(online, online_before)
    if progress == 1.0:
        torch.testing.assert_close(target, target_before)
    elif progress < 1.0:
        assert not torch.equal(target, target_before)


def test_moco_queue_pointer_and_enqueued_keys() -> None:
    method = build_small("mocov2", queue_size=12)
    queue_before = method.queue.clone()
    torch.testing.assert_close(queue_before.norm(dim=0), torch.ones(12))
    views = random_views(seed=1)
    with torch.no_grad():
        keys = torch.nn.functional.normalize(method.key_projector(method.key_backbone(views[1])), dim=1)
        queries = torch.nn.functional.normalize(method.projector(method.backbone(views[0])), dim=1)
    output = method(views)
    # The loss used the queue as it was before this batch's keys were enqueued.
    expected = naive_infonce(queries.tolist(), keys.tolist(), queue_before.tolist(), 0.2)
    assert output.loss.item() == pytest.approx(expected, abs=1e-4)
    assert int(method.queue_pointer) == 8
    torch.testing.assert_close(method.queue[:, :8], keys.T)
    torch.testing.assert_close(method.queue[:, 8:], queue_before[:, 8:])
    output.loss.backward()  # the in-place enqueue did not break the graph

    views = random_views(seed=2)
    with torch.no_grad():
        keys = torch.nn.functional.normalize(method.key_projector(method.key_backbone(views[1])), dim=1)
    method(views)
    assert int(method.queue_pointer) == 4  # (8 + 8) % 12: wraps around
    torch.testing.assert_close(method.queue[:, 8:], keys[:4].T)
    torch.testing.assert_close(method.queue[:, :4], keys[4:].T)


# ---- two gloo workers compute what one worker computes on the concatenated batch ----

WORLD = 2


def distributed_worker(rank: int, init_file: str, results: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        inputs, weight = global_batch()
        local = [x[rank * 4:(rank + 1) * 4] for x in inputs]
        out = {}
        for name, loss_function in (("barlowtwins", barlow_twins_loss), ("vicreg", vicreg_loss)):
            projector = weight.clone().requires_grad_()
            loss = loss_function(*(gather_z(x, projector) for x in local))
            loss.backward()
            dist.all_reduce(projector.grad)  # what DDP does: average the gradients over workers
            out[name] = (loss.detach(), projector.grad / WORLD)
        method = build_small("mocov2", queue_size=12)
        method.enqueue(torch.full((4, SMALL), float(rank + 1)))
        out["queue"] = method.queue.clone()
        torch.save(out, f"{results}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def global_batch() -> tuple[list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    inputs = [torch.randn(8, 5, generator=generator, dtype=torch.float64) for _ in range(2)]
    return inputs, torch.randn(5, 6, generator=generator, dtype=torch.float64)


def gather_z(x: torch.Tensor, projector: torch.Tensor) -> torch.Tensor:
    from trainables.distributed import gather_with_grad

    return gather_with_grad(x @ projector)


def test_two_workers_match_one_worker_on_the_global_batch(tmp_path) -> None:
    torch.multiprocessing.spawn(distributed_worker, args=(str(tmp_path / "init"), str(tmp_path)),
                                nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"{rank}.pt", weights_only=True) for rank in range(WORLD)]
    inputs, weight = global_batch()
    for name, loss_function in (("barlowtwins", barlow_twins_loss), ("vicreg", vicreg_loss)):
        projector = weight.clone().requires_grad_()
        loss = loss_function(*(x @ projector for x in inputs))
        loss.backward()
        for result in results:
            torch.testing.assert_close(result[name][0], loss.detach())
            torch.testing.assert_close(result[name][1], projector.grad)
    # Every worker's queue holds the keys of both workers, in rank order.
    expected_keys = torch.cat([torch.full((4, SMALL), 1.0), torch.full((4, SMALL), 2.0)])
    for result in results:
        torch.testing.assert_close(result["queue"][:, :8], expected_keys.T)
    torch.testing.assert_close(results[0]["queue"], results[1]["queue"])
