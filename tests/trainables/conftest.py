"""Shared settings for the trainables unit tests."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_torch_thread() -> Iterator[None]:
    """Run each test on one intra-op thread, then restore the previous count.

    These tensors are tiny, so threads only add overhead; on a busy machine (e.g. while Ray tests
    run alongside) oversubscribed intra-op threads made a 100-epoch linear probe ~8x slower.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
