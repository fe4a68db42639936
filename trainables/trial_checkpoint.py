"""A trial's checkpoint: what it holds, how it is written and how a trial continues from it.

Every epoch's checkpoint is one `state.pt` (the method's weights and heads, the optimizer, the
position in training and the last epoch's report), loaded with `weights_only=True`. The final
checkpoint adds the evaluation's artifacts (ARTIFACTS_FOLDER, uploaded to MLflow by the logger)
and the backbone alone (BACKBONE_FILE, which becomes the MLflow model).
"""

from pathlib import Path
from typing import Protocol

import torch
from torch import nn

CHECKPOINT_FILE = "state.pt"
BACKBONE_FILE = "backbone.pt"  # the final checkpoint's backbone alone, a pickled module (the MLflow model)
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
    saved = torch.load(Path(directory) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    state.method.load_state_dict(saved["method"])
    state.optimizer.load_state_dict(saved["optimizer"])
    for key in POSITION_KEYS:
        setattr(state, key, saved[key])
    state.epoch_metrics = saved.get("epoch_metrics", {})


def save_final(state: CheckpointedState, backbone: nn.Module, directory: Path) -> None:
    """The last checkpoint: the state, plus the backbone alone for the MLflow model."""
    save_state(state, directory)
    torch.save(backbone, directory / BACKBONE_FILE)
