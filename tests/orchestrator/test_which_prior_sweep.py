"""which_prior --smoke through a real local Ray on a test-made image folder: two stages, one answer."""

import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient
from PIL import Image

from orchestrator.tracking import TAG_ROLE
from tests.orchestrator.test_screening import imagenet_file

METRIC = "linear/test_balanced_accuracy"


def write_overlapping_classes(root: Path, per_class: int = 40) -> None:
    """Two classes whose brightness overlaps (each image's own level is drawn around its class's):
    probes score well below 1, so priors and seeds differ."""
    generator = np.random.default_rng(3)
    for label, level in (("normal", 120), ("finding", 136)):
        (root / label).mkdir(parents=True)
        for index in range(per_class):
            image_level = generator.normal(level, 14)
            pixels = np.clip(generator.normal(image_level, 30, size=(20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{index}.png")


def test_which_prior_smoke_ends_with_a_recommendation_and_its_interval(tmp_path: Path) -> None:
    write_overlapping_classes(tmp_path / "images")
    imagenet_file(tmp_path / "weights")  # so that imagenet and meanvar are priors this machine has
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    completed = subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", "which_prior", "--smoke",
         "--set", "dataset=imagefolder", "--set", f"data_root={tmp_path / 'images'}",
         "--set", f"weights_dir={tmp_path / 'weights'}", "--set", "seed=0,1", "--set", "label_fraction=1.0",
         "--set", "image_size=16", "--tracking-uri", tracking_uri,
         "--storage-path", str(tmp_path / "ray_results")],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    out = completed.stdout
    assert "prior left out: bit-s" in out and "stage 1 ranking by mean " + METRIC in out
    recommendation = [line for line in out.splitlines() if line.startswith("recommendation: ")]
    assert len(recommendation) == 1 and "With 100% of the labels, " in recommendation[0]
    assert "95% interval" in recommendation[0]

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("which_prior")
    parent = client.search_runs([experiment.experiment_id], "tags.role = 'sweep'")[0]
    trials = client.search_runs([experiment.experiment_id], "tags.role = 'trial'")
    arms: dict[tuple[str, str], dict[str, float]] = {}
    for run in trials:
        arms.setdefault((run.data.params["init"], run.data.params["method"]), {})[
            run.data.params["seed"]] = run.data.metrics[METRIC]
    # Stage 1: all three priors, frozen; stage 2: the best of imagenet/meanvar, plus random, pretrained.
    ranking = parent.data.tags["screening.ranking"]
    def screened(init: str) -> tuple[float, int]:  # the ranking's order breaks ties
        return statistics.fmean(arms[(init, "none")].values()), -ranking.index(init)

    best_screened = max(("imagenet", "meanvar"), key=screened)
    assert set(arms) == {("random", "none"), ("imagenet", "none"), ("meanvar", "none"),
                         (best_screened, "simclr"), ("random", "simclr")}
    assert all(len(seeds) == 2 for seeds in arms.values()) and len(trials) == 10

    tags, values = parent.data.tags, parent.data.metrics
    prior, method = tags["recommendation.prior"], tags["recommendation.method"]
    assert (prior, method) in arms
    mean = values[f"recommendation/{prior}/mean"]
    assert mean == max(statistics.fmean(seeds.values()) for seeds in arms.values())
    assert mean == statistics.fmean(arms[(prior, method)].values())
    assert values[f"recommendation/{prior}/ci_low"] <= mean <= values[f"recommendation/{prior}/ci_high"]
    assert tags["recommendation.labels_1.0.prior"] == prior
    report = (tmp_path / "reports" / "which_prior" / "report.md").read_text()
    assert "## Recommendation" in report and recommendation[0].removeprefix("recommendation: ") in report
    assert parent.data.tags[TAG_ROLE] == "sweep"
