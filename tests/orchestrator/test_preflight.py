"""The pre-flight: a table of bad inputs, each refused with one line naming the fix, exit code 2,
before Ray starts and before any MLflow store exists (no file created in the working directory).

Each row runs the sweep's real command line (not --dry-run: the checks a real run makes) in
process, in an empty working directory; a row that got past the pre-flight would reach Ray, and a
tripwire on `connect` fails it there instead of starting a cluster.
"""

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

import orchestrator.sweep
from orchestrator.report.cli import main as report_main
from orchestrator.sweep import main
from orchestrator.tracking import ROLE_SWEEP, TAG_ROLE

SMALL = ["--set", "image_size=16", "--set", "epochs=1"]


def write_images(folder: Path, count: int, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(seed)
    for index in range(count):
        Image.fromarray(generator.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / f"{index}.png")


def one_class(inputs: Path) -> list[str]:
    write_images(inputs / "data" / "only", 10)
    return imagefolder(inputs)


def too_few_of_one_class(inputs: Path) -> list[str]:
    write_images(inputs / "data" / "a", 10)
    write_images(inputs / "data" / "b", 2, seed=1)
    return imagefolder(inputs)


def not_images(inputs: Path) -> list[str]:
    for name in ("a", "b"):
        (inputs / "data" / name).mkdir(parents=True)
        for index in range(6):
            (inputs / "data" / name / f"{index}.png").write_text("not a picture")
    return imagefolder(inputs)


def imagefolder(inputs: Path) -> list[str]:
    return ["--set", "dataset=imagefolder", "--set", f"data_root={inputs / 'data'}"]


def csv_naming(*names: str) -> Callable[[Path], list[str]]:
    def setup(inputs: Path) -> list[str]:
        write_images(inputs / "data" / "images", 10)
        write_images(inputs / "outside", 1)
        rows = [f"{index}.png,{'ab'[index % 2]}" for index in range(10)] if not names else []
        rows += [f"{name},a" for name in names]
        (inputs / "data" / "labels.csv").write_text("image,label\n" + "\n".join(rows) + "\n")
        return ["--set", "dataset=csvfolder", "--set", f"data_root={inputs / 'data'}"]
    return setup


def csv_of_missing_files(inputs: Path) -> list[str]:
    (inputs / "data" / "images").mkdir(parents=True)
    rows = [f"gone_{index}.png,{'ab'[index % 2]}" for index in range(10)]
    (inputs / "data" / "labels.csv").write_text("image,label\n" + "\n".join(rows) + "\n")
    return ["--set", "dataset=csvfolder", "--set", f"data_root={inputs / 'data'}"]


def weights(kind: str) -> Callable[[Path], list[str]]:
    """init=ssl-imagenet with a weights_path that is missing, a folder, a text file or a pickle."""
    def setup(inputs: Path) -> list[str]:
        path = inputs / "weights.pth"
        if kind == "folder":
            path.mkdir()
        elif kind == "text":
            path.write_text("these are not weights\n")
        elif kind == "other network":  # a clean state dict, of an architecture the trial does not use
            torch.save({"fc.weight": torch.zeros(10, 512), "conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
            return ["--set", "init=imagenet", "--set", f"weights_path={path}"]
        elif kind == "pickle":  # unpickling it would write the marker
            torch.save({"state": PlantedMarker(str(inputs / "UNPICKLED"))}, path)
        return ["--set", "init=ssl-imagenet", "--set", f"weights_path={path}"]
    return setup


class PlantedMarker:
    """An object whose unpickling writes a file: proof that no code in a planted file ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def cluster_config(text: str) -> Callable[[Path], list[str]]:
    def setup(inputs: Path) -> list[str]:
        (inputs / "cluster.yaml").write_text(text)
        return ["--cluster-config", str(inputs / "cluster.yaml")]
    return setup


def free_port_uri(inputs: Path) -> list[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return ["--tracking-uri", f"http://127.0.0.1:{port}"]


def storage_file(inputs: Path) -> list[str]:
    (inputs / "taken").write_text("a file")
    return ["--storage-path", str(inputs / "taken")]


def storage_under_file(inputs: Path) -> list[str]:
    (inputs / "taken").write_text("a file")
    return ["--storage-path", str(inputs / "taken" / "results")]


def store_with_parent(inputs: Path) -> list[str]:
    """An MLflow store holding a finished parent run of smoke, and a storage path without Tune state."""
    uri = f"sqlite:///{inputs / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("smoke")
    run = client.create_run(experiment_id, tags={TAG_ROLE: ROLE_SWEEP})
    client.set_terminated(run.info.run_id, "FINISHED")
    (inputs / "results").mkdir()
    return ["--resume", "--tracking-uri", uri, "--storage-path", str(inputs / "results")]


@dataclass(frozen=True)
class BadInput:
    name: str
    arguments: list[str]
    words: list[str]  # each must be in the error line
    setup: Callable[[Path], list[str]] | None = None  # makes files under `inputs`, returns more arguments
    sweep: list[str] = field(default_factory=lambda: ["smoke"])


BAD_INPUTS = [
    BadInput("unknown sweep", [], ["no_such_sweep", "smoke"], sweep=["no_such_sweep"]),
    BadInput("no sweep named", [], ["name a sweep"], sweep=[]),
    BadInput("unknown key", ["--set", "no_such_key=1"], ["no_such_key", "valid keys"]),
    BadInput("NaN learning rate", ["--set", "learning_rate=nan"], ["learning_rate", "finite"]),
    BadInput("duplicate axis value", ["--set", "seed=0,0"], ["repeats 0", "each value once"]),
    BadInput("repeated --set of one key", ["--set", "epochs=1", "--set", "epochs=2"], ["epochs", "twice"]),
    BadInput("image size no GPU holds", ["--set", "image_size=100000"], ["image_size", "<="]),
    BadInput("image size below 16", ["--set", "image_size=8"], ["image_size", ">= 16"]),
    BadInput("no CPU per worker", ["--cpus-per-worker", "0"], ["--cpus-per-worker", "at least 1"]),
    BadInput("negative CPUs per worker", ["--cpus-per-worker", "-3"], ["--cpus-per-worker"]),
    BadInput("CPUs not a number", ["--cpus-per-worker", "two"], ["--cpus-per-worker", "two"]),
    BadInput("no trial at once", ["--max-concurrent", "0"], ["--max-concurrent", ">= 1"]),
    BadInput("negative retries", ["--max-failures", "-1"], ["--max-failures", ">= 0"]),
    BadInput("unknown placeholder in weights_path",
             ["--set", "init=ssl-imagenet", "--set", "weights_path=w/{method_name}.pth"],
             ["{method_name}", "{method}", "{backbone}"]),
    BadInput("weights_path an init ignores", ["--set", "init=random", "--set", "weights_path=w.pth"],
             ["weights_path", "init random", "does not read"]),
    BadInput("ssl-imagenet without a published checkpoint", ["--set", "init=ssl-imagenet"],
             ["ssl-imagenet", "cbr_nano", "weights_path"]),
    BadInput("missing weights file", [], ["does not exist"], setup=weights("missing")),
    BadInput("weights_path a folder", [], ["is not a file"], setup=weights("folder")),
    BadInput("weights_path a text file", [], ["weights_only=True"], setup=weights("text")),
    BadInput("weights_path a pickle", [], ["weights_only=True"], setup=weights("pickle")),
    BadInput("weights_path of another network", [], ["does not fit backbone", "missing keys"],
             setup=weights("other network")),
    BadInput("weights_path over ftp", ["--set", "init=ssl-imagenet", "--set", "weights_path=ftp://host/w.pth"],
             ["ftp://", "https://"]),
    BadInput("MLflow weights without a store", ["--set", "init=ssl-imagenet",
                                                "--set", "weights_path=runs:/0123/backbone"],
             ["no MLflow store", "--tracking-uri"]),
    BadInput("node types a list", [], ["available_node_types", "map"],
             setup=cluster_config("available_node_types:\n  - head\nhead_node_type: head\n")),
    BadInput("max_workers not a number", [], ["max_workers", "whole number"],
             setup=cluster_config("max_workers: many\nhead_node_type: head\navailable_node_types:\n"
                                  "  head: {resources: {CPU: 2}}\n")),
    BadInput("cluster config missing", ["--cluster-config", "no_such_cluster.yaml"],
             ["no_such_cluster.yaml", "cannot read"]),
    BadInput("tracking URI of no store", ["--tracking-uri", "nonsense://host"], ["nonsense://", "sqlite:///"]),
    BadInput("tracking server not answering", [], ["no MLflow server answers"], setup=free_port_uri),
    BadInput("tracking file in no folder", ["--tracking-uri", "sqlite:////no/such/folder/mlflow.db"],
             ["/no/such/folder", "writable"]),
    BadInput("storage path a file", [], ["--storage-path", "is a file"], setup=storage_file),
    BadInput("storage path below a file", [], ["--storage-path", "cannot be written"],
             setup=storage_under_file),
    BadInput("resume without any run", ["--resume"], ["--resume", "no MLflow store", "without --resume"]),
    BadInput("resume without Tune state", [], ["--resume", "no Tune state", "--storage-path"],
             setup=store_with_parent),
    BadInput("missing dataset", ["--set", "dataset=ham10000", "--set", "data_root=EMPTY"],
             ["ham10000", "not found"]),
    BadInput("image folder of one class", SMALL, ["one class", "at least two"], setup=one_class),
    BadInput("too few images of a class", SMALL, ["too few images", "b (2)"], setup=too_few_of_one_class),
    BadInput("folder of non-images", SMALL, ["none of its 12 images could be read"], setup=not_images),
    BadInput("CSV name with ../", SMALL, ["../outside/0.png", "outside"],
             setup=csv_naming("../outside/0.png")),
    BadInput("CSV absolute name", SMALL, ["outside", "no absolute paths"], setup=csv_naming("/etc/hostname")),
    BadInput("CSV naming only missing files", SMALL, ["none of its 10 images could be read"],
             setup=csv_of_missing_files),
]


def listing(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tripwire: a row that passed the pre-flight would join Ray here."""
    def reached_ray(address: str | None) -> None:
        raise AssertionError("the pre-flight let the input through: the sweep reached Ray")
    monkeypatch.setattr(orchestrator.sweep, "connect", reached_ray)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[bad.name for bad in BAD_INPUTS])
def test_a_bad_input_is_one_line_exit_2_and_nothing_written(
        bad: BadInput, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], no_ray: None) -> None:
    workdir, inputs = tmp_path / "work", tmp_path / "inputs"
    workdir.mkdir()
    inputs.mkdir()
    extra = bad.setup(inputs) if bad.setup else []
    before = listing(inputs)
    capsys.readouterr()  # what making the inputs printed (MLflow's store creation)
    monkeypatch.chdir(workdir)

    assert main([*bad.sweep, *bad.arguments, *extra]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    for word in bad.words:
        assert word in lines[0], lines[0]
    assert captured.out == "" or captured.out.endswith("\n")  # a progress line is ended, never glued on
    assert listing(workdir) == set()  # no mlflow.db, no ray_results, no report
    assert listing(inputs) == before  # no dataset cache, no marker of unpickled code


def test_resume_refused_leaves_the_earlier_parent_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            no_ray: None) -> None:
    arguments = store_with_parent(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["smoke", *arguments]) == 2
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [parent] = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert parent.info.status == "FINISHED"


@pytest.mark.parametrize("uri", ["nonsense://host", "sqlite:////no/such/folder/mlflow.db"])
def test_report_with_a_bad_tracking_uri_is_one_line(uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert report_main(["smoke", "--tracking-uri", uri]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and uri.split(":")[0] in lines[0]
    assert listing(tmp_path) == set()
