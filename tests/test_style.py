"""The code is ruff clean (the rules in pyproject.toml), and nothing in it unpickles a weights file."""

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_reports_nothing() -> None:
    ruff = shutil.which("ruff")
    assert ruff, "ruff is in the test extra: pip install -e '.[test]'"
    completed = subprocess.run([ruff, "check", "orchestrator", "trainables", "search_spaces", "tests"],
                               cwd=ROOT, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout


def test_no_file_asks_torch_to_unpickle() -> None:
    """torch.load runs any code a pickle holds unless weights_only is True (its default since
    torch 2.6); no file in the repository may turn that off."""
    forbidden = "weights_only=" + "False"  # spelled in two parts so that this file passes itself
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    offenders = [name for name in tracked if (ROOT / name).is_file()
                 and forbidden in (ROOT / name).read_text(errors="ignore")]
    assert offenders == []
