"""The torch core runs where Ray, MLflow and Optuna are not installed (the lent GPU machine):
one training step and one evaluation, in a process where importing any of them fails."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import sys, importlib.abc

    class Absent(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("ray", "mlflow", "optuna"):
                raise ImportError(f"{name} is not installed here")
            return None

    sys.meta_path.insert(0, Absent())
    import math, tempfile
    from pathlib import Path
    import torch
    from trainables.config import TrialConfig
    from trainables.data import load_dataset
    from trainables.evaluation.protocol import evaluate
    from trainables.optimization import set_learning_rates
    from trainables.training import build_training_state, train_step, training_view_specs

    config = TrialConfig(method="simclr", dataset="shapes", image_size=32, batch_size=16, epochs=1,
                         probe_epochs=5, probe_repeats=1)
    data = load_dataset(config.dataset, config.image_size, config.seed, tempfile.mkdtemp())
    device = torch.device("cpu")
    state = build_training_state(config, 1, device, announce=False)
    views = training_view_specs(state.method, config, data.grayscale)
    set_learning_rates(state.optimizer, 0, 10, 0, 0.1)
    before = [p.detach().clone() for p in state.method.parameters()]
    output = train_step(state, data.train_images[:16], views, torch.Generator().manual_seed(0), 1, 10)
    assert math.isfinite(output.loss.item()) and state.step == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, state.method.parameters()))
    with tempfile.TemporaryDirectory() as directory:
        result = evaluate(state.method.backbone, data, config, device, Path(directory))
        assert (Path(directory) / "confusion_matrix.png").exists()
    assert 0.0 <= result["linear/test_accuracy"] <= 1.0, result
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("ray", "mlflow", "optuna"))
    assert loaded == [], loaded
    print("ok")
""")


def test_a_training_step_and_an_evaluation_run_without_ray_mlflow_or_optuna() -> None:
    completed = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip().endswith("ok")
