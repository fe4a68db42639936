"""A trial's checkpoint: what it holds, how it is written and how a trial continues from it.

Every epoch's checkpoint is one `state.pt` (the method's weights and heads, the optimizer, the
position in training and the last epoch's report), loaded with `weights_only=True`. The final
checkpoint adds the evaluation's artifacts (ARTIFACTS_FOLDER, uploaded to MLflow by the logger)
and the backbone alone, as data: its safetensors state dict and its architecture in JSON
(trainables.saved_backbone), from which the driver builds the MLflow model. A checkpoint that holds
anything but tensors and plain values is refused with one line: nothing in it runs.
"""

import pickle
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from trainables.saved_backbone import BackboneArchitecture, save_backbone, unpickling_refused

CHECKPOINT_FILE = "state.pt"
ARTIFACTS_FOLDER = "evaluation"  # inside the final checkpoint; the MLflow logger uploads it
POSITION_KEYS = ("epoch", "step", "collapse_std", "embedding_dim")


class CheckpointedState(Protocol):
    """What a checkpoint saves and restores (trainables.training.TrainingState)."""

    method: nn.Module
    optimizer: torch.optim.Optimizer
    epoch: int
    step: int
    collapse_std: float
    embedding_dim: int
    epoch_metrics: dict


def save_state(state: CheckpointedState, directory: Path) -> None:
    torch.save(
        {"method": state.method.state_dict(), "optimizer": state.optimizer.state_dict(),
         **{key: getattr(state, key) for key in POSITION_KEYS},
         "epoch_metrics": state.epoch_metrics},
        directory / CHECKPOINT_FILE,
    )


def load_state(state: CheckpointedState, directory: Path) -> None:
    """Put the checkpoint in `directory` back into `state`: weights, optimizer and position."""
    path = Path(directory) / CHECKPOINT_FILE
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # torch's message spans many lines
        raise ValueError(f"{unpickling_refused(path, error)}; delete the checkpoint to start the trial "
                         "afresh") from None
    state.method.load_state_dict(saved["method"])
    state.optimizer.load_state_dict(saved["optimizer"])
    for key in POSITION_KEYS:
        setattr(state, key, saved[key])
    state.epoch_metrics = saved.get("epoch_metrics", {})


def save_final(state: CheckpointedState, backbone: nn.Module, architecture: BackboneArchitecture,
               directory: Path) -> None:
    """The last checkpoint: the state, plus the backbone alone (tensors and architecture) for the
    MLflow model."""
    save_state(state, directory)
    save_backbone(backbone, architecture, directory)
