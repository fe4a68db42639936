"""How long a trial takes to start, and how long a stopped trial holds its workers.

    python benchmarks/trial_overhead.py [--sweep hpo_simclr] [--repeats 1]

Runs a real sweep (by default `hpo_simclr --smoke`: Optuna + ASHA, so some trials are stopped
early) on a fresh local Ray, one trial at a time, and times each trial from Ray's own records:

- start-up: Tune starts the trial -> its Ray Train workers exist -> its first report (epoch 0,
  the initialization's kNN, which follows the model build), split into those two legs;
- stop-to-free: Tune decides the trial is done (ASHA stop, or its last report) -> the last of its
  Train workers is dead, i.e. its CPUs/GPUs are free for the next trial.

When workers hold and free their CPUs comes from sampling Ray's free resources every 0.2 s
(one trial at a time, so any held CPU is the running trial's); trial events from a Tune callback
in this process. Prints one line per trial and the medians.
"""

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator import sweep, tracking  # noqa: E402


class TimedLogger(tracking.MlflowTrialLogger):
    """The sweep's own MLflow logger, also noting when each trial event reaches the driver."""

    events: dict[str, dict[str, float]] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.events.setdefault(trial.trial_id, {})["start"] = time.time()
        super().on_trial_start(iteration, trials, trial, **info)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.events.setdefault(trial.trial_id, {}).setdefault("first_result", time.time())
        self.events[trial.trial_id]["last_result"] = time.time()
        super().on_trial_result(iteration, trials, trial, result, **info)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.events.setdefault(trial.trial_id, {})["complete"] = time.time()
        self.events[trial.trial_id]["stopped"] = float(not any(
            name in (trial.last_result or {}) for name in tracking.metrics.FINAL))
        super().on_trial_complete(iteration, trials, trial, **info)


class ResourcePoller(threading.Thread):
    """Samples the cluster's free CPUs every 0.2 s once Ray is up: a trial's workers hold CPUs from
    the moment their placement group is reserved until they are gone."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float, float]] = []  # (time, free CPUs, total CPUs)
        self.stop = threading.Event()

    def run(self) -> None:
        import ray

        while not self.stop.is_set():
            try:
                if ray.is_initialized():
                    free = ray.available_resources().get("CPU", 0.0)
                    self.samples.append((time.time(), free, ray.cluster_resources().get("CPU", 0.0)))
            except Exception:  # Ray shutting down under us
                pass
            time.sleep(0.2)

    def first(self, after: float, held: bool) -> float | None:
        """The first sample after `after` where some CPUs are held (held) or all are free (not held)."""
        for moment, free, total in self.samples:
            if moment > after and total > 0 and (free < total) == held:
                return moment
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="hpo_simclr")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    os.environ["RAY_ADDRESS"] = "local"
    folder = Path(tempfile.mkdtemp(prefix="trial_overhead_"))
    tracking.MlflowTrialLogger = TimedLogger  # what SweepTracker.trial_logger builds

    poller = ResourcePoller()
    poller.start()
    argv = [args.sweep, "--smoke", "--max-concurrent", "1", "--tracking-uri", f"sqlite:///{folder}/mlflow.db",
            "--storage-path", str(folder / "ray_results")]
    for item in args.set:
        argv += ["--set", item]
    code = sweep.main(argv)
    print(f"\nsweep exit code {code}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"MLflow store and Ray results in {folder}")
    poller.stop.set()
    starts, firsts, frees = [], [], []
    print(f"{'trial':<10} {'start->workers':>14} {'workers->1st report':>19} {'stopped by ASHA':>15} "
          f"{'stop->free':>10}")
    for trial_id, event in sorted(TimedLogger.events.items(), key=lambda item: item[1]["start"]):
        held = poller.first(event["start"], held=True)
        freed = poller.first(event.get("complete", float("inf")), held=False)
        if held is None or freed is None or "first_result" not in event:
            continue
        start_leg, first_leg = held - event["start"], event["first_result"] - held
        free = freed - event["complete"]
        starts.append(start_leg + first_leg)
        firsts.append(first_leg)
        frees.append(free)
        print(f"{trial_id[-5:]:<10} {start_leg:>13.1f}s {first_leg:>18.1f}s "
              f"{'yes' if event['stopped'] else 'no':>15} {free:>9.1f}s")
    if starts:
        print(f"median start-up {statistics.median(starts):.1f} s (of which workers -> first report "
              f"{statistics.median(firsts):.1f} s); median stop-to-free {statistics.median(frees):.1f} s "
              f"over {len(starts)} trials")
    return code


if __name__ == "__main__":
    sys.exit(main())
