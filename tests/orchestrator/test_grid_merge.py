"""Cells no axis can change run once: `none` (no pretraining) across pretraining-only axes."""

import contextlib
import io
import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import search_spaces
from orchestrator.grid import MERGED_TRIALS_FILE, apply_overrides, run_key
from orchestrator.report.cli import main as report_main
from orchestrator.sweep import main as sweep_main
from search_spaces import Claim, Sweep
from tests.orchestrator.report.test_report import FIXED, METRIC, METRIC_STD, log_trial, read_csv, start_parent
from trainables import metrics

GRID = {"method": ["none", "simclr"], "batch_size": [32, 1024], "learning_rate": [0.1, 0.2],
        "seed": [0, 1, 2]}
BATCH_CLAIM = Claim("batch 32 beats batch 1024", (({"batch_size": 32}, 1.0), ({"batch_size": 1024}, -1.0)),
                    METRIC)
SWEEP = Sweep(name="merge_test", description="merge_test: none crossed with pretraining axes", grid=GRID,
              params=FIXED, claims=(BATCH_CLAIM,))


def test_none_runs_once_across_pretraining_only_axes_and_serves_every_cell() -> None:
    grid = apply_overrides(SWEEP, [])
    merged = grid.merged_trials()
    cells = grid.cells()
    assert len(cells) == 2 * 2 * 2 * 3
    # simclr: every cell its own trial (12); none: one trial per seed serves its 4 cells.
    assert len(merged) == 12 + 3 and grid.num_trials == 15 and grid.num_merged == 24 - 15
    served = [cell for entry in merged for cell in entry.cells]
    assert sorted(map(str, served)) == sorted(map(str, cells))  # every cell served exactly once
    for entry in merged:
        methods = {cell["method"] for cell in entry.cells}
        seeds = {cell["seed"] for cell in entry.cells}
        assert len(methods) == 1 and len(seeds) == 1  # a merge never crosses what changes the trial
        assert len(entry.cells) == (4 if methods == {"none"} else 1)
    # Fine-tuning reads batch_size: there, none's batch sizes stay apart.
    finetune = apply_overrides(SWEEP, ["eval=finetune"])
    assert finetune.num_trials == 12 + 2 * 3


def test_the_run_key_ignores_only_what_pretraining_reads() -> None:
    base = {**FIXED, "method": "none", "seed": 0}
    assert run_key({**base, "epochs": 1}) == run_key({**base, "epochs": 50, "optimizer": "sgd"})
    assert run_key({**base, "seed": 1}) != run_key(base)
    assert run_key({**base, "label_fraction": 0.1}) != run_key(base)
    pretraining = {**FIXED, "method": "simclr", "seed": 0}
    assert run_key({**pretraining, "epochs": 1}) != run_key({**pretraining, "epochs": 2})


def test_the_dry_run_says_how_many_cells_were_merged(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(search_spaces.SWEEPS, SWEEP.name, SWEEP)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert sweep_main([SWEEP.name, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "sweep merge_test: 15 trial(s)" in out and "merged: 9 of 24 cells" in out
    assert len([line for line in out.splitlines() if line[:1].isdigit()]) == 15


def accuracy(method: str, batch_size: int, seed: int) -> float:
    return 0.6 + 0.01 * seed + (0.1 if method == "simclr" and batch_size == 32 else 0.0)


def test_the_report_gives_every_merged_cell_the_value_of_the_trial_that_ran(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real SQLite store written as the sweep writes it: only the trials that run, and the parent's
    record of the cells they serve."""
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri)
    client.create_experiment(SWEEP.name, artifact_location=(tmp_path / "artifacts").as_uri())
    monkeypatch.setitem(search_spaces.SWEEPS, SWEEP.name, SWEEP)
    grid = apply_overrides(SWEEP, [])
    client, experiment_id, parent = start_parent(tracking_uri, SWEEP)
    client.log_dict(parent, grid.served_cells(), MERGED_TRIALS_FILE)
    for index, entry in enumerate(grid.merged_trials()):
        cell = entry.cells[0]
        value = accuracy(cell["method"], cell["batch_size"], cell["seed"])
        log_trial(client, experiment_id, parent, index, cell, "finished",
                  {METRIC: value, METRIC_STD: 0.01, metrics.COLLAPSED: 0.0}, [0.3, value, value, value])
    out = tmp_path / "report"
    with contextlib.redirect_stdout(io.StringIO()):
        assert report_main([SWEEP.name, "--tracking-uri", tracking_uri, "--out", str(out)]) == 0
    pivot = read_csv(out / "pivot.csv")
    none_rows = [row for row in pivot if row["method"] == "none"]
    assert len(none_rows) == 2  # batch sizes 32 and 1024 (rows: method x batch_size; columns: lr)
    for row in none_rows:
        for column in [key for key in row if key.endswith(" n")]:
            assert row[column] == "3"  # every none cell has its three seeds
        means = [float(row[key]) for key in row if key.endswith(" mean")]
        assert means == pytest.approx([0.61] * len(means), abs=6e-5)
    differences = read_csv(out / "differences.csv")
    groups = {row["group"]: row for row in differences if row["comparison"] == BATCH_CLAIM.text}
    # none's batch sizes are the same trial: a contrast of exactly 0 on every seed.
    assert float(groups["method=none, learning_rate=0.1"]["contrast"]) == 0.0
    assert float(groups["method=simclr, learning_rate=0.1"]["contrast"]) == pytest.approx(0.1, abs=6e-5)
    assert json.loads((tmp_path / "artifacts").joinpath(parent, "artifacts", MERGED_TRIALS_FILE).read_text())
