"""Two gloo workers with DDP compute one training step exactly as one worker does on the
concatenated batch, for every method: same loss, same updated parameters, same buffers.

In float64, so that the comparison can be tight: in float32 the different reduction order
already moves Barlow Twins' large gradients by ~1e-4 after one step at lr 0.5.
"""

import os

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from trainables.backbones import build_backbone
from trainables.distributed import GlobalBatchNorm, convert_batchnorm_for_distributed
from trainables.methods import PRETRAINING_METHODS, build_method, method_parameters

GLOBAL_BATCH = 8
IMAGE_SIZE = 16
EXTRA_SMALL = {"mocov2": {"queue_size": 32}, "swav": {"num_prototypes": 12, "num_small_crops": 2,
                                                     "queue_length": 0}}  # per-process by design


def small_parameters(method_name: str) -> dict:
    """Every *_dim hyperparameter at 32 (fast), plus a small queue / few prototypes."""
    dims = {name: 32 for name, default in method_parameters(method_name).items()
            if name.endswith("_dim") and isinstance(default, int)}
    return {**dims, **EXTRA_SMALL.get(method_name, {})}


def one_step(method_name: str, rank: int, world_size: int) -> dict:
    """Build the method from seed 0, run one SGD step on this rank's slice, return its state."""
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    backbone, feature_dim = build_backbone("cbr_nano")
    method = build_method(method_name, backbone, feature_dim, small_parameters(method_name))
    generator = torch.Generator().manual_seed(1)
    views = [torch.randn(GLOBAL_BATCH, 3, spec.size, spec.size, generator=generator)
             for spec in method.views(IMAGE_SIZE)]
    local = GLOBAL_BATCH // world_size
    views = [view[rank * local:(rank + 1) * local] for view in views]
    model = method
    if world_size > 1:
        method = convert_batchnorm_for_distributed(method, torch.device("cpu"))
        model = DistributedDataParallel(method, broadcast_buffers=False)
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    output = model(views)
    output.loss.backward()
    method.before_optimizer_step(epoch=2)  # past SwAV's frozen-prototype epoch
    optimizer.step()
    method.after_optimizer_step(0.5)
    loss = output.loss.detach().clone()
    if world_size > 1:
        dist.all_reduce(loss)
        loss /= world_size
    torch.set_default_dtype(torch.float32)
    return {"loss": loss, "state": {k: v.detach().clone() for k, v in method.state_dict().items()}}


def distributed_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        results = {name: one_step(name, rank, 2) for name in PRETRAINING_METHODS}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_worker_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("ddp")
    torch.multiprocessing.spawn(distributed_worker, args=(str(out_dir / "init"), str(out_dir)), nprocs=2)
    return [torch.load(out_dir / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


@pytest.mark.parametrize("method_name", PRETRAINING_METHODS)
def test_two_workers_equal_one_worker_on_the_concatenated_batch(method_name: str, two_worker_results) -> None:
    single = one_step(method_name, rank=0, world_size=1)
    for rank, results in enumerate(two_worker_results):
        result = results[method_name]
        assert result["loss"].dtype == torch.float64
        torch.testing.assert_close(result["loss"], single["loss"], atol=1e-10, rtol=1e-10)
        assert result["state"].keys() == single["state"].keys()
        for key, value in single["state"].items():
            torch.testing.assert_close(result["state"][key], value, atol=1e-10, rtol=1e-9,
                                       msg=lambda text, key=key, rank=rank: f"rank {rank}, {key}: {text}")


def test_global_batchnorm_matches_batchnorm_on_one_process() -> None:
    torch.manual_seed(0)
    reference = torch.nn.BatchNorm2d(4)
    converted = convert_batchnorm_for_distributed(torch.nn.Sequential(reference), torch.device("cpu"))
    assert isinstance(converted[0], GlobalBatchNorm)
    images = torch.randn(6, 4, 5, 5)
    torch.testing.assert_close(converted(images), torch.nn.BatchNorm2d(4)(images))
