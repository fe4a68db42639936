"""The terminal's view of a running sweep: one line per running trial and one for the sweep.

    sweep smoke: 1 finished, 2 running, 1 pending; elapsed 1m05s, ETA 2m10s
      simclr_bs=128_1  epoch 2/3  kNN 0.8312
      simsiam_bs=64_2  epoch 1/3  kNN 0.7904

`SweepProgress` is a Ray Tune callback, so it reads each trial's epoch and kNN accuracy from
the trial's own results (what Tune receives, every epoch, never deduplicated or lost) rather
than from the workers' printed lines. On a terminal the block is redrawn in place about once a
second; elsewhere (a CI log, a pipe) it prints plain lines: one per trial per epoch and per
finished trial, and the sweep line every `interval_seconds` and whenever a trial ends.

Ray's own output (Tune's trial tables, every worker's lines, Ray's loggers) goes to a file in
the sweep's folder instead (`output_to_file`); `--verbose` keeps it on the terminal as before.
Ray deduplicates forwarded worker lines that differ only in numbers, which swallowed the loop's
`epoch 2/6 ...` as a repeat of `epoch 1/6 ...`: `keep_epoch_lines` exempts those lines.

ETA: the sweep's work is counted in epochs, each trial's epochs plus one for its start-up and
evaluation; the ETA is the elapsed time scaled by the work left over the work done.
"""

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ray.tune import Callback
from ray.tune.experiment import Trial

from trainables import metrics
from trainables.config import TrialConfig

# The loop's per-epoch line, "[simclr batch 64] epoch 2/6 pretrain/loss=...": never deduplicated.
EPOCH_LINE_PATTERN = r"\] epoch \d+/\d+ "
DEDUP_ALLOW_VARIABLE = "RAY_DEDUP_LOGS_ALLOW_REGEX"  # read by Ray when it is first imported
OUTPUT_FILE = "ray_output.log"
TERMINAL_REFRESH_SECONDS = 1.0
PLAIN_INTERVAL_SECONDS = 30.0
# What a restored callback (Tuner.restore unpickles it without its stream) writes to.
_terminal: TextIO | None = None


def keep_epoch_lines() -> None:
    """Exempt the loop's epoch lines from Ray's log deduplication (its documented allow-regex
    variable). Takes effect only when called before Ray is first imported in this process."""
    existing = os.environ.get(DEDUP_ALLOW_VARIABLE)
    if existing and EPOCH_LINE_PATTERN in existing:
        return
    os.environ[DEDUP_ALLOW_VARIABLE] = f"{existing}|{EPOCH_LINE_PATTERN}" if existing else EPOCH_LINE_PATTERN


def output_folder(storage_path: str, sweep_name: str) -> Path:
    """The sweep's own folder where it is local (Tune's experiment folder), else ./logs/NAME."""
    if "://" in storage_path:
        return Path("logs") / sweep_name
    return Path(storage_path) / sweep_name


@contextlib.contextmanager
def output_to_file(path: Path) -> Iterator[TextIO]:
    """Send file descriptors 1 and 2 (Tune's tables, the workers' forwarded lines, Ray's loggers,
    whatever holds the original streams) to `path`; yields a stream on the original stdout."""
    global _terminal
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(1), "w", buffering=1)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        _terminal = terminal
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for descriptor in saved:
                os.close(descriptor)
            _terminal = None
            terminal.close()


@contextlib.contextmanager
def progress_view(sweep_name: str, total_trials: int, storage_path: str,
                  verbose: bool) -> Iterator["SweepProgress | None"]:
    """The progress view with Ray's output in a file; with `verbose`, no view and Ray's output here."""
    if verbose:
        yield None
        return
    path = output_folder(storage_path, sweep_name) / OUTPUT_FILE
    print(f"Ray's own output: {path} (--verbose shows it here)", flush=True)
    with output_to_file(path) as terminal:
        yield SweepProgress(sweep_name, terminal, total_trials)


def duration(seconds: float) -> str:
    """42s, 3m05s, 1h02m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class TrialProgress:
    name: str
    epochs: int  # the trial's planned pretraining epochs
    epoch: int | None = None  # the last epoch reported (0: the initialization)
    knn_accuracy: float | None = None
    state: str = "running"  # running | finished | failed

    def line(self) -> str:
        epoch = "starting" if self.epoch is None else f"epoch {self.epoch}/{self.epochs}"
        knn = "" if self.knn_accuracy is None else f"  kNN {self.knn_accuracy:.4f}"
        state = "" if self.state == "running" else f"  {self.state}"
        return f"{self.name}  {epoch}{knn}{state}"


class SweepProgress(Callback):
    """Tune callback drawing the progress view (see the module docstring) on `stream`."""

    def __init__(self, sweep_name: str, stream: TextIO | None = None, total_trials: int = 0,
                 interval_seconds: float = PLAIN_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sweep_name = sweep_name
        self.stream = stream
        self.total_trials = total_trials
        self.interval_seconds = interval_seconds
        self.clock = clock
        self.trials: dict[str, TrialProgress] = {}
        self.started = self.clock()
        self._last_drawn = -math.inf
        self._drawn_lines = 0

    def __getstate__(self) -> dict[str, Any]:
        # Tune saves its callbacks with the experiment; a stream does not pickle, and a restored
        # sweep starts its clock and its view afresh.
        return {**self.__dict__, "stream": None, "trials": {}, "_drawn_lines": 0}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.started = self.clock()
        self._last_drawn = -math.inf

    @property
    def out(self) -> TextIO:
        return self.stream or _terminal or sys.stdout

    @property
    def on_terminal(self) -> bool:
        return self.out.isatty()

    # Tune's hooks ---------------------------------------------------------------------------------

    def setup(self, total_num_samples: int | None = None, **info: Any) -> None:
        self.total_trials = max(self.total_trials, total_num_samples or 0)

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._trial(trial).state = "running"

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict,
                        **info: Any) -> None:
        progress = self._trial(trial)
        epoch = result.get(metrics.EPOCH)
        is_new_epoch = isinstance(epoch, int | float) and int(epoch) != progress.epoch
        if isinstance(epoch, int | float):
            progress.epoch = int(epoch)
        knn = result.get(metrics.KNN_VAL_ACCURACY)
        if isinstance(knn, int | float) and math.isfinite(knn):
            progress.knn_accuracy = float(knn)
        if is_new_epoch and not self.on_terminal:
            self._write([f"  {progress.line()}"])

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._end(trial, trials, "finished")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._end(trial, trials, "failed")

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        interval = TERMINAL_REFRESH_SECONDS if self.on_terminal else self.interval_seconds
        if self.clock() - self._last_drawn >= interval:
            self.draw(trials)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self.draw(trials)

    # The view -------------------------------------------------------------------------------------

    def _trial(self, trial: Trial) -> TrialProgress:
        if trial.trial_id not in self.trials:
            epochs = int(trial.config.get("epochs", TrialConfig.epochs))
            self.trials[trial.trial_id] = TrialProgress(str(trial), epochs)
        return self.trials[trial.trial_id]

    def _end(self, trial: Trial, trials: list[Trial], state: str) -> None:
        progress = self._trial(trial)
        progress.state = state
        if not self.on_terminal:
            self._write([f"  {progress.line()}"])
        self.draw(trials)

    def status(self, trial: Trial) -> str:
        """finished | failed | running | pending. Tune calls on_trial_complete before it marks the
        trial TERMINATED, so the view's own record of an ending comes first."""
        progress = self.trials.get(trial.trial_id)
        if progress is not None and progress.state != "running":
            return progress.state
        return {Trial.TERMINATED: "finished", Trial.ERROR: "failed", Trial.RUNNING: "running"}.get(
            trial.status, "pending")

    def counts(self, trials: list[Trial]) -> dict[str, int]:
        statuses = [self.status(trial) for trial in trials]
        counts = {name: statuses.count(name) for name in ("finished", "failed", "running")}
        total = max(self.total_trials, len(trials))
        return {**counts, "pending": max(0, total - sum(counts.values()))}

    def eta_seconds(self, trials: list[Trial], elapsed: float) -> float | None:
        """The elapsed time x work left / work done, in epochs (+1 per trial); None before any."""
        units = {trial.trial_id: int(trial.config.get("epochs", TrialConfig.epochs)) + 1 for trial in trials}
        average_units = sum(units.values()) / len(units) if units else 0.0
        total = sum(units.values()) + average_units * max(0, self.total_trials - len(trials))
        done = 0.0
        for trial in trials:
            if self.status(trial) in ("finished", "failed"):
                done += units[trial.trial_id]
            elif trial.trial_id in self.trials and self.trials[trial.trial_id].epoch:
                done += self.trials[trial.trial_id].epoch or 0
        if done <= 0:
            return None
        return elapsed * max(0.0, total - done) / done

    def sweep_line(self, trials: list[Trial]) -> str:
        counts = self.counts(trials)
        elapsed = self.clock() - self.started
        parts = [f"{counts['finished']} finished"]
        if counts["failed"]:
            parts.append(f"{counts['failed']} failed")
        parts += [f"{counts['running']} running", f"{counts['pending']} pending"]
        timing = f"elapsed {duration(elapsed)}"
        if counts["running"] or counts["pending"]:
            eta = self.eta_seconds(trials, elapsed)
            timing += f", ETA {'?' if eta is None else duration(eta)}"
        return f"sweep {self.sweep_name}: {', '.join(parts)}; {timing}"

    def view(self, trials: list[Trial]) -> list[str]:
        """The sweep line, then a line per running trial."""
        running = [self._trial(trial).line() for trial in trials if self.status(trial) == "running"]
        return [self.sweep_line(trials), *(f"  {line}" for line in running)]

    def draw(self, trials: list[Trial]) -> None:
        self._last_drawn = self.clock()
        if not self.on_terminal:
            self._write([self.sweep_line(trials)])
            return
        try:  # a line wider than the terminal would wrap, and the redraw would go up too few lines
            width = os.get_terminal_size(self.out.fileno()).columns or None  # 0: not known
        except (OSError, ValueError):
            width = None
        lines = [line[:width - 1] if width else line for line in self.view(trials)]
        # Up to the first line drawn last time, clear to the end of the screen, draw anew.
        erase = f"\x1b[{self._drawn_lines}F\x1b[J" if self._drawn_lines else ""
        self.out.write(erase + "".join(f"{line}\n" for line in lines))
        self.out.flush()
        self._drawn_lines = len(lines)

    def note(self, text: str) -> None:
        """A message above the view (on a terminal, the view is drawn again below it)."""
        if self.on_terminal and self._drawn_lines:
            self.out.write(f"\x1b[{self._drawn_lines}F\x1b[J")
            self._drawn_lines = 0
        self._write([text])

    def _write(self, lines: list[str]) -> None:
        self.out.write("".join(f"{line}\n" for line in lines))
        self.out.flush()
