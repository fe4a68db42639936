"""A trained backbone as data, never as code: its state dict in safetensors and, beside it, the
architecture it belongs to in JSON.

Workers write the pair into the trial's final checkpoint (trainables.trial_checkpoint); the
sweep's driver logs both into the trial's MLflow model and rebuilds the network from them with the
project's one architecture builder (trainables.initializations.load_saved_backbone). Neither file
can carry a pickle: a planted or altered file is refused with one line, and nothing in it runs.
"""

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

WEIGHTS_FILE = "backbone.safetensors"
ARCHITECTURE_FILE = "backbone.json"


@dataclass(frozen=True)
class BackboneArchitecture:
    """What decides the network's shape and forward, besides its tensors."""

    backbone: str
    slim: bool = False  # Transfusion's Slim: blocks 3-4 at half width
    cifar_stem: bool = False
    norm: str = "as-is"
    weight_standardization: str = "as-is"
    weights_dir: str | None = None  # where an hf-hub: backbone's config.json is looked for

    @classmethod
    def of_trial(cls, config: Any) -> "BackboneArchitecture":
        """The architecture of a trial's backbone (config: a trainables.config.TrialConfig)."""
        return cls(config.backbone, slim=config.init == "slim", cifar_stem=config.cifar_stem,
                   norm=config.norm, weight_standardization=config.weight_standardization,
                   weights_dir=config.weights_dir)

    @classmethod
    def from_json(cls, text: str, source: str) -> "BackboneArchitecture":
        """ValueError with one line for anything but the object `to_json` writes."""
        try:
            values = json.loads(text)
        except ValueError as error:
            raise ValueError(f"{source} is not JSON ({error})") from None
        names = {field.name: field.type for field in fields(cls)}
        if not isinstance(values, dict) or "backbone" not in values or set(values) - set(names):
            raise ValueError(f"{source} is not a backbone architecture: expected the keys {', '.join(names)}")
        for name, value in values.items():
            expected = {"slim": bool, "cifar_stem": bool}.get(name, str)
            if not (isinstance(value, expected) or (name == "weights_dir" and value is None)):
                raise ValueError(f"{source}: {name} must be {expected.__name__}, not {value!r}")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def save_backbone(backbone: nn.Module, architecture: BackboneArchitecture, directory: Path) -> None:
    """WEIGHTS_FILE and ARCHITECTURE_FILE in `directory`."""
    state = {key: value.detach().cpu().contiguous() for key, value in backbone.state_dict().items()}
    safetensors.torch.save_file(state, str(Path(directory) / WEIGHTS_FILE))
    (Path(directory) / ARCHITECTURE_FILE).write_text(architecture.to_json())


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; ValueError with one line for any other file (a pickle)."""
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a safetensors file ({' '.join(str(error).split())[:200]}); "
                         "refused: weights are read as safetensors only, never unpickled") from None


def unpickling_refused(path: Path | str, error: Exception) -> str:
    """One line for a file that `torch.load(weights_only=True)` would not read: what it holds."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = next((line for line in lines if "Unsupported global" in line), lines[0] if lines else "")
    reason = reason.removeprefix("WeightsUnpickler error: ").split(". Please use")[0][:200]
    return (f"{path} holds more than tensors and plain values ({type(error).__name__}: {reason}); refused, "
            "never unpickled: save its state dict alone (torch.save(model.state_dict())) or as safetensors")


def check_weights_bytes(data: bytes, source: str) -> None:
    """ValueError with one line unless `data` is a safetensors file's bytes."""
    try:
        safetensors.torch.load(data)
    except (SafetensorError, ValueError) as error:
        raise ValueError(f"{source} is not a safetensors file ({' '.join(str(error).split())[:200]}); "
                         "refused: weights are read as safetensors only, never unpickled") from None
