"""A trial with block_similarity on reports per-block CKA and SVCCA in its final report, through
the real Ray Train loop, and carries the by-depth figure in its final checkpoint."""

import json
from pathlib import Path

from orchestrator.resources import ResourcePlan
from orchestrator.tune_driver import build_trainer
from trainables import metrics
from trainables.config import TrialConfig
from trainables.evaluation.block_similarity import FIGURE_FILE
from trainables.trial_checkpoint import ARTIFACTS_FOLDER


def test_final_report_carries_per_block_similarity(local_ray, record_reports, tmp_path: Path) -> None:
    config = TrialConfig.from_dict({
        "method": "simsiam", "epochs": 1, "image_size": 16, "batch_size": 128, "eval": "finetune",
        "finetune_epochs": 1, "block_similarity": True,
        "method_params": {"projection_dim": 64, "predictor_hidden_dim": 16}})
    plan = ResourcePlan(num_workers=1, cpus_per_worker=1, gpus_per_worker=0, max_concurrent_trials=1)
    log = tmp_path / "reports.jsonl"
    result = build_trainer(config, "similarity", str(tmp_path / "storage"), plan,
                           callbacks=[record_reports(log)]).fit()
    final = json.loads(log.read_text().splitlines()[-1])
    blocks = ("block1", "block2", "block3", "block4")  # cbr_nano: four CBR blocks, no stem
    for comparison in metrics.SIMILARITY_COMPARISONS:
        for measure in metrics.SIMILARITY_MEASURES:
            values = [final[metrics.similarity_metric(comparison, measure, block)] for block in blocks]
            assert all(0.0 <= value <= 1.0 for value in values), (comparison, measure, values)
            assert metrics.similarity_metric(comparison, measure, "stem") not in final
    for measure in metrics.SIMILARITY_MEASURES:
        # One epoch of SimSiam moves the first block little; two random inits share nothing.
        first_block = final[metrics.similarity_metric(metrics.SIMILARITY_PRETRAINING, measure, "block1")]
        baseline = final[metrics.similarity_metric(metrics.SIMILARITY_RANDOM_BASELINE, measure, "block1")]
        assert first_block > baseline
        contrast = metrics.similarity_metric(metrics.SIMILARITY_FINETUNING, measure,
                                             metrics.SIMILARITY_DEPTH_CONTRAST)
        assert final[contrast + metrics.STD_SUFFIX] >= 0.0 and abs(final[contrast]) <= 1.0
    assert final[metrics.SIMILARITY_SECONDS] > 0
    with result.checkpoint.as_directory() as directory:
        assert (Path(directory) / ARTIFACTS_FOLDER / FIGURE_FILE).stat().st_size > 10_000
