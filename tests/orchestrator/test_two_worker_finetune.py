"""A trial on two workers that ends with fine-tuning finishes: rank 0 fine-tunes alone, so its copy
of the backbone must not keep the cross-worker BatchNorm that waits in train mode for rank 1."""

import json
import threading
from pathlib import Path

from orchestrator.resources import ResourcePlan
from orchestrator.tune_driver import build_trainer
from trainables import metrics
from trainables.config import TrialConfig

# A hang shows as this many seconds without a result (the trial itself takes about 30 s).
TRIAL_DEADLINE_SECONDS = 240


def test_a_two_worker_finetune_trial_finishes(local_ray, record_reports, tmp_path: Path) -> None:
    config = TrialConfig.from_dict({
        "method": "simclr", "num_workers": 2, "epochs": 1, "image_size": 16, "batch_size": 64,
        "eval": "finetune", "finetune_epochs": 1, "probe_repeats": 1,
        "method_params": {"projection_dim": 16, "projection_hidden_dim": 16}})
    plan = ResourcePlan(num_workers=2, cpus_per_worker=1, gpus_per_worker=0, max_concurrent_trials=1)
    log = tmp_path / "reports.jsonl"
    trainer = build_trainer(config, "two_worker_finetune", str(tmp_path / "storage"), plan,
                            callbacks=[record_reports(log)])
    outcome: dict = {}
    fitting = threading.Thread(target=lambda: outcome.update(result=trainer.fit()), daemon=True)
    fitting.start()
    fitting.join(TRIAL_DEADLINE_SECONDS)
    assert not fitting.is_alive(), f"the trial did not finish in {TRIAL_DEADLINE_SECONDS} s (hung?)"
    assert outcome["result"].error is None
    final = json.loads(log.read_text().splitlines()[-1])
    assert 0.0 <= final[metrics.evaluation_metric(metrics.FINETUNE_PREFIX, metrics.TEST_ACCURACY)] <= 1.0
    assert len(final[metrics.FINETUNE_TRAIN_LOSS]) == 1
