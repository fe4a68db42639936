"""The progress view's text, driven through Tune's callback hooks with Tune's own Trial objects:
on a real pseudo-terminal (redrawn in place) and on a plain stream (one line per event)."""

import io
import os
import pty
import select

import pytest
from ray.tune.experiment import Trial

from orchestrator.progress import EPOCH_LINE_PATTERN, SweepProgress, duration, keep_epoch_lines
from trainables import metrics


def make_trial(index: int, method: str, epochs: int = 2) -> Trial:
    trial = Trial("run_trial", config={"method": method, "epochs": epochs}, trial_id=f"f00ba_{index:05d}",
                  stub=True, trial_name_creator=lambda t: f"{t.config['method']}_bs=64_{index}")
    trial.set_status(Trial.PENDING)
    return trial


def start(view: SweepProgress, trials: list[Trial], trial: Trial) -> None:
    trial.set_status(Trial.RUNNING)
    view.on_trial_start(0, trials, trial)


def report(view: SweepProgress, trials: list[Trial], trial: Trial, epoch: int, knn: float) -> None:
    view.on_trial_result(0, trials, trial, {metrics.EPOCH: epoch, metrics.KNN_VAL_ACCURACY: knn})


def read_all(descriptor: int) -> str:
    """Everything written to the pty so far: one read may return only part of it."""
    chunks = []
    while select.select([descriptor], [], [], 0.5)[0]:
        chunks.append(os.read(descriptor, 65536))
    return b"".join(chunks).decode()


def test_on_a_terminal_the_view_is_redrawn_in_place_with_an_eta() -> None:
    main, secondary = pty.openpty()
    terminal = os.fdopen(secondary, "w")
    try:
        trials = [make_trial(0, "simclr"), make_trial(1, "simsiam")]
        now = [1000.0]
        view = SweepProgress("smoke", terminal, clock=lambda: now[0])
        view.setup(total_num_samples=3)
        for trial in trials:
            start(view, trials, trial)
            report(view, trials, trial, 1, 0.5)
        now[0] += 60
        view.draw(trials)
        report(view, trials, trials[0], 2, 0.75)
        view.draw(trials)
        terminal.flush()
        output = read_all(main)
    finally:
        terminal.close()
        os.close(main)
    first, second = output.split("\x1b[3F\x1b[J")  # the second draw goes up 3 lines and clears
    # Work in epochs (+1 per trial): 3 trials x 3 units = 9; done 1 + 1 = 2, so 60 s x 7/2 left.
    assert first.splitlines()[0] == "sweep smoke: 0 finished, 2 running, 1 pending; elapsed 1m00s, ETA 3m30s"
    assert "  simclr_bs=64_0  epoch 1/2  kNN 0.5000" in first.splitlines()
    assert "  simsiam_bs=64_1  epoch 1/2  kNN 0.5000" in first.splitlines()
    assert "  simclr_bs=64_0  epoch 2/2  kNN 0.7500" in second.splitlines()
    assert "ETA 2m00s" in second.splitlines()[0]  # 60 s x 6/3


def test_on_a_plain_stream_each_epoch_is_a_line_and_the_sweep_line_follows_each_end() -> None:
    stream = io.StringIO()
    trials = [make_trial(0, "simclr", epochs=1)]
    view = SweepProgress("smoke", stream, total_trials=1)
    start(view, trials, trials[0])
    report(view, trials, trials[0], 0, 0.25)
    report(view, trials, trials[0], 0, 0.25)  # an epoch reported again (a restore): one line
    report(view, trials, trials[0], 1, 0.5)
    view.on_trial_complete(0, trials, trials[0])  # Tune calls it while the trial is still RUNNING
    lines = stream.getvalue().splitlines()
    assert lines[:3] == ["  simclr_bs=64_0  epoch 0/1  kNN 0.2500", "  simclr_bs=64_0  epoch 1/1  kNN 0.5000",
                         "  simclr_bs=64_0  epoch 1/1  kNN 0.5000  finished"]
    assert lines[3].startswith("sweep smoke: 1 finished, 0 running, 0 pending; elapsed ")
    assert "ETA" not in lines[3]  # nothing left to wait for


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59.4, "59s"), (61, "1m01s"), (3600, "1h00m"),
                                               (7322, "2h02m")])
def test_durations_read_as_hours_minutes_seconds(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_epoch_lines_are_exempt_from_rays_deduplication(monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    from ray._private.ray_logging import LogDeduplicator

    monkeypatch.delenv("RAY_DEDUP_LOGS_ALLOW_REGEX", raising=False)
    keep_epoch_lines()
    keep_epoch_lines()  # idempotent
    assert os.environ["RAY_DEDUP_LOGS_ALLOW_REGEX"] == EPOCH_LINE_PATTERN
    # Ray's own deduplicator, given the pattern as Ray reads it from the variable: lines from two
    # workers that differ only in numbers all come through; without it the second is swallowed.
    lines = ["[simclr batch 64] epoch 1/6 pretrain/loss=4.1", "[simclr batch 64] epoch 2/6 pretrain/loss=3.9"]
    for allow, expected in ((os.environ["RAY_DEDUP_LOGS_ALLOW_REGEX"], 2), (None, 1)):
        deduplicator = LogDeduplicator(5, allow, None, _timesource=lambda: 0.0)
        printed = [line for pid, line in enumerate(lines)
                   for batch in deduplicator.deduplicate({"ip": "n", "pid": pid, "lines": [line]})
                   for line in batch["lines"]]
        assert len(printed) == expected, printed
    assert re.search(EPOCH_LINE_PATTERN, lines[0])
