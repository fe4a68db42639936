"""Every exception class of the repository crosses a process boundary with its words.

Ray sends a worker's exception to the Train controller and the Tune driver by pickling it. An
exception whose __init__ takes other arguments than its message unpickles as a TypeError
("__init__() missing 3 required positional arguments"), and the message that said what to do is
lost. The classes are found by walking the packages, so a new one cannot be left out: it fails
here until it has a row in CONSTRUCTOR_ARGUMENTS.
"""

import importlib
import pickle
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import ray.cloudpickle

PACKAGES = ("orchestrator", "trainables", "search_spaces")

# Class name -> realistic constructor arguments (a multi-line part where a class is given one,
# to check that the message comes out on one line all the same).
CONSTRUCTOR_ARGUMENTS: dict[str, tuple[Any, ...]] = {
    "ConfigError": ("bad value nan for learning_rate; it must be a finite number > 0",),
    "DatasetNotFoundError": (
        "dermamnist", Path("data/medmnist/dermamnist_64.npz"),
        "one of dermamnist.npz, dermamnist_64.npz with keys\n    train_images, train_labels",
        "https://zenodo.org/records/10519652/files/dermamnist.npz?download=1 (or download=True)",
    ),
    "CorruptDatasetFileError": (
        "pneumoniamnist", Path("data/medmnist/pneumoniamnist.npz"), "BadZipFile: File is not a zip file",
        "delete it and run again with download=true\n(the new copy's MD5 is checked)",
    ),
    "EmptyDatasetError": ("dataset 'imagefolder' at data: none of its 3 images could be read; "
                          "check the files",),
    "DatasetLabelError": ("labels [7] in data/medmnist/dermamnist.npz (train_labels) are outside the 7 "
                          "classes",),
    "MultiFrameDicomError": ("data/cxr/a/series.dcm is a multi-frame DICOM (4 frames); only single-frame "
                             "images are read: save each frame\nas its own .dcm file",),
    "CorruptCacheError": ("data/.cache/digits-32px-v1.npz: BadZipFile: File is not a zip file",),
    "MissingWeightsError": ("resnet50 ImageNet weights resnet50.tv_in1k not found in weights_dir weights/",),
    "WeightsChecksumError": ("weights/swav.pth is not the published swav checkpoint: its sha256 is 0123..., "
                             "published 85fcc4de; delete it and download it again",),
    "WeightsDigestError": ("weights_path https://h.example/x.pth has sha256 0123..., not weights_sha256 "
                           "4567...: refused; check the file (or the URL), or fix weights_sha256",),
    "ClusterError": ("could not join the Ray cluster at 10.0.0.1:6379 (ConnectionError: timed out); check "
                     "--address or $RAY_ADDRESS",),
    "PlanningError": ("one trial needs 4 worker(s) x 1 GPU + 7 CPU but the cluster can hold 2 such worker(s) "
                      "at most; lower num_workers or add nodes",),
    "PreflightError": ("--storage-path results is a file; name a folder",),
    "ArgumentError": ("argument --cpus-per-worker: invalid int value: 'two'; see python -m "
                      "orchestrator.sweep --help",),
    "ReportInputError": ("no MLflow experiment 'smoke' in sqlite:///mlflow.db; run the sweep first",),
}


def all_modules() -> list[ModuleType]:
    """Every module of the packages (an import error is a failure here too, not a skip)."""
    modules = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        modules.append(package)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}.", onerror=pytest.fail):
            if not info.name.endswith(".__main__"):
                modules.append(importlib.import_module(info.name))
    return modules


def subclasses(cls: type) -> list[type]:
    found = []
    for subclass in cls.__subclasses__():
        found += [subclass, *subclasses(subclass)]
    return found


def repository_exception_classes() -> list[type[BaseException]]:
    all_modules()
    ours = {cls for cls in subclasses(BaseException) if cls.__module__.split(".")[0] in PACKAGES}
    return sorted(ours, key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


EXCEPTION_CLASSES = repository_exception_classes()


def test_the_walk_finds_the_known_exception_classes_and_each_name_once() -> None:
    names = [cls.__qualname__ for cls in EXCEPTION_CLASSES]
    assert len(names) == len(set(names)), names
    assert {"ConfigError", "DatasetNotFoundError", "MissingWeightsError"} <= set(names)
    assert set(CONSTRUCTOR_ARGUMENTS) <= set(names), "a row for a class that no longer exists"


@pytest.mark.parametrize("pickler", [pickle, ray.cloudpickle], ids=["pickle", "cloudpickle"])
@pytest.mark.parametrize("cls", EXCEPTION_CLASSES, ids=lambda cls: cls.__qualname__)
def test_exception_round_trips_with_type_message_and_attributes(cls: type[BaseException],
                                                                 pickler: ModuleType) -> None:
    if cls.__qualname__ not in CONSTRUCTOR_ARGUMENTS:
        pytest.fail(f"{cls.__module__}.{cls.__qualname__} is new: add its constructor arguments to "
                    "CONSTRUCTOR_ARGUMENTS in this file")
    error = cls(*CONSTRUCTOR_ARGUMENTS[cls.__qualname__])
    message = str(error)
    assert message and "\n" not in message, message
    restored = pickler.loads(pickler.dumps(error))
    assert type(restored) is cls
    assert str(restored) == message
    assert vars(restored) == vars(error)
    assert restored.args == error.args


def test_a_dataset_not_found_error_keeps_every_part_of_its_message_across_pickle() -> None:
    from trainables.data.pool import DatasetNotFoundError

    error = DatasetNotFoundError("cifar10", Path("data/cifar10/cifar-10-batches-py"),
                                 "the python batches", "https://www.cs.toronto.edu/~kriz/")
    restored = pickle.loads(pickle.dumps(error))
    assert isinstance(restored, FileNotFoundError)
    assert (restored.dataset, restored.path, restored.layout, restored.source) == (
        "cifar10", "data/cifar10/cifar-10-batches-py", "the python batches", "https://www.cs.toronto.edu/~kriz/")
    for part in ("cifar10", "cifar-10-batches-py", "the python batches", "toronto"):
        assert part in str(restored)
