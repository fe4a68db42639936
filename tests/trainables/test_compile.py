"""The trial setting `compile` (trainables.devices.compile_forward_and_loss, called by
trainables.training.build_training_state): a compiled step computes what the eager step does,
and checkpoints move freely between compiled and eager trials.

On the CPU the tests compile with aot_eager: dynamo's tracing and AOTAutograd's forward and
backward graphs, run with torch's kernels. Inductor's code generation is what a GPU runs; on this
2-core machine it takes about 110 s to compile cbr_nano's SimCLR step from a cold cache, so it is
left to the GPU check (benchmarks/gpu_check.py)."""

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from trainables.config import TrialConfig
from trainables.methods import PRETRAINING_METHODS, method_parameters
from trainables.optimization import set_learning_rates
from trainables.training import TrainingState, build_training_state, train_step, training_view_specs
from trainables.trial_checkpoint import load_state, save_state

ROOT = Path(__file__).resolve().parents[2]
BACKEND = "aot_eager"
BATCH = 8
COMPILED_PREFIX = "_orig_mod."  # what torch.compile(module) puts before every state-dict key


def small_config(method: str, compiled: bool) -> TrialConfig:
    """cbr_nano at 16 px with every *_dim hyperparameter of the method at 16, and SwAV with 2 small
    crops, not 6 (fast on a CPU)."""
    small = {name: 16 for name, default in method_parameters(method).items()
             if name.endswith("_dim") and isinstance(default, int)}
    if "num_small_crops" in method_parameters(method):
        small["num_small_crops"] = 2
    return TrialConfig(method=method, dataset="shapes", image_size=16, batch_size=BATCH, epochs=1,
                       method_params=small, compile=compiled, compile_backend=BACKEND)


def fresh_state(config: TrialConfig) -> TrainingState:
    torch.manual_seed(0)
    return build_training_state(config, 1, torch.device("cpu"), announce=False)


def images(seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (BATCH, 3, 16, 16), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def step(state: TrainingState, config: TrialConfig, seed: int) -> torch.Tensor:
    """One loop step at a fixed learning rate on batch `seed`, its views drawn with `seed`."""
    set_learning_rates(state.optimizer, state.step, 100, 0, 0.1)
    views = training_view_specs(state.method, config, grayscale=False)
    return train_step(state, images(seed), views, torch.Generator().manual_seed(seed), 1, 100).loss.detach()


def assert_equal_states(first: TrainingState, second: TrainingState) -> None:
    """The same state-dict keys in the same order, every tensor equal, the same position."""
    first_dict, second_dict = first.method.state_dict(), second.method.state_dict()
    assert list(first_dict) == list(second_dict)
    assert not any(key.startswith(COMPILED_PREFIX) for key in first_dict)
    for key, value in first_dict.items():
        assert torch.equal(value, second_dict[key]), key
    first_optimizer = first.optimizer.state_dict()["state"]
    second_optimizer = second.optimizer.state_dict()["state"]
    assert list(first_optimizer) == list(second_optimizer) and first_optimizer  # momentum buffers exist
    for index, kept in first_optimizer.items():
        assert list(kept) == list(second_optimizer[index])
        assert all(torch.equal(torch.as_tensor(kept[name]), torch.as_tensor(second_optimizer[index][name]))
                   for name in kept), index
    assert first.step == second.step


@pytest.mark.parametrize(("method", "checkpointing"),
                         [*((method, False) for method in PRETRAINING_METHODS), ("simclr", True)])
def test_a_compiled_step_gives_the_eager_loss_and_weights(method: str, checkpointing: bool) -> None:
    """Every method; and with activation checkpointing (which the planner may switch on), whose
    recomputed BatchNorms must not update their running statistics twice, compiled or not."""
    eager_config = dataclasses.replace(small_config(method, compiled=False),
                                       activation_checkpointing=checkpointing)
    compiled_config = dataclasses.replace(eager_config, compile=True)
    eager, compiled = fresh_state(eager_config), fresh_state(compiled_config)
    for seed in (1, 2):  # the second step starts from the first one's weights, statistics and queues
        torch.testing.assert_close(step(compiled, compiled_config, seed), step(eager, eager_config, seed))
    for key, value in eager.method.state_dict().items():
        torch.testing.assert_close(compiled.method.state_dict()[key], value, msg=key)


def test_compile_on_runs_the_step_through_the_compiler_and_off_does_not() -> None:
    for compiled in (False, True):
        config = small_config("simclr", compiled)
        state = fresh_state(config)
        torch._dynamo.reset()
        counters.clear()
        step(state, config, 1)
        graphs = counters["stats"]["unique_graphs"]
        assert graphs > 0 if compiled else graphs == 0, (compiled, dict(counters["stats"]))


@pytest.mark.parametrize(("written_compiled", "read_compiled"), [(True, False), (True, True), (False, True)])
def test_a_checkpoint_moves_between_compiled_and_eager_trials(written_compiled: bool, read_compiled: bool,
                                                              tmp_path: Path) -> None:
    """BYOL: weights, the EMA target, BatchNorm statistics and the optimizer's momentum all travel;
    the restored trial's next step is the writer's next step."""
    writer_config = small_config("byol", written_compiled)
    reader_config = dataclasses.replace(writer_config, compile=read_compiled)
    writer = fresh_state(writer_config)
    for seed in (1, 2):
        step(writer, writer_config, seed)
    save_state(writer, tmp_path)
    saved = torch.load(tmp_path / "state.pt", weights_only=True)["method"]
    assert list(saved) == list(fresh_state(small_config("byol", False)).method.state_dict())

    torch.manual_seed(1)  # a reader whose own initialization differs: everything must come from the file
    reader = build_training_state(reader_config, 1, torch.device("cpu"), announce=False)
    load_state(reader, tmp_path)
    assert_equal_states(writer, reader)
    torch.testing.assert_close(step(reader, reader_config, 3), step(writer, writer_config, 3), rtol=0, atol=0)
    assert_equal_states(writer, reader)


# One of two DDP workers (gloo, as on CPUs): SimCLR, its negatives gathered from both workers and
# its BatchNorm spanning them, eager and compiled from the same start; the largest loss and weight
# differences as one JSON line. (Barlow Twins' all-reduced correlation and SwAV's Sinkhorn over
# both workers agreed exactly too, run by hand: a minute more here.)
DDP_WORKER = textwrap.dedent("""
    import json, sys
    import torch, torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    sys.path.insert(0, sys.argv[3])
    from test_compile import images, small_config, step
    from trainables.training import build_training_state

    rank, init_file = int(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    differences = {}
    for method in ("simclr",):
        runs = []
        for compiled in (False, True):
            config = small_config(method, compiled)
            torch.manual_seed(0)
            state = build_training_state(config, 2, torch.device("cpu"), announce=False,
                                         data_parallel=lambda module: DistributedDataParallel(
                                             module, broadcast_buffers=False, gradient_as_bucket_view=True))
            losses = torch.stack([step(state, config, seed) for seed in (1, 2)])
            values = state.method.state_dict().values()
            runs.append((losses, torch.cat([value.flatten().float() for value in values])))
        (eager_losses, eager_weights), (compiled_losses, compiled_weights) = runs
        differences[method] = [(compiled_losses - eager_losses).abs().max().item(),
                               (compiled_weights - eager_weights).abs().max().item()]
    print(json.dumps(differences))
    dist.destroy_process_group()
""")


def test_compiled_ddp_workers_give_the_eager_losses_and_weights(tmp_path: Path) -> None:
    """Compiled inside DDP's forward (where the compiler splits the graph at DDP's buckets): two
    workers train as they do eagerly. Plain torch DDP, as Ray Train's prepare_model builds it."""
    workers = [subprocess.Popen([sys.executable, "-c", DDP_WORKER, str(rank), str(tmp_path / "rendezvous"),
                                 str(Path(__file__).parent)], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for rank in range(2)]
    for worker in workers:
        output, errors = worker.communicate(timeout=240)
        assert worker.returncode == 0, errors[-3000:]
        differences = json.loads(output.strip().splitlines()[-1])
        assert differences.keys() == {"simclr"}
        for method, (loss_difference, weight_difference) in differences.items():
            assert loss_difference <= 1e-5 and weight_difference <= 1e-5, (method, differences)
