"""No method's training step waits for the device: inside the loop's step (learning rates,
augmentation, forward, backward, the method's hooks, the optimizer, the epoch sums) nothing reads
a tensor's value on the host (`.item()`, `float(tensor)`, `bool(tensor)`, `.tolist()`), makes a
tensor from Python values (`torch.tensor(...)`: on a GPU a blocking host-to-device copy), or
runs an op whose output shape depends on the data (nonzero, boolean indexing, unique). Each is
a host-device sync on a GPU; on the CPU the ops themselves show it, so every method is checked here.
"""

import functools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from trainables import augmentations
from trainables.config import TrialConfig
from trainables.evaluation import embedding_std
from trainables.methods import PRETRAINING_METHODS, method_parameters
from trainables.optimization import set_learning_rates
from trainables.training import build_training_state, train_step, training_view_specs

BATCH, IMAGE_SIZE = 8, 16
# Small queues that fill within the warm-up steps, so the steps checked use them.
QUEUES = {"mocov2": {"queue_size": 16}, "swav": {"num_prototypes": 12, "num_small_crops": 2,
                                                 "queue_length": BATCH, "queue_start_epoch": 0}}
DATA_DEPENDENT_SHAPES = {"aten.nonzero", "aten.masked_select", "aten._unique2", "aten.unique_dim",
                         "aten.unique_consecutive", "aten.repeat_interleave"}


gpu_blur = augmentations._blur_selected_


class HostSyncs(TorchDispatchMode):
    """Records every op that would make the host wait for (or feed) the device."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket._qualified_op_name.replace("::", ".")
        if name == "aten._local_scalar_dense":
            self.found.append("a tensor's value read on the host (.item(), float(), int(), bool())")
        elif name in ("aten.lift_fresh", "aten.lift_fresh_copy"):
            self.found.append("a tensor made from Python values (torch.tensor / as_tensor)")
        elif name in DATA_DEPENDENT_SHAPES:
            self.found.append(f"{name}: an output shape that depends on the data")
        elif name in ("aten.index", "aten.index_put", "aten.index_put_") and any(
                isinstance(index, torch.Tensor) and index.dtype == torch.bool
                for index in (args[1] if len(args) > 1 else ())):
            self.found.append(f"{name} with a boolean mask: an output shape that depends on the data")
        return func(*args, **(kwargs or {}))


def forbid(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError(f"Tensor.{name} inside the training step: a host-device sync")

    monkeypatch.setattr(torch.Tensor, name, refuse)


@pytest.mark.parametrize("method", PRETRAINING_METHODS)
def test_the_training_step_never_syncs_with_the_device(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dims = {name: 16 for name, default in method_parameters(method).items()
            if name.endswith("_dim") and isinstance(default, int)}
    config = TrialConfig.from_dict({"method": method, "backbone": "cbr_nano", "image_size": IMAGE_SIZE,
                                    "batch_size": BATCH, "dataset": "shapes", "epochs": 3,
                                    "method_params": dims | QUEUES.get(method, {})})
    device = torch.device("cpu")
    torch.manual_seed(0)
    state = build_training_state(config, 1, device, announce=False)
    view_specs = training_view_specs(state.method, config, grayscale=False)
    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (BATCH, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    loss_sum, collapse_sum = torch.zeros(()), torch.zeros(())
    epoch, total_steps = 2, 30  # past SwAV's frozen prototypes and its queue start

    def loop_step() -> None:
        nonlocal loss_sum, collapse_sum
        set_learning_rates(state.optimizer, state.step, total_steps, 2, 0.05)
        output = train_step(state, images, view_specs, generator, epoch, total_steps)
        loss_sum += output.loss.detach()
        collapse_sum += embedding_std(output.embedding)

    for _ in range(3):  # warm-up: lazily made constants, optimizer state, queues filling
        loop_step()
    if method == "swav":
        started, filled = state.method.host_queue_state()
        assert started and filled >= state.method.queue.shape[1]  # the checked step uses the full queue
    # The GPU's blur: every image blurred, then a masked select (on a CPU the loop blurs only the
    # chosen images, indexed, which costs nothing there and would sync on a GPU).
    monkeypatch.setattr(augmentations, "_blur_selected_", functools.partial(gpu_blur, masked=True))
    for name in ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__"):
        forbid(monkeypatch, name)
    syncs = HostSyncs()
    with syncs:
        loop_step()
    assert syncs.found == [], sorted(set(syncs.found))
    monkeypatch.undo()
    assert torch.isfinite(loss_sum)
