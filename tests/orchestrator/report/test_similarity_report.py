"""The transfusion report on per-block similarity: the by-depth figure and the seed's depth claim,
from a real SQLite MLflow store laid out as orchestrator.tracking writes it, with designed values."""

import contextlib
import io
import time
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from orchestrator.report.cli import main
from orchestrator.tracking import (
    TAG_ROLE,
    TAG_STATUS,
    TAG_SWEEP,
    SweepTracker,
    flatten,
    log_params,
)
from search_spaces import SWEEPS
from tests.orchestrator.report.test_figures_and_links import linked_figures
from trainables import metrics
from trainables.config import TrialConfig

SWEEP = SWEEPS["transfusion"]
FIXED = {**SWEEP.params, **SWEEP.smoke_params, "backbone": "cbr_nano", "dataset": "shapes"}
BLOCKS = ("block1", "block2", "block3", "block4")
CONTRAST_STD = 0.01


def similarities(init: str, direction: float) -> dict[str, float]:
    """Per-block values falling with depth (direction +1) or rising (-1), as a trial reports them."""
    base = 0.9 if init == "random" else 0.95
    per_block = [base - direction * 0.15 * depth for depth in range(4)]
    flat = {}
    for measure in metrics.SIMILARITY_MEASURES:
        for block, value in zip(BLOCKS, per_block, strict=True):
            flat[metrics.similarity_metric(metrics.SIMILARITY_FINETUNING, measure, block)] = value
            flat[metrics.similarity_metric(metrics.SIMILARITY_RANDOM_BASELINE, measure, block)] = 0.3
        contrast = metrics.similarity_metric(metrics.SIMILARITY_FINETUNING, measure,
                                             metrics.SIMILARITY_DEPTH_CONTRAST)
        flat[contrast] = (sum(per_block[:2]) - sum(per_block[2:])) / 2
        flat[contrast + metrics.STD_SUFFIX] = CONTRAST_STD
    return flat


def write_sweep(tracking_uri: str, direction: float) -> None:
    inits = ["random", "meanvar"]
    tracker = SweepTracker(tracking_uri, SWEEP.name)
    parent = tracker.start_parent(SWEEP.name, {"sweep": SWEEP.name, "axes": "init",
                                               **flatten({"grid": {"init": inits}, "fixed": FIXED})})
    client = tracker.client
    for index, init in enumerate(inits):
        run_id = client.create_run(tracker.experiment_id, tags={
            MLFLOW_PARENT_RUN_ID: parent, MLFLOW_RUN_NAME: f"trial_{index}", TAG_SWEEP: SWEEP.name,
            TAG_ROLE: "trial"}).info.run_id
        log_params(client, run_id, TrialConfig.from_dict({**FIXED, "init": init}).resolved().to_dict())
        now = int(time.time() * 1000)
        final = {metrics.evaluation_metric("finetune", metrics.TEST_ACCURACY): 0.5,
                 **similarities(init, direction)}
        client.log_batch(run_id, metrics=[Metric(name, value, now, 1) for name, value in final.items()])
        client.set_tag(run_id, TAG_STATUS, "finished")
        client.set_terminated(run_id, "FINISHED")
    tracker.finish_parent("FINISHED")


def test_transfusion_report_draws_similarity_by_depth_and_judges_the_depth_claim(tmp_path: Path) -> None:
    # Similarity rising with depth (against the seed), but one trial per init: one seed says nothing
    # about pretraining's variance, so the verdict is "inconclusive (one seed)" however clear.
    direction, verdict = -1.0, "inconclusive (one seed)"
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    write_sweep(tracking_uri, direction)
    out = tmp_path / "report"
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        assert main([SWEEP.name, "--tracking-uri", tracking_uri, "--out", str(out)]) == 0
    figure = out / "similarity_by_depth.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = stdout.getvalue()
    assert "![per-block similarity, coloured by init](similarity_by_depth.png)" in markdown
    # Lower half minus upper half: (2 x 0.15 x 2) / 2 = 0.3 per trial, its spread the propagated
    # bootstrap std averaged over the two inits, 0.01 / sqrt(2).
    claims = [line for line in markdown.splitlines() if line.startswith("- **") and "lower blocks" in line]
    assert len(claims) == 2
    for line in claims:
        assert line.startswith(f"- **{verdict}**")
        assert f"{0.3 * direction:+.4f} ± {CONTRAST_STD / 2 ** 0.5:.4f}" in line
    client = MlflowClient(tracking_uri)
    [parent] = client.search_runs([client.get_experiment_by_name(SWEEP.name).experiment_id],
                                  filter_string=f"tags.{TAG_ROLE} = 'sweep'")
    logged = client.list_artifacts(parent.info.run_id, "report")
    assert "report/similarity_by_depth.png" in {artifact.path for artifact in logged}
    # The logged report.md links it where MLflow's Markdown viewer shows it: the very bytes of the PNG.
    logged_markdown = Path(client.download_artifacts(parent.info.run_id, "report/report.md")).read_text()
    assert linked_figures(client, logged_markdown)["report/similarity_by_depth.png"] == figure.read_bytes()
