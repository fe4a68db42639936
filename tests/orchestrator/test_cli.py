"""The command line: listing, dry runs, and one-line errors with exit code 2 for bad input."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.sweep import main
from search_spaces import SWEEPS

ROOT = Path(__file__).resolve().parents[2]


def test_list_shows_every_sweep_with_a_description(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(SWEEPS)
    assert all(len(line.split()) > 1 for line in lines)


def test_unknown_sweep_is_one_line_naming_it_and_the_valid_ones_exit_2() -> None:
    completed = subprocess.run([sys.executable, "-m", "orchestrator.sweep", "no_such_sweep"],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert completed.stdout == ""
    error_lines = completed.stderr.strip().splitlines()
    assert len(error_lines) == 1
    assert "no_such_sweep" in error_lines[0] and "smoke" in error_lines[0]


@pytest.mark.parametrize(
    ("override", "expected_words"),
    [
        ("no_such_key=1", ["no_such_key", "method", "batch_size"]),
        ("method=simclr,no_such_method", ["no_such_method", "simclr", "simsiam"]),
        ("epochs=three", ["three", "epochs", "int"]),
        ("epochs=0", ["epochs", ">= 1"]),
        ("batch_size", ["KEY=VALUE"]),
        ("backbone=vit_giant", ["vit_giant", "cbr_nano"]),
        ("method_params.no_such_option=1", ["no_such_option", "projection_dim"]),
        ("compile=maybe", ["maybe", "compile", "bool"]),
        ("compile_backend=tvm", ["tvm", "compile_backend", "inductor", "aot_eager"]),
    ],
)
def test_bad_override_is_one_line_exit_2_and_starts_nothing(
    override: str, expected_words: list[str], capsys: pytest.CaptureFixture[str], tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["smoke", "--set", override]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    for word in expected_words:
        assert word in lines[0]
    assert list(tmp_path.iterdir()) == []  # no MLflow store, no Ray results


@pytest.mark.parametrize(("method", "override", "expected_words"), [
    ("simclr", "method_params.temperature=-1", ["method_params.temperature", "> 0"]),
    ("barlowtwins", "method_params.standardization=zscore", ["method_params.standardization", "zscore",
                                                             "batchnorm, unbiased"]),
])
def test_a_method_param_its_method_does_not_allow_fails_at_set_exit_2(
        method: str, override: str, expected_words: list[str], capsys: pytest.CaptureFixture[str],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The method's own declaration (its __init__'s annotations) decides, before Ray starts: a value
    that once failed only when a worker built the method."""
    monkeypatch.chdir(tmp_path)
    assert main(["smoke", "--set", f"method={method}", "--set", override]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1, lines
    assert all(word in lines[0] for word in expected_words), lines[0]
    assert list(tmp_path.iterdir()) == []


def test_dry_run_prints_one_row_per_trial_with_resources(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["smoke", "--dry-run", "--set", "seed=0,1", "--max-concurrent", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line[:1].isdigit()]
    assert len(rows) == 2 * len([1 for _ in range(4)])  # smoke's 4 trials x 2 seeds
    assert "up to 1 trial(s) at once" in out
    header = next(line for line in out.splitlines() if line.startswith("trial"))
    for column in ("method", "batch_size", "seed", "workers", "CPUs", "GPUs"):
        assert column in header


def test_set_with_one_value_fixes_a_grid_axis(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["smoke", "--dry-run", "--set", "method=simsiam"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line[:1].isdigit()]
    assert len(rows) == 2  # the two batch sizes


@pytest.mark.parametrize(
    ("override", "expected_words"),
    [
        ("learning_rate=nan", ["learning_rate", "finite", "> 0"]),
        ("learning_rate=inf", ["learning_rate", "finite", "> 0"]),
        ("learning_rate=-1", ["learning_rate", "> 0"]),
        ("momentum=1", ["momentum", "[0, 1)"]),
        ("method_params.temperature=0", ["method_params.temperature", "> 0"]),
    ],
)
def test_a_bad_number_is_one_error_line_exit_2_even_in_a_dry_run(override: str, expected_words: list[str],
                                                                  tmp_path: Path) -> None:
    # Without RAY_ADDRESS a dry run plans on local resources and connects to no Ray.
    environment = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    completed = subprocess.run([sys.executable, "-m", "orchestrator.sweep", "smoke", "--dry-run", "--set",
                                override], capture_output=True, text=True, timeout=120, cwd=ROOT,
                               env=environment)
    assert completed.returncode == 2, completed.stdout
    assert completed.stdout == ""
    error_lines = completed.stderr.strip().splitlines()
    assert len(error_lines) == 1, error_lines
    assert error_lines[0].startswith("error: ")
    for word in expected_words:
        assert word in error_lines[0]


@pytest.mark.parametrize("count", ["0", "-3", "two"])
def test_cpus_per_worker_below_one_is_one_line_exit_2_nothing_written(
        count: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["smoke", "--dry-run", "--cpus-per-worker", count]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--cpus-per-worker" in lines[0] and count in lines[0]  # no usage block
    assert list(tmp_path.iterdir()) == []
