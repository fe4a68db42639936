"""What a trial consumed and produced, in MLflow's own terms: its data as a dataset input (digest =
the split hash), its pretrained backbone as an MLflow model; and MLflow model URIs as weights_path.

Everything here runs in the sweep's driver: workers never talk to MLflow. The loop leaves the
backbone in the trial's final checkpoint as data (trainables.saved_backbone: a safetensors state
dict and its architecture in JSON); the Tune callback logs both files into the trial's MLflow model
`backbone`, then rebuilds the network from them and logs it with MLflow's PyTorch flavour in its
`pt2` format (torch.export), so `mlflow.pytorch.load_model("runs:/<run id>/backbone")` gives the
backbone back. Going the other way, a `runs:/...` or `models:/...` weights_path is read here
before any trial starts, from the model's safetensors file only (never `mlflow.pytorch.load_model`,
and with MLflow's pickle deserialization off), and its bytes travel to the trials through Ray's
object store (trainables.shipped_weights). A model without that file, or whose file is not
safetensors (a pickle planted by whoever can log to the tracking server), is refused with one line.
"""

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from trainables.augmentations import IMAGENET_MEAN, IMAGENET_STD
from trainables.config import TrialConfig
from trainables.data import DATASETS
from trainables.initializations import load_saved_backbone
from trainables.redaction import redact_uri
from trainables.saved_backbone import ARCHITECTURE_FILE, WEIGHTS_FILE, check_weights_bytes

MODEL_NAME = "backbone"  # the model's name in its run: runs:/<run id>/backbone
MLFLOW_URI_SCHEMES = ("runs:/", "models:/")
EXAMPLE_BATCH = 2  # > 1, or torch.export fixes the batch dimension at 1


def is_mlflow_uri(location: str | None) -> bool:
    return bool(location) and location.startswith(MLFLOW_URI_SCHEMES)


EVALUATION_CONTEXT, PRETRAINING_CONTEXT = "evaluation", "pretraining"


def dataset_source(name: str, data_root: str) -> str:
    """Where the driver read a dataset: its folder under data_root (data_root itself for your own
    folders), or the registry's description of bundled and generated data."""
    spec = DATASETS[name]
    if spec.source_folder is None:
        return spec.description
    return str(Path(data_root).expanduser().resolve() / spec.source_folder)


def log_dataset_input(client: MlflowClient, run_id: str, config: TrialConfig, split_hash: str) -> None:
    """The labeled splits the trial is evaluated on as a dataset input (context "evaluation"): the
    dataset's name, where the driver read it, the split hash as its digest (equal digests: the same
    images and splits), and the split policy and seed in its profile."""
    source = {"uri": dataset_source(config.dataset, config.data_root)}
    profile = {"image_size": config.image_size, "split": config.split, "seed": config.seed}
    dataset = Dataset(name=config.dataset, digest=str(split_hash), source_type="local",
                      source=json.dumps(source), profile=json.dumps(profile))
    context = InputTag(MLFLOW_DATASET_CONTEXT, EVALUATION_CONTEXT)
    client.log_inputs(run_id, [DatasetInput(dataset, tags=[context])])


def log_pretraining_input(client: MlflowClient, run_id: str, config: TrialConfig, content_hash: str) -> None:
    """The pool SSL pretrained on, as a second dataset input (context "pretraining"; digest = the
    pool's content hash), for every trial that pretrains: on the evaluation's train split (the
    default; the evaluation dataset's name, the digest that split's images alone) or on another pool."""
    source = {"uri": dataset_source(config.resolved_pretrain_dataset, config.resolved_pretrain_data_root)}
    profile = {"image_size": config.image_size, "fraction": config.pretrain_fraction, "seed": config.seed}
    dataset = Dataset(name=config.resolved_pretrain_dataset, digest=str(content_hash), source_type="local",
                      source=json.dumps(source), profile=json.dumps(profile))
    context = InputTag(MLFLOW_DATASET_CONTEXT, PRETRAINING_CONTEXT)
    client.log_inputs(run_id, [DatasetInput(dataset, tags=[context])])


def model_metadata(config: TrialConfig, feature_dim: int) -> dict[str, Any]:
    """What a user of the model needs to rebuild and feed it."""
    return {
        "backbone": config.backbone, "feature_dim": feature_dim,
        "input_size": [3, config.image_size, config.image_size],
        "input": "float32 images (N, 3, H, W) in [0, 1], normalized with mean and std per channel",
        "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "method": config.method, "init": config.init, "dataset": config.dataset,
        "image_size": config.image_size, "epochs": config.epochs,
    }


def log_backbone_model(tracking_uri: str, experiment_id: str, run_id: str, checkpoint_directory: Path,
                       config: TrialConfig, step: int,
                       registered_model_name: str | None = None) -> str | None:
    """Log the final checkpoint's backbone as the run's MLflow model `backbone`, linked to the
    run's metrics at `step`, and register it as a new version of `registered_model_name` if given.
    Returns the model's URI, or None when the checkpoint holds no backbone."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    directory = Path(checkpoint_directory)
    if not (directory / WEIGHTS_FILE).is_file():
        return None
    backbone = load_saved_backbone(directory).eval()
    example = torch.rand(EXAMPLE_BATCH, 3, config.image_size, config.image_size,
                         generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = backbone(example)
    metadata = model_metadata(config, int(features.shape[1]))
    mlflow.set_tracking_uri(tracking_uri)  # log_model reads the global URI; the driver has only this one
    client = MlflowClient(tracking_uri)
    # Created here, with its experiment: log_model alone would file it under the default experiment.
    model = client.create_logged_model(
        experiment_id, name=MODEL_NAME, source_run_id=run_id,
        params={key: str(value) for key, value in metadata.items() if not isinstance(value, dict | list)},
    )
    # The tensors and architecture first: they are what this project reads back (fetch_weights),
    # and they stay in MLflow even where torch.export cannot trace the network.
    with tempfile.TemporaryDirectory(prefix="backbone-files-") as files:
        for name in (WEIGHTS_FILE, ARCHITECTURE_FILE):
            (Path(files) / name).write_bytes((directory / name).read_bytes())
        client.log_model_artifacts(model.model_id, files)
    info = mlflow.pytorch.log_model(
        backbone, name=MODEL_NAME, model_id=model.model_id, run_id=run_id, step=step,
        input_example=example.numpy(), signature=infer_signature(example.numpy(), features.numpy()),
        metadata=metadata, pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        serialization_format="pt2", validate_serving_input=False,
        registered_model_name=registered_model_name,
    )
    return info.model_uri


PICKLE_SWITCH = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"


def refuse_mlflow_pickles() -> None:
    """MLflow's own switch off: no MLflow loader in this process unpickles a model (MLflow 3.x)."""
    os.environ[PICKLE_SWITCH] = "false"


def fetch_weights(location: str, tracking_uri: str) -> bytes:
    """The bytes of the safetensors state dict of the MLflow model at `location`. Raises
    ValueError with one line naming the URI when the model or its file is missing or not
    safetensors; nothing from the model is ever unpickled."""
    import mlflow
    import mlflow.artifacts

    refuse_mlflow_pickles()
    mlflow.set_tracking_uri(tracking_uri)  # a logged model's files are looked up through the global URI
    fix = (f"give runs:/<run id>/{MODEL_NAME} of a finished trial, or models:/<name>/<version> of a "
           "model this project logged")
    try:
        with tempfile.TemporaryDirectory(prefix="weights-uri-") as directory:
            path = mlflow.artifacts.download_artifacts(artifact_uri=f"{location.rstrip('/')}/{WEIGHTS_FILE}",
                                                       dst_path=directory, tracking_uri=tracking_uri)
            data = Path(path).read_bytes()
    except Exception as error:  # a wrong id, no such model or version, no safetensors file: one message
        reason = " ".join(str(error).split())[:300]
        raise ValueError(
            f"weights_path {location} cannot be loaded from MLflow at {redact_uri(tracking_uri)}: it has no "
            f"{WEIGHTS_FILE} ({type(error).__name__}: {reason}); {fix}"
        ) from None
    check_weights_bytes(data, f"weights_path {location} ({WEIGHTS_FILE} in MLflow)")
    return data


def resolve_weights(configs: Iterable[TrialConfig], tracking_uri: str) -> dict[str, bytes]:
    """{weights_path: safetensors bytes} for each distinct MLflow URI the trials name ({method} and
    {backbone} filled in); printed one line each. Raises ValueError for one that does not load."""
    locations = dict.fromkeys(location for location in (config.resolved_weights_path for config in configs)
                              if is_mlflow_uri(location))
    resolved = {}
    for location in locations:
        resolved[location] = fetch_weights(location, tracking_uri)
        print(f"weights: {location} from MLflow, {len(resolved[location]) / 2**20:.1f} MiB", flush=True)
    return resolved


def share_weights(resolved: dict[str, bytes]) -> dict[str, Any]:
    """Each URI's weights into Ray's object store: {weights_path: ObjectRef}."""
    import ray

    return {location: ray.put(weights) for location, weights in resolved.items()}
