"""python -m orchestrator.report NAME: a sweep's results from MLflow as tables, a figure and claim verdicts.

    python -m orchestrator.report smoke
    python -m orchestrator.report smoke --run-id 3f2a... --metric linear/test_accuracy --out reports/x

It reads the sweep's parent run (the latest, or --run-id) and its trial child runs, writes
report.md, pivot.csv, differences.csv and convergence.png to --out (default ./reports/NAME/),
logs them on the parent run under the artifact path "report", and prints the Markdown.

Only finished trials enter a number; collapsed, failed and unfinished trials are listed apart
(collapsed trials do enter claims about the collapse metric itself: there they are the evidence).
The pivot shows the metric's mean ± std over seeds per combination of the sweep's axes (seed
aside); with one seed, the std is the one the evaluation logged over its repeats (<metric>_std).

Verdict rule, per paper claim (a signed contrast sum(weight x cell), see search_spaces.Claim):
the contrast is matched over the sweep's axes the claim's cells do not name, i.e. computed per
group of those axes and averaged over the groups (weights / number of groups).
- Paired by seed: the contrast is computed per seed (seeds missing a cell are left out, and
  said); its value is the mean over seeds, its spread the standard error std / sqrt(seeds), its
  95% interval the t-interval with seeds - 1 degrees of freedom and its p-value the two-sided
  one-sample t-test against 0 (both from scipy.stats.t).
- Holm's step-down correction over the sweep's family: every claim's contrast and, when a claim
  has more than one group, each of its groups' contrasts.
"agrees" if the Holm-adjusted p-value is below 0.05 and the contrast is positive, "disagrees" if
below 0.05 and negative, otherwise "inconclusive" (the interval includes 0 after correction).
Always inconclusive, naming why: one seed ("one seed": the contrast and the propagated repeat std,
sqrt(sum weight^2 x std^2) over the cells' logged <metric>_std, are shown, but repeats of a probe
say nothing about pretraining's variance), a needed cell without a finished trial, or fewer than
2 seeds with every cell. The report prints interval and adjusted p-value beside each verdict.
"""

import argparse
from collections.abc import Sequence
from pathlib import Path

from orchestrator.preflight import PreflightError, check_tracking_uri, sqlite_path
from orchestrator.report.model import build_report
from orchestrator.report.render import publish
from orchestrator.report.runs import (
    ReportInputError,
    find_parent_run,
    load_trials,
    open_client,
    sweep_command,
)
from orchestrator.sweep import fail
from orchestrator.tracking import LOGGED_METRICS, resolve_tracking_uri
from search_spaces import SWEEPS


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.report",
        description="Tables, a convergence figure and claim verdicts for a sweep's runs in MLflow.",
    )
    parser.add_argument("sweep", help="the sweep's name (python -m orchestrator.sweep --list)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
                        "else sqlite:///mlflow.db here)")
    parser.add_argument("--out", type=Path, help="output folder (default: ./reports/NAME/)")
    parser.add_argument("--run-id", help="the parent run to report on (default: the sweep's latest)")
    parser.add_argument("--metric", help="the pivot's metric (default: the first claim's, else "
                        "<eval>/test_balanced_accuracy of the trials' evaluation protocol)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sweep not in SWEEPS:
        return fail(f"unknown sweep {args.sweep!r}; valid sweeps: {', '.join(SWEEPS)}")
    if args.metric is not None and args.metric not in LOGGED_METRICS:
        return fail(f"unknown metric {args.metric!r}; valid metrics: {', '.join(LOGGED_METRICS)}")
    tracking_uri = resolve_tracking_uri(args.tracking_uri)
    store = sqlite_path(tracking_uri)
    try:  # a SQLite file that is not there is the report's own "no MLflow store" (it creates none)
        if store is None or store.exists():
            check_tracking_uri(tracking_uri)
    except PreflightError as error:
        return fail(str(error))
    try:
        client = open_client(tracking_uri, args.sweep)
        parent = find_parent_run(client, tracking_uri, args.sweep, args.run_id)
        trials = load_trials(client, parent)
        if not trials:
            raise ReportInputError(f"parent run {parent.info.run_id} of sweep {args.sweep!r} has no trial "
                                   f"runs; `{sweep_command(args.sweep)}` runs them")
    except ReportInputError as error:
        return fail(str(error))
    report = build_report(SWEEPS[args.sweep], tracking_uri, parent, trials, args.metric)
    markdown, _ = publish(report, client, args.out or Path("reports") / args.sweep)
    print(markdown, end="")
    return 0


