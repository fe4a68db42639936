"""`bash benchmarks/gpu_check.sh --quick`: the GPU check's code paths at toy sizes on the CPU, with
Ray, MLflow and Optuna not importable (as on the GPU machine), writing its one summary file."""

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_quick_gpu_check_runs_without_cluster_packages_and_writes_its_summary(tmp_path: Path) -> None:
    environment = {**os.environ, "OUT": str(tmp_path / "out")}
    environment.pop("PYTHONPATH", None)  # the script finds the repository itself
    finished = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--quick"],
                              cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=180)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "gpu_check_summary.json").read_text())
    assert summary["cluster_packages_blocked"] is True and summary["cluster_packages_loaded"] == []
    assert [row["compiled"] for row in summary["step"]] == [False, True]
    for row in summary["step"]:
        assert row["trial_images_per_second"] > 0 and row["bare_images_per_second"] > 0
        assert 0 < row["trial_vs_bare"] < 10 and 0 <= row["input_wait_fraction"] < 1
    rows = [(row["backbone"], row["batch_size"]) for row in summary["memory"]]
    assert rows == [("cbr_nano", 8), ("cbr_nano", 16)]
    assert summary["memory"][0]["estimate_gib"] < summary["memory"][1]["estimate_gib"]
    assert summary["largest_batch"] == 16 and summary["augmentation_images_per_second"] > 0


def test_the_gpu_check_refuses_an_unknown_option() -> None:
    finished = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--fast"],
                              capture_output=True, text=True, timeout=30)
    assert finished.returncode == 2 and finished.stderr.strip().startswith("usage:")
