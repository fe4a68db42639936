"""The MLflow trial logger on a real SQLite store: each epoch once, recovered runs clean, unfinished
runs closed. Trials are small stand-ins with the attributes the logger reads from Tune's Trial."""

import dataclasses
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from orchestrator.cluster import GPU_MEMORY_MIB_BY_INSTANCE_FAMILY, MIB
from orchestrator.grid import running_config
from orchestrator.resources import NodeType, plan_resources
from orchestrator.run_page import CONFIG_ARTIFACT
from orchestrator.tracking import TAG_ERROR, TAG_STATUS, SweepTracker
from orchestrator.tune_driver import build_trainer
from trainables import metrics
from trainables.backbones import build_backbone
from trainables.config import TrialConfig
from trainables.methods import METHODS, RunShape, build_method, method_parameters
from trainables.methods.swav import fitted_queue_length
from trainables.training import build_training_state


@dataclass
class StandInTrial:
    trial_id: str
    config: dict = field(default_factory=lambda: {"method": "simclr", "epochs": 3})
    error_file: str | None = None
    last_result: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return f"trial_{self.trial_id}"


def epoch_result(epoch: int) -> dict:
    return {metrics.EPOCH: epoch, metrics.PRETRAIN_LOSS: 1.0 / epoch, metrics.KNN_VAL_ACCURACY: 0.5}


def steps(client: MlflowClient, run_id: str, name: str = metrics.PRETRAIN_LOSS) -> list[int]:
    return sorted(point.step for point in client.get_metric_history(run_id, name))


def test_a_failed_trial_resumed_by_a_new_driver_logs_each_epoch_once_and_ends_clean(tmp_path: Path) -> None:
    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "smoke")
    tracker.start_parent("smoke", {"sweep": "smoke"})
    trial = StandInTrial("abc_00000", error_file=str(tmp_path / "error.txt"))
    (tmp_path / "error.txt").write_text("Traceback ...\nRuntimeError: the node went away\n")

    logger = tracker.trial_logger({})
    logger.on_trial_start(0, [], trial)
    for epoch in (1, 2):
        logger.on_trial_result(0, [], trial, epoch_result(epoch))
    logger.on_trial_error(0, [], trial)
    run_id = logger.run_id(trial)
    assert tracker.client.get_run(run_id).data.tags[TAG_ERROR] == "RuntimeError: the node went away"

    # A new driver (--resume): Tune restores the pickled logger; the trial re-reports epoch 2
    # (its checkpoint's epoch), then goes on.
    restored = pickle.loads(pickle.dumps(logger))
    restored.on_trial_start(0, [], trial)
    for epoch in (2, 3):
        restored.on_trial_result(0, [], trial, epoch_result(epoch))
    trial.last_result = {metrics.LINEAR_TEST_ACCURACY: 0.9}
    restored.on_trial_complete(0, [], trial)

    run = tracker.client.get_run(run_id)
    assert restored.run_id(trial) == run_id  # the same run, not a duplicate
    assert steps(tracker.client, run_id) == [1, 2, 3]
    assert steps(tracker.client, run_id, metrics.KNN_VAL_ACCURACY) == [1, 2, 3]
    assert run.info.status == "FINISHED" and run.data.tags[TAG_STATUS] == "finished"
    assert TAG_ERROR not in run.data.tags


def test_closing_an_interrupted_sweep_kills_only_its_running_trials(tmp_path: Path) -> None:
    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "smoke")
    tracker.start_parent("smoke", {"sweep": "smoke"})
    logger = tracker.trial_logger({})
    running, finished = StandInTrial("abc_00000"), StandInTrial("abc_00001")
    for trial in (running, finished):
        logger.on_trial_start(0, [], trial)
    finished.last_result = {metrics.LINEAR_TEST_ACCURACY: 0.9}
    logger.on_trial_complete(0, [], finished)

    assert tracker.close_unfinished_trials() == 1
    tracker.finish_parent("KILLED")
    killed = tracker.client.get_run(logger.run_id(running))
    assert killed.info.status == "KILLED" and killed.data.tags[TAG_STATUS] == "interrupted"
    assert tracker.client.get_run(logger.run_id(finished)).info.status == "FINISHED"
    assert tracker.client.get_run(tracker.parent_run_id).info.status == "KILLED"


def test_logged_method_params_are_those_the_method_trained_with() -> None:
    """Run-dependent defaults (SimCLR's temperature by image size, SwAV's fitted queue) reach MLflow
    as the loop's build_method sets them, not as the class signature's defaults."""
    for method, image_size, batch_size in [("simclr", 32, 64), ("simclr", 224, 64), ("swav", 32, 64)]:
        config = TrialConfig(method=method, image_size=image_size, batch_size=batch_size, epochs=20)
        logged = config.resolved().to_dict()["method_params"]
        backbone, feature_dim = build_backbone("cbr_nano")
        built = build_method(method, backbone, feature_dim, {}, RunShape(batch_size, 20, image_size))
        for name in ("temperature", "queue_start_epoch"):
            if name in logged:
                assert logged[name] == getattr(built, name), (method, image_size, name)
        if method == "swav":
            assert logged["queue_length"] == built.queue.shape[1] > 0  # one worker: the whole queue
    for image_size, temperature in ((32, 0.5), (224, 0.1)):
        logged = TrialConfig(method="simclr", image_size=image_size).resolved().to_dict()["method_params"]
        assert logged["temperature"] == temperature


def test_the_driver_its_workers_and_mlflow_hold_one_resolved_config(tmp_path: Path) -> None:
    """A trial whose Tune config leaves the GPUs, the sweep's per-method params, the run-dependent
    defaults and the paper optimizer open: the driver resolves it once (grid.running_config), its
    TorchTrainer hands exactly that to the workers, the workers build SwAV with exactly those
    values, and the MLflow logger records exactly that config."""
    a10g = GPU_MEMORY_MIB_BY_INSTANCE_FAMILY["g5"] * MIB
    plan = plan_resources([NodeType("gpu", cpus=8, gpus=1, max_count=16, gpu_memory_bytes=a10g)], 1, 1)
    per_method = {"swav": {"num_prototypes": 1000}}  # the sweep's, merged under the trial's own
    tune_config = {"method": "swav", "backbone": "resnet50", "image_size": 224, "batch_size": 1024,
                   "epochs": 200, "method_params": {"projection_dim": 64}}

    driver = running_config(tune_config, per_method, plan)
    trainer = build_trainer(driver, "trial_abc_00000", str(tmp_path / "ray"), plan)
    worker = TrialConfig.from_dict(trainer.train_loop_config)  # the loop's first line
    assert worker == driver and worker.resolved() == worker  # resolving again changes nothing

    # What the Tune config left open is decided, each by its owner.
    assert worker.num_workers > 1  # spread over A10Gs (orchestrator.memory)
    swav = METHODS["swav"]
    assert (worker.optimizer, worker.learning_rate, worker.weight_decay) == (
        swav.optimizer, swav.base_learning_rate, swav.weight_decay)
    queue_length = fitted_queue_length(1024, 1000)
    assert queue_length != method_parameters("swav")["queue_length"]  # the run's own, not the signature's
    assert worker.method_params == {**method_parameters("swav"), "num_prototypes": 1000, "projection_dim": 64,
                                    "queue_length": queue_length,
                                    "queue_start_epoch": worker.method_params["queue_start_epoch"]}
    state = build_training_state(dataclasses.replace(worker, num_workers=1), 1, torch.device("cpu"),
                                 announce=False)
    assert state.method.queue.shape[1] == queue_length and state.method.prototypes.out_features == 1000
    assert state.method.queue_start_epoch == worker.method_params["queue_start_epoch"]

    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "smoke")
    tracker.start_parent("smoke", {"sweep": "smoke"})
    logger = tracker.trial_logger(per_method, plan)
    trial = StandInTrial("abc_00000", config=tune_config)
    logger.on_trial_start(0, [], trial)
    run_id = logger.run_id(trial)
    assert logger.trial_config(trial) == worker
    path = tracker.client.download_artifacts(run_id, CONFIG_ARTIFACT, str(tmp_path))
    assert json.loads(Path(path).read_text()) == json.loads(json.dumps(worker.to_dict(), default=str))
    params = tracker.client.get_run(run_id).data.params
    assert params["method_params.queue_length"] == str(queue_length)
    assert params["num_workers"] == str(worker.num_workers) and params["optimizer"] == "lars"


def test_fine_tuning_curves_in_the_final_result_become_metric_histories(tmp_path: Path) -> None:
    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "smoke")
    tracker.start_parent("smoke", {"sweep": "smoke"})
    trial = StandInTrial("abc_00000", config={"method": "none", "eval": "finetune"})
    logger = tracker.trial_logger({})
    logger.on_trial_start(0, [], trial)
    val_loss = [0.9, 0.5, 0.6, 0.8]
    final = {metrics.EPOCH: 0, metrics.FINETUNE_TRAIN_LOSS: [1.0, 0.6, 0.3, 0.1],
             metrics.FINETUNE_VAL_LOSS: val_loss,
             metrics.FINETUNE_VAL_BALANCED_ACCURACY: [0.5, 0.7, 0.8, 0.75],
             metrics.FINETUNE_VAL_LOSS_RISE: 0.3,
             metrics.evaluation_metric("finetune", metrics.TEST_ACCURACY): 0.8}
    logger.on_trial_result(0, [], trial, final)
    logger.on_trial_result(0, [], trial, final)  # reported again (a restore): logged once
    run_id = logger.run_id(trial)
    history = tracker.client.get_metric_history(run_id, metrics.FINETUNE_VAL_LOSS)
    assert sorted((point.step, point.value) for point in history) == list(enumerate(val_loss, start=1))
    for name in metrics.FINETUNE_CURVES:
        assert steps(tracker.client, run_id, name) == [1, 2, 3, 4]
    assert tracker.client.get_run(run_id).data.metrics[metrics.FINETUNE_VAL_LOSS_RISE] == 0.3


def test_a_failed_trials_error_line_is_read_through_the_storage_file_system(tmp_path: Path,
                                                                             monkeypatch) -> None:
    """With --storage-path s3://... a Result's path is a key in the bucket, not a local path: the
    error file is read through the Result's file system (here a pyarrow file system rooted
    elsewhere, so the same path read locally finds nothing)."""
    import pyarrow.fs

    from orchestrator.tracking import error_line

    (tmp_path / "bucket" / "sweep" / "trial_1").mkdir(parents=True)
    (tmp_path / "bucket" / "sweep" / "trial_1" / "error.txt").write_text(
        "Traceback (most recent call last):\n  ...\nValueError: weights_path x.pth is missing\n\n")
    storage = pyarrow.fs.SubTreeFileSystem(str(tmp_path / "bucket"), pyarrow.fs.LocalFileSystem())
    monkeypatch.chdir(tmp_path)
    assert not Path("sweep/trial_1/error.txt").exists()
    assert error_line("sweep/trial_1/error.txt", storage) == "ValueError: weights_path x.pth is missing"
    assert error_line("sweep/trial_1/error.txt") == "unknown error"  # as the table used to read it
    assert error_line("sweep/no_such_trial/error.txt", storage) == "unknown error"
    assert error_line(tmp_path / "bucket" / "sweep" / "trial_1" / "error.txt").startswith("ValueError")
