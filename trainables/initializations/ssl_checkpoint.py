"""Double pretraining (Ciga, Xu, Martel): start from a backbone an SSL method trained on ImageNet.

SSL checkpoints wrap the backbone in many ways: `{"state_dict": ...}` or `{"model": ...}`
dicts, DDP's `module.`, the method's `encoder.`/`backbone.`/`encoder_q.` prefix, projection and
prediction heads, prototypes, momentum copies. `clean_ssl_state_dict` peels all of that off;
`load_ssl_checkpoint` loads what fits and reports what did not.
"""

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from trainables.initializations.pretrained import weights_file
from trainables.saved_backbone import read_weights, unpickling_refused

WRAPPER_KEYS = ("state_dict", "model", "teacher", "network")  # searched in this order
PREFIXES = ("module.", "_orig_mod.", "model.", "encoder_q.", "base_encoder.", "online_network.", "encoder.",
            "backbone.", "trunk.", "net.")
# Top-level modules of a method, not of the backbone: momentum/target copies of it, and heads.
COPIES = ("encoder_k", "momentum_encoder", "momentum_backbone", "momentum_projector", "momentum_predictor",
          "target_encoder", "target_network", "target_backbone", "teacher", "queue", "queue_ptr")
HEADS = ("fc", "head", "heads", "classifier", "projector", "projection_head", "projection", "predictor",
         "prediction_head", "prototypes", "protos", "linear")
_LIST_AT_MOST = 6


@dataclass
class CleanedStateDict:
    tensors: dict[str, torch.Tensor]
    stripped_prefixes: set[str] = field(default_factory=set)
    dropped_heads: list[str] = field(default_factory=list)
    dropped_copies: list[str] = field(default_factory=list)


def clean_ssl_state_dict(checkpoint: dict) -> CleanedStateDict:
    """The backbone's tensors from an SSL checkpoint: wrappers, prefixes, heads and copies removed."""
    while not _holds_tensors(checkpoint):
        wrapper = next((key for key in WRAPPER_KEYS if isinstance(checkpoint.get(key), dict)), None)
        if wrapper is None:
            raise ValueError(f"no state dict in this checkpoint; its keys are {sorted(checkpoint)[:10]}")
        checkpoint = checkpoint[wrapper]
    cleaned = CleanedStateDict(tensors={})
    for key, value in checkpoint.items():
        if not isinstance(value, torch.Tensor):
            continue
        name = key
        while name.split(".")[0] not in COPIES and (prefix := next(
            (prefix for prefix in PREFIXES if name.startswith(prefix)), None
        )):
            name = name[len(prefix):]
            cleaned.stripped_prefixes.add(prefix)
        top = name.split(".")[0]
        if top in COPIES:
            cleaned.dropped_copies.append(key)
        elif top in HEADS:
            cleaned.dropped_heads.append(key)
        else:
            cleaned.tensors[name] = value
    return cleaned


def load_ssl_checkpoint(model: nn.Module, location: str, sha256: str | None = None) -> str:
    """Load the backbone tensors of the SSL checkpoint at `location` (path or URL) into `model`.

    Loads every tensor whose name and shape fit, leaves the rest of `model` as it is, and returns a
    report of what was stripped, dropped, missing (left at random init), unexpected and mismatched.
    Raises when nothing fits: that is the wrong file, not a partial transfer.
    """
    path = weights_file(location, sha256)
    checkpoint = read_checkpoint(path)
    cleaned = clean_ssl_state_dict(checkpoint)
    expected = model.state_dict()
    fitting = {key: value for key, value in cleaned.tensors.items()
               if key in expected and value.shape == expected[key].shape}
    mismatched = [key for key in cleaned.tensors if key in expected and key not in fitting]
    unexpected = [key for key in cleaned.tensors if key not in expected]
    missing = [key for key in expected if key not in fitting and not key.endswith("num_batches_tracked")]
    if not fitting:
        raise ValueError(f"nothing in {path} fits {type(model).__name__}: after cleaning its keys start "
                         f"{list(cleaned.tensors)[:5]}, the model's {list(expected)[:5]}")
    model.load_state_dict(fitting, strict=False)
    parts = [f"ssl-imagenet: loaded {len(fitting)} of the model's {len(expected)} tensors from {path}",
             f"stripped prefixes {sorted(cleaned.stripped_prefixes) or 'none'}",
             f"dropped {len(cleaned.dropped_heads)} head tensors {_few(cleaned.dropped_heads)}",
             f"dropped {len(cleaned.dropped_copies)} momentum/target copies {_few(cleaned.dropped_copies)}",
             f"missing, left at random init: {len(missing)} {_few(missing)}",
             f"unexpected, ignored: {len(unexpected)} {_few(unexpected)}",
             f"shape mismatches, left at random init: {len(mismatched)} {_few(mismatched)}"]
    return "; ".join(parts)


def read_checkpoint(path: Path) -> dict:
    """A safetensors file, or a torch file read with `weights_only=True`: tensors and plain values
    only, so no code in the file runs. ValueError with one line for anything else."""
    if path.suffix == ".safetensors":
        return read_weights(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # Python objects besides tensors (argparse.Namespace, code)
        raise ValueError(unpickling_refused(path, error)) from None
    except Exception as error:  # not a torch file at all
        raise ValueError(f"{path} cannot be read by torch.load ({type(error).__name__}: "
                         f"{' '.join(str(error).split())[:200]}); is it a checkpoint?") from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a state dict")
    return checkpoint


def _holds_tensors(checkpoint: dict) -> bool:
    return any(isinstance(value, torch.Tensor) for value in checkpoint.values())


def _few(keys: list[str]) -> str:
    if not keys:
        return ""
    more = f", ... (+{len(keys) - _LIST_AT_MOST})" if len(keys) > _LIST_AT_MOST else ""
    return "(" + ", ".join(keys[:_LIST_AT_MOST]) + more + ")"
