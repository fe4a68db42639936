"""python -m orchestrator.report on a real SQLite MLflow store, laid out as orchestrator.tracking writes it.

The store holds a 2 methods x 2 batch sizes x 3 seeds sweep with designed accuracies, one
collapsed and one failed trial, and a one-seed sweep; the expected numbers are computed here
from the runs (or the design), not by the report's code.
"""

import contextlib
import csv
import io
import math
import statistics
import time
from collections import defaultdict
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

import search_spaces
from orchestrator.report.cli import main
from orchestrator.tracking import (
    TAG_ERROR,
    TAG_ROLE,
    TAG_STATUS,
    TAG_SWEEP,
    TAG_TRIAL_ID,
    SweepTracker,
    flatten,
    log_params,
)
from search_spaces import Claim, Sweep
from tests.orchestrator.report.test_figures_and_links import linked_figures
from trainables import metrics
from trainables.config import TrialConfig
from trainables.methods import METHODS as METHOD_REGISTRY

SWEEP_NAME = "report_test"
ONE_SEED_SWEEP_NAME = "report_test_one_seed"
METHODS = ("simclr", "simsiam")
BATCH_SIZES = (32, 1024)
SEEDS = (0, 1, 2)
EPOCHS = 3
METRIC = metrics.LINEAR_TEST_ACCURACY
METRIC_STD = metrics.evaluation_metric(metrics.LINEAR_PREFIX, metrics.TEST_ACCURACY, std=True)
COLLAPSED_CELL = ("simsiam", 1024, 2)
FAILED_CELL = ("simclr", 32, 2)
FAILED_ERROR = "RuntimeError: CUDA out of memory"
SEED_NOISE = {("simclr", 0): 0.01, ("simclr", 1): -0.01, ("simclr", 2): 0.0,
              ("simsiam", 0): -0.01, ("simsiam", 1): 0.01, ("simsiam", 2): 0.0}
REPEAT_STD = 0.02  # the logged std over the probe's repeats


def accuracy(method: str, batch_size: int, seed: int) -> float:
    """Batch 32 is clearly better (+0.10 +- 0.0005 per seed: with the two complete seeds a t of 400 on
    one degree of freedom, p = 0.0016, which survives Holm over the 9 tests of the sweep); simsiam vs
    simclr is noise around +0.005."""
    small_batch = 0.10 + 0.0005 * seed if batch_size == 32 else 0.0
    return 0.70 + small_batch + (0.005 if method == "simsiam" else 0.0) + SEED_NOISE[(method, seed)]


def batch_claim(sign: float) -> Claim:
    return Claim(text=f"batch 32 {'beats' if sign > 0 else 'loses to'} batch 1024",
                 terms=(({"batch_size": 32}, sign), ({"batch_size": 1024}, -sign)), metric=METRIC)


CLAIMS = (
    batch_claim(+1.0),  # agrees
    batch_claim(-1.0),  # disagrees
    Claim(text="simsiam beats simclr", terms=(({"method": "simsiam"}, 1.0), ({"method": "simclr"}, -1.0)),
          metric=METRIC),  # inconclusive: the seed noise is larger than the effect
    Claim(text="byol beats simclr", terms=(({"method": "byol"}, 1.0), ({"method": "simclr"}, -1.0)),
          metric=METRIC),  # inconclusive: no byol trial
)
FIXED = {"backbone": "cbr_nano", "dataset": "digits", "init": "random", "image_size": 32, "epochs": EPOCHS}


def make_sweep(name: str, grid: dict) -> Sweep:
    return Sweep(name=name, description=f"{name}: a sweep the report tests build", grid=grid, params=FIXED,
                 claims=CLAIMS)


def start_parent(tracking_uri: str, sweep: Sweep) -> tuple[MlflowClient, str, str]:
    """The sweep's parent run, with the params orchestrator.sweep gives it."""
    tracker = SweepTracker(tracking_uri, sweep.name)
    parent = tracker.start_parent(sweep.name, {"sweep": sweep.name, "axes": ",".join(sweep.grid),
                                               **flatten({"grid": sweep.grid, "fixed": sweep.params})})
    tracker.finish_parent("FINISHED")
    return tracker.client, tracker.experiment_id, parent


def log_trial(client: MlflowClient, experiment_id: str, parent_id: str, index: int, config: dict,
              status: str, final: dict[str, float], knn_history: list[float], error: str = "") -> str:
    """One trial child run as MlflowTrialLogger writes it: tags, flat params, step = epoch metrics."""
    name = f"driver_{index:05d}"
    run_id = client.create_run(experiment_id, tags={
        MLFLOW_PARENT_RUN_ID: parent_id, MLFLOW_RUN_NAME: name, TAG_TRIAL_ID: f"t{index:05d}",
        TAG_SWEEP: client.get_experiment(experiment_id).name, TAG_ROLE: "trial"}).info.run_id
    log_params(client, run_id, TrialConfig.from_dict({**FIXED, **config}).resolved().to_dict())
    now = int(time.time() * 1000)
    history = [Metric(metrics.KNN_VAL_ACCURACY, value, now, step) for step, value in enumerate(knn_history)]
    history += [Metric(metrics.PRETRAIN_LOSS, 5.0 - step, now, step) for step in range(1, len(knn_history))]
    history += [Metric(key, value, now, EPOCHS) for key, value in final.items()]
    client.log_batch(run_id, metrics=history)
    client.set_tag(run_id, TAG_STATUS, status)
    if error:
        client.set_tag(run_id, TAG_ERROR, error)
    client.set_terminated(run_id, status="FAILED" if status == "failed" else "FINISHED")
    return run_id


def knn_curve(final: float) -> list[float]:
    return [0.3 + (final - 0.3) * epoch / EPOCHS for epoch in range(EPOCHS + 1)]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The store, with both sweeps, and the parent run ids."""
    root = tmp_path_factory.mktemp("mlflow")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri)
    for name in (SWEEP_NAME, ONE_SEED_SWEEP_NAME):
        client.create_experiment(name, artifact_location=(root / "artifacts" / name).as_uri())

    grid = {"method": list(METHODS), "batch_size": list(BATCH_SIZES), "seed": list(SEEDS)}
    sweep = make_sweep(SWEEP_NAME, grid)
    client, experiment_id, parent = start_parent(tracking_uri, sweep)
    index = 0
    for method in METHODS:
        for batch_size in BATCH_SIZES:
            for seed in SEEDS:
                config = {"method": method, "batch_size": batch_size, "seed": seed}
                value = accuracy(method, batch_size, seed)
                final = {METRIC: value, METRIC_STD: REPEAT_STD, metrics.COLLAPSED: 0.0}
                status, error = "finished", ""
                if (method, batch_size, seed) == COLLAPSED_CELL:
                    status, final = "collapsed", {METRIC: 0.10, METRIC_STD: 0.0, metrics.COLLAPSED: 1.0}
                if (method, batch_size, seed) == FAILED_CELL:
                    status, final, error = "failed", {}, FAILED_ERROR
                log_trial(client, experiment_id, parent, index, config, status, final,
                          knn_curve(value)[: 2 if status == "failed" else None], error)
                index += 1

    one_seed = make_sweep(ONE_SEED_SWEEP_NAME, {"method": list(METHODS), "batch_size": list(BATCH_SIZES)})
    _, one_seed_experiment, one_seed_parent = start_parent(tracking_uri, one_seed)
    for method in METHODS:
        for batch_size in BATCH_SIZES:
            value = accuracy(method, batch_size, 0)
            final = {METRIC: value, METRIC_STD: REPEAT_STD, metrics.COLLAPSED: 0.0}
            log_trial(client, one_seed_experiment, one_seed_parent, index,
                      {"method": method, "batch_size": batch_size}, "finished", final, knn_curve(value))
            index += 1
    later = client.get_run(one_seed_parent).info.start_time + 60_000
    empty_parent = client.create_run(one_seed_experiment, start_time=later, run_name="later",
                                     tags={TAG_SWEEP: ONE_SEED_SWEEP_NAME, TAG_ROLE: "sweep"}).info.run_id
    return {"uri": tracking_uri, "root": root, "sweep": sweep, "one_seed": one_seed, "parent": parent,
            "one_seed_parent": one_seed_parent, "empty_parent": empty_parent}


@pytest.fixture(autouse=True)
def registered_sweeps(store: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(search_spaces.SWEEPS, SWEEP_NAME, store["sweep"])
    monkeypatch.setitem(search_spaces.SWEEPS, ONE_SEED_SWEEP_NAME, store["one_seed"])


def run_report(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def report(store: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(search_spaces.SWEEPS, SWEEP_NAME, store["sweep"])
        code, stdout, stderr = run_report(SWEEP_NAME, "--tracking-uri", store["uri"], "--out", str(out))
    assert code == 0, stderr
    return {"out": out, "stdout": stdout, "pivot": read_csv(out / "pivot.csv"),
            "differences": read_csv(out / "differences.csv")}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def claim_row(rows: list[dict[str, str]], text: str) -> dict[str, str]:
    [row] = [row for row in rows if row["comparison"] == text and row["group"] == "average over groups"]
    return row


def test_writes_the_four_files_and_logs_them_on_the_parent_run(store: dict, report: dict) -> None:
    names = ["convergence.png", "differences.csv", "pivot.csv", "report.md"]
    assert sorted(path.name for path in report["out"].iterdir()) == names
    assert (report["out"] / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["stdout"] == (report["out"] / "report.md").read_text()
    client = MlflowClient(store["uri"])
    logged = client.list_artifacts(store["parent"], "report")
    assert sorted(artifact.path for artifact in logged) == [f"report/{name}" for name in names]
    # On disk the figure is the file beside report.md; the logged report.md links it by the UI's
    # get-artifact address (MLflow's viewer shows no other image), which serves the logged PNG.
    assert "](convergence.png)" in report["stdout"]
    markdown = Path(client.download_artifacts(store["parent"], "report/report.md")).read_text()
    assert linked_figures(client, markdown) == {
        "report/convergence.png": (report["out"] / "convergence.png").read_bytes()}


def test_pivot_is_mean_and_std_over_seeds_of_finished_trials_only(store: dict, report: dict) -> None:
    client = MlflowClient(store["uri"])
    experiment = client.get_experiment_by_name(SWEEP_NAME)
    children = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{store['parent']}'")
    assert len(children) == len(METHODS) * len(BATCH_SIZES) * len(SEEDS)
    values = defaultdict(list)
    for run in children:
        if run.data.tags[TAG_STATUS] == "finished":
            key = (run.data.params["method"], run.data.params["batch_size"])
            values[key].append(run.data.metrics[METRIC])
    rows = {row["method"]: row for row in report["pivot"]}
    assert sorted(rows) == sorted(METHODS)
    for (method, batch_size), cell in values.items():
        row = rows[method]
        assert float(row[f"batch_size={batch_size} mean"]) == pytest.approx(statistics.fmean(cell), abs=6e-5)
        assert float(row[f"batch_size={batch_size} std"]) == pytest.approx(statistics.stdev(cell), abs=6e-5)
        assert int(row[f"batch_size={batch_size} n"]) == len(cell)
    # The collapsed trial (0.10) and the failed one are in no cell.
    assert rows["simsiam"]["batch_size=1024 n"] == "2" and rows["simclr"]["batch_size=32 n"] == "2"
    assert float(rows["simsiam"]["batch_size=1024 mean"]) > 0.6


def test_collapsed_and_failed_trials_are_listed_with_their_error(report: dict) -> None:
    markdown = report["stdout"]
    excluded = markdown.split("## Collapsed, failed and unfinished trials")[1]
    rows = [line for line in excluded.splitlines() if line.startswith("| driver_")]
    assert len(rows) == 2
    assert any("collapsed" in row and "method=simsiam, batch_size=1024" in row for row in rows)
    assert any("failed" in row and "method=simclr, batch_size=32" in row and FAILED_ERROR in row
               for row in rows)


def per_seed_contrast(sign: float, complete_seeds: tuple[int, ...]) -> tuple[float, float]:
    """The batch claim's contrast from the design: mean over seeds of the average over methods."""
    per_seed = [statistics.fmean(sign * (accuracy(m, 32, seed) - accuracy(m, 1024, seed)) for m in METHODS)
                for seed in complete_seeds]
    return statistics.fmean(per_seed), statistics.stdev(per_seed) / math.sqrt(len(per_seed))


def test_claim_verdicts_follow_the_rule_over_seeds(report: dict) -> None:
    rows = report["differences"]
    complete = (0, 1)  # seed 2 has a failed and a collapsed cell: left out of the per-seed contrast
    for claim, expected in zip(CLAIMS[:2], ("agrees", "disagrees"), strict=True):
        row = claim_row(rows, claim.text)
        value, spread = per_seed_contrast(1.0 if expected == "agrees" else -1.0, complete)
        assert float(row["contrast"]) == pytest.approx(value, abs=6e-5)
        assert float(row["spread"]) == pytest.approx(spread, abs=6e-5)
        assert (row["verdict"], row["seeds"]) == (expected, "2")
        assert "2" in row["note"]  # the seed left out is said
    assert claim_row(rows, "simsiam beats simclr")["verdict"] == "inconclusive"
    missing = claim_row(rows, "byol beats simclr")
    assert missing["verdict"] == "inconclusive" and "method=byol" in missing["missing"]
    lines = [line for line in report["stdout"].splitlines() if line.startswith("- **")]
    assert len(lines) == len(CLAIMS)
    # t = 401 on one degree of freedom: p = 0.00159, x 9 tests (Holm's smallest) = 0.0143.
    assert lines[0].startswith("- **agrees (adjusted p = 0.0143)**")
    assert lines[1].startswith("- **disagrees (adjusted p = 0.0143)**")
    assert lines[2].startswith("- **inconclusive (the 95% interval over seeds includes 0 after Holm")
    assert "95% CI [" in lines[0] and "adjusted p = " in lines[0]
    assert "method=byol" in lines[3]


def test_ablated_axis_difference_per_method(report: dict) -> None:
    rows = [row for row in report["differences"] if row["comparison"] == "batch_size 32 minus 1024"]
    by_group = {row["group"]: row for row in rows}
    for method in METHODS:
        seeds = [s for s in SEEDS if (method, 32, s) != FAILED_CELL and (method, 1024, s) != COLLAPSED_CELL]
        expected = statistics.fmean(accuracy(method, 32, s) - accuracy(method, 1024, s) for s in seeds)
        assert float(by_group[f"method={method}"]["contrast"]) == pytest.approx(expected, abs=6e-5)
    # The last axis' difference claims nothing: no verdict word on its average row.
    assert by_group["average over groups"]["verdict"] == ""


def test_one_seed_shows_the_logged_repeat_std_and_judges_nothing(store: dict, tmp_path: Path) -> None:
    code, stdout, stderr = run_report(ONE_SEED_SWEEP_NAME, "--tracking-uri", store["uri"],
                                      "--out", str(tmp_path), "--run-id", store["one_seed_parent"])
    assert code == 0, stderr
    pivot = {row["method"]: row for row in read_csv(tmp_path / "pivot.csv")}
    assert float(pivot["simclr"]["batch_size=32 mean"]) == pytest.approx(accuracy("simclr", 32, 0), abs=6e-5)
    assert float(pivot["simclr"]["batch_size=32 std"]) == pytest.approx(REPEAT_STD)
    rows = read_csv(tmp_path / "differences.csv")
    # Four cells, weights +-1/2 (averaged over two methods): sqrt(4 x 0.25 x std^2) = std.
    batch = claim_row(rows, CLAIMS[0].text)
    expected = statistics.fmean(accuracy(m, 32, 0) - accuracy(m, 1024, 0) for m in METHODS)
    assert float(batch["contrast"]) == pytest.approx(expected, abs=6e-5)
    assert float(batch["spread"]) == pytest.approx(REPEAT_STD, abs=6e-5)
    # One seed says nothing about pretraining's variance: no verdict, however clear the contrast.
    for claim in CLAIMS:
        row = claim_row(rows, claim.text)
        assert row["verdict"] == "inconclusive" and row["adjusted_p"] == "" and row["ci_low"] == ""
    assert claim_row(rows, CLAIMS[0].text)["reason"] == "one seed"
    assert "- **inconclusive (one seed)**" in stdout


def test_default_parent_is_the_latest(store: dict, tmp_path: Path) -> None:
    code, stdout, stderr = run_report(ONE_SEED_SWEEP_NAME, "--tracking-uri", store["uri"],
                                      "--out", str(tmp_path))
    assert (code, stdout) == (2, "")
    assert store["empty_parent"] in stderr and "no trial runs" in stderr and len(stderr.splitlines()) == 1


def one_error_line(code: int, stdout: str, stderr: str) -> str:
    assert (code, stdout) == (2, "")
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_unknown_sweep_is_one_line_naming_the_valid_ones(store: dict) -> None:
    line = one_error_line(*run_report("no_such_sweep", "--tracking-uri", store["uri"]))
    assert "no_such_sweep" in line and "smoke" in line and SWEEP_NAME in line


def test_sweep_without_runs_says_which_command_creates_them(store: dict, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(search_spaces.SWEEPS, "never_run", make_sweep("never_run", {"method": list(METHODS)}))
    line = one_error_line(*run_report("never_run", "--tracking-uri", store["uri"]))
    assert "no MLflow experiment 'never_run'" in line and "python -m orchestrator.sweep never_run" in line

    MlflowClient(store["uri"]).create_experiment("never_run",
                                                 artifact_location=(tmp_path / "artifacts").as_uri())
    line = one_error_line(*run_report("never_run", "--tracking-uri", store["uri"]))
    assert "no parent run" in line and "python -m orchestrator.sweep never_run" in line

    missing_store = tmp_path / "absent" / "mlflow.db"
    line = one_error_line(*run_report("never_run", "--tracking-uri", f"sqlite:///{missing_store}"))
    assert "no MLflow store" in line and not missing_store.parent.exists()


def test_a_collapse_claim_counts_the_collapsed_trials_it_is_about() -> None:
    from orchestrator.report.runs import TrialRun
    from orchestrator.report.tables import evaluate_claim
    from search_spaces import Claim

    def trial(norm: str, status: str, collapse_std: float, seed: int) -> TrialRun:
        return TrialRun(run_id=f"{norm}{seed}", name=f"{norm}_{seed}", status=status,
                        params={"norm": norm, "seed": str(seed)},
                        metrics={metrics.PRETRAIN_COLLAPSE_STD: collapse_std,
                                 metrics.COLLAPSED: float(status == "collapsed")})

    trials = [trial("groupnorm", "collapsed", 0.001 + 0.0001 * seed, seed) for seed in range(3)]
    trials += [trial("batchnorm", "finished", 0.040 + 0.001 * seed, seed) for seed in range(3)]
    terms = (({"norm": "batchnorm"}, 1.0), ({"norm": "groupnorm"}, -1.0))
    claim = Claim("with GroupNorm SimSiam collapses", terms, metrics.PRETRAIN_COLLAPSE_STD)
    result = evaluate_claim(trials, claim, ["norm"], {"norm": ["groupnorm", "batchnorm"],
                                                      "seed": ["0", "1", "2"]}, over_seeds=True)
    assert result.overall.missing == ()
    assert result.overall.value == pytest.approx(0.039 + 0.0009, abs=1e-9)
    assert result.verdict.word == "agrees"


def test_mlflow_params_show_the_optimizer_and_rates_a_trial_really_used() -> None:
    params = TrialConfig.from_dict({"method": "simclr"}).resolved().to_dict()
    assert (params["optimizer"], params["learning_rate"], params["weight_decay"]) == (
        "lars", METHOD_REGISTRY["simclr"].base_learning_rate, METHOD_REGISTRY["simclr"].weight_decay)
    explicit = TrialConfig.from_dict({"method": "simclr", "optimizer": "sgd",
                                                      "learning_rate": 0.1}).resolved().to_dict()
    assert (explicit["optimizer"], explicit["learning_rate"]) == ("sgd", 0.1)


def test_the_parent_run_carries_each_claims_contrast_and_verdict(store: dict, report: dict) -> None:
    parent = MlflowClient(store["uri"]).get_run(store["parent"])
    for number, (claim, word, sign) in enumerate(zip(CLAIMS[:2], ("agrees", "disagrees"), (1.0, -1.0),
                                                     strict=True), start=1):
        value, spread = per_seed_contrast(sign, (0, 1))
        assert parent.data.metrics[f"claim{number}/contrast"] == pytest.approx(value, abs=1e-9)
        assert parent.data.metrics[f"claim{number}/spread"] == pytest.approx(spread, abs=1e-9)
        assert parent.data.metrics[f"claim{number}/verdict"] == sign
        low = parent.data.metrics[f"claim{number}/ci_low"]
        high = parent.data.metrics[f"claim{number}/ci_high"]
        assert low < value < high and (low > 0 if sign > 0 else high < 0)
        # Holm over 9 tests: the adjusted p is at most 9 times, at least the raw p-value.
        raw = parent.data.metrics[f"claim{number}/p_value"]
        adjusted = parent.data.metrics[f"claim{number}/adjusted_p"]
        assert raw <= adjusted <= 9 * raw < 0.05
        assert (parent.data.tags[f"claim{number}.verdict"], parent.data.tags[f"claim{number}.text"]) == (
            word, claim.text)
    # A claim with a missing cell has no contrast to log, only its verdict.
    assert "claim4/contrast" not in parent.data.metrics
    assert parent.data.tags["claim4.verdict"] == "inconclusive"
    assert parent.data.metrics["claim4/verdict"] == 0.0
    # The description names the best trial as a link to its run page in the model-training view,
    # the whole address (MLflow's Markdown drops relative links); a SQLite store's UI is `mlflow ui`'s.
    best = parent.data.tags["best_run_id"]
    link = (f"(http://127.0.0.1:5000/#/experiments/{parent.info.experiment_id}/runs/{best}"
            "?workflowType=machine_learning)")
    assert f"Best trial: [{parent.data.tags['best_trial']}]{link}" in parent.data.tags["mlflow.note.content"]
