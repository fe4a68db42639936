"""A trial restarted with the same run name continues from its last checkpoint, not from zero."""

import json
from pathlib import Path

from orchestrator.resources import ResourcePlan
from orchestrator.tune_driver import build_trainer
from tests.orchestrator.conftest import checkpointed_epochs
from trainables import metrics
from trainables.config import TrialConfig


def epoch_reports(path: Path) -> list[dict]:
    reports = [json.loads(line) for line in path.read_text().splitlines()]
    return [report for report in reports if metrics.PRETRAIN_LOSS in report]


def trained_epochs(path: Path) -> list[int]:
    return [report[metrics.EPOCH] for report in epoch_reports(path)]


def run(config: dict, run_name: str, storage: Path, log: Path, record_reports: type):
    plan = ResourcePlan(num_workers=1, cpus_per_worker=1, gpus_per_worker=0, max_concurrent_trials=1)
    trainer = build_trainer(TrialConfig.from_dict(config), run_name, str(storage), plan,
                            callbacks=[record_reports(log)])
    return trainer.fit()


def test_restarted_trial_continues_from_the_saved_epoch(local_ray, record_reports, tmp_path: Path) -> None:
    common = {"method": "simsiam", "image_size": 16, "batch_size": 128, "probe_epochs": 5,
              "method_params": {"projection_dim": 128, "predictor_hidden_dim": 32}}

    first = run({**common, "epochs": 2}, "trial_x", tmp_path, tmp_path / "first.jsonl", record_reports)
    assert trained_epochs(tmp_path / "first.jsonl") == [1, 2]
    # checkpoint_every's default: the first epoch (timed) and the last, here both.
    assert checkpointed_epochs(tmp_path / "first.jsonl") == [1, 2, 2]  # then the final one

    # The same run name and storage: Ray Train hands the loop its latest checkpoint.
    second = run({**common, "epochs": 4}, "trial_x", tmp_path, tmp_path / "second.jsonl", record_reports)
    # The restored epoch is reported again first, unchanged (its report may never have reached
    # Tune when a driver or worker died); then training goes on from epoch 3.
    assert trained_epochs(tmp_path / "second.jsonl") == [2, 3, 4]
    assert epoch_reports(tmp_path / "second.jsonl")[0] == epoch_reports(tmp_path / "first.jsonl")[-1]
    assert second.checkpoint.path != first.checkpoint.path
    final_report = json.loads((tmp_path / "second.jsonl").read_text().splitlines()[-1])
    assert 0.1 < final_report[metrics.LINEAR_TEST_ACCURACY] <= 1.0
    # The first epoch this run trained (3) and the last (4) are checkpointed, then the final one.
    assert checkpointed_epochs(tmp_path / "second.jsonl") == [3, 4, 4]

    # A different run name starts from scratch; an explicit checkpoint_every checkpoints its
    # multiples and the last epoch (then the final checkpoint, after evaluation).
    run({**common, "epochs": 3, "checkpoint_every": 2}, "trial_y", tmp_path, tmp_path / "fresh.jsonl",
        record_reports)
    assert trained_epochs(tmp_path / "fresh.jsonl") == [1, 2, 3]
    assert checkpointed_epochs(tmp_path / "fresh.jsonl") == [2, 3, 3]
