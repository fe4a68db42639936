"""python -m orchestrator.sweep NAME: run a named sweep on whatever Ray is there, tracked in MLflow.

    python -m orchestrator.sweep --list
    python -m orchestrator.sweep smoke --dry-run
    python -m orchestrator.sweep smoke --set epochs=2 --set method=simclr,simsiam

The command line: parse, check (orchestrator.preflight), plan, print the dry run's table, run the
stages and report. Tune's setup and what is read from its results live in orchestrator.tune_driver,
the parent run's writes go through orchestrator.tracking's SweepTracker.
"""

import argparse
import dataclasses
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.cluster import ClusterError, ClusterShape, check_storage, cluster_shape, connect
from orchestrator.datasets import share
from orchestrator.estimates import gpu_hours
from orchestrator.grid import (
    MERGED_TRIALS_FILE,
    PRETRAINING_ONLY,
    Grid,
    apply_overrides,
    flat_value,
    substitute_missing_datasets,
)
from orchestrator.memory import GIB, fit_to_plan
from orchestrator.mlflow_view import (
    UI_COMMAND,
    run_link,
    runs_table_link,
    runs_table_view,
)
from orchestrator.preflight import PreflightError, check_arguments, check_grid, check_inputs
from orchestrator.resources import PlanningError, ResourcePlan, plan_resources
from orchestrator.screening import (
    STAGE_2_SUFFIX,
    pretraining_axes,
    rank_priors,
    ranking_line,
    screening_axes,
    stage_2_trial_count,
)
from orchestrator.weights_availability import print_weights_availability
from search_spaces import SWEEPS, Screening
from trainables import metrics
from trainables.batches import RESIDENT_MEMORY_FRACTION
from trainables.config import ConfigError, TrialConfig
from trainables.redaction import redact_uri, redact_values

EXIT_BAD_INPUT = 2
EXIT_TRIALS_FAILED = 1
# A preemptible node or an OOM kill takes a worker now and then: restart from the last checkpoint.
DEFAULT_MAX_FAILURES = 2


class ArgumentError(ValueError):
    """A command line argparse refuses: one line (argparse itself prints its usage too)."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ArgumentError(f"{message}; see python -m orchestrator.sweep --help")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(
        prog="python -m orchestrator.sweep",
        description="Run a named sweep (a grid of SSL pretraining trials) with Ray Tune, logged to MLflow.",
    )
    parser.add_argument("sweep", nargs="?", help="the sweep's name; --list shows them")
    parser.add_argument("--list", action="store_true", help="list the sweeps and exit")
    parser.add_argument("--dry-run", action="store_true", help="print the trial table and run nothing")
    parser.add_argument("--smoke", action="store_true",
                        help="the same axes scaled down to minutes on a CPU; missing datasets become shapes")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE[,VALUE...]",
                        help="override a trial parameter; several values make it a grid axis")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
                        "else sqlite:///mlflow.db here)")
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--cluster-config", metavar="FILE",
                        help="the autoscaler's cluster config (e.g. cluster.yaml) to plan for its node types "
                        "and maximum counts; default: ~/ray_bootstrap_config.yaml on a `ray up` head node")
    parser.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    parser.add_argument("--cpus-per-worker", type=int,
                        help="CPUs per Ray Train worker (at least 1)")
    parser.add_argument("--storage-path", default="ray_results",
                        help="where Ray keeps trial state and checkpoints (shared storage on a cluster)")
    parser.add_argument("--max-failures", type=int, default=DEFAULT_MAX_FAILURES, metavar="N",
                        help="restarts of a trial's workers from its last checkpoint after a lost worker "
                        f"or node (default {DEFAULT_MAX_FAILURES}; 0: fail the trial)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the sweep's last run from its checkpoints")
    parser.add_argument("--register-model", metavar="NAME",
                        help="register each finished trial's backbone as a version of the MLflow model NAME")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's own output (trial tables, every worker's lines) instead of the "
                        "progress view; without it that output goes to a file in the sweep's folder")
    return parser.parse_args(argv)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except ArgumentError as error:
        return fail(str(error))
    if args.list:
        width = max(map(len, SWEEPS))
        for name, sweep in SWEEPS.items():
            print(f"{name:<{width}}  {sweep.description}")
        return 0
    if args.sweep is None:
        return fail(f"name a sweep; valid sweeps: {', '.join(SWEEPS)} (or --list)")
    if args.sweep not in SWEEPS:
        return fail(f"unknown sweep {args.sweep!r}; valid sweeps: {', '.join(SWEEPS)}")
    try:  # the pre-flight's command-line and grid checks (orchestrator.preflight), dry run or not
        check_arguments(args)
        grid = apply_overrides(SWEEPS[args.sweep], args.set, smoke=args.smoke)
        substitutions: list[str] = []
        if args.smoke:
            grid, substitutions = substitute_missing_datasets(grid)
        check_grid(grid.trial_configs())
    except (ConfigError, PreflightError, ClusterError) as error:
        return fail(str(error))
    for substitution in substitutions:
        print(f"smoke: dataset {substitution}")
    for line in grid.screened_out:
        print(f"prior left out: {line}")

    address = args.address or os.environ.get("RAY_ADDRESS")
    try:
        if args.dry_run:
            if address is not None:
                connect(address)
            plan, shape = make_plan(grid, args, live=address is not None)
            print_trial_table(args.sweep, first_stage(args.sweep, grid), plan, shape)
            print_stage_2(screening_of(args), grid)
            print_weights_availability(grid.trial_configs())
            return 0
        return run(args, grid, address, substitutions)
    except (ClusterError, PlanningError) as error:
        return fail(str(error))


def make_plan(grid: Grid, args: argparse.Namespace, live: bool) -> tuple[ResourcePlan, ClusterShape]:
    """The plan for the cluster the sweep can have: the autoscaler's node types where there is
    one (stated with --cluster-config, or found), else the resources present (`live`) or local."""
    shape = cluster_shape(args.cluster_config, live=live)
    configs = grid.trial_configs()
    plan = plan_resources(shape.nodes, num_workers=max(c.num_workers for c in configs),
                          num_trials=len(configs), max_concurrent=args.max_concurrent,
                          cpus_per_worker=args.cpus_per_worker, max_worker_nodes=shape.max_worker_nodes)
    # Trials spread over more GPUs where their memory asks for it: plan for the widest.
    widest = max(config.num_workers for config, _ in fit_to_plan(configs, plan))
    if widest > plan.num_workers:
        plan = plan_resources(shape.nodes, num_workers=widest, num_trials=len(configs),
                              max_concurrent=args.max_concurrent, cpus_per_worker=args.cpus_per_worker,
                              max_worker_nodes=shape.max_worker_nodes)
    return plan, shape


def screening_of(args: argparse.Namespace) -> Screening | None:
    """which_prior's two stages as this run has them (--smoke pretrains fewer priors)."""
    screening = SWEEPS[args.sweep].screening
    if screening is None or not args.smoke:
        return screening
    return dataclasses.replace(screening, top_k=screening.smoke_top_k)


def first_stage(sweep_name: str, grid: Grid) -> Grid:
    """The grid that runs first: the whole grid, or which_prior's screening (method=none)."""
    if SWEEPS[sweep_name].screening is None:
        return grid
    return dataclasses.replace(grid, axes=screening_axes(grid.axes))


def print_stage_2(screening: Screening | None, grid: Grid) -> None:
    if screening is None:
        return
    methods = grid.axes.get("method") or [grid.params.get("method", TrialConfig.method)]
    count = stage_2_trial_count(grid.axes, grid.params, screening)
    print(f"stage 2 (after the table above, stage 1): {count} trial(s): the top {screening.top_k} priors "
          f"of stage 1 by mean {screening.metric}, plus {screening.baseline}, x method "
          f"{', '.join(map(str, methods))} x the other axes")


def print_trial_table(sweep_name: str, grid: Grid, plan: ResourcePlan, shape: ClusterShape) -> None:
    configs = grid.trial_configs()
    axes = list(grid.axes)
    print(f"sweep {sweep_name}: {grid.num_trials} trial(s); {plan.describe()}; planned from {shape.source}")
    if grid.num_merged:
        print(f"merged: {grid.num_merged} of {len(grid.cells())} cells run in another cell's trial (a "
              f"method that does not pretrain ignores {', '.join(PRETRAINING_ONLY)}); the report gives each "
              "its value")
    if grid.params:
        print("fixed: " + ", ".join(f"{k}={v}" for k, v in grid.params.items()))
    if grid.search:
        space = ", ".join(f"{key} ~ {kind}({low:g}, {high:g})"
                          for key, (kind, low, high) in grid.search.space.items())
        print(f"search: Optuna TPE + ASHA on {grid.search.metric} ({grid.search.mode}), "
              f"{grid.num_samples} sample(s) per row over {space}")
    hours = [gpu_hours(config) for config in configs]
    sized = fit_to_plan(configs, plan)
    memory_columns = ["checkpointing", "GiB/GPU"] if plan.use_gpu else []
    rows = [[str(i), *(str(flat_value(c.to_dict(), a)) for a in axes),
             str(c.num_workers), str(plan.cpus_per_worker * c.num_workers),
             str(plan.gpus_per_worker * c.num_workers), "?" if h is None else f"{h * grid.num_samples:.3g}",
             *([("on" if c.activation_checkpointing else "off"), f"{m.total / GIB:.1f}"] if m else [])]
            for i, ((c, m), h) in enumerate(zip(sized, hours, strict=True))]
    print_table(["trial", *axes, "workers", "CPUs", "GPUs", "est. GPU-h", *memory_columns], rows)
    print_data_pairs(grid, configs)
    if plan.use_gpu:
        print(memory_line(plan))
    known = [h * grid.num_samples for h in hours if h is not None]
    print(f"estimated total: {sum(known):.1f} GPU-hours on A100-class GPUs"
          + (f" ({len(hours) - len(known)} row(s) of unknown size)" if len(known) < len(hours) else "")
          + "; see orchestrator/estimates.py")


def data_pair(config: TrialConfig) -> str:
    """What a trial pretrains on -> what it is evaluated on, with the folders where they differ."""
    own_root = config.data_root != TrialConfig.data_root
    evaluation = config.dataset + (f" ({config.data_root})" if own_root else "")
    if config.pretrain_dataset is None:
        source = f"{config.dataset} train split"
    else:
        root = config.resolved_pretrain_data_root
        source = config.pretrain_dataset + (f" ({root})" if root != config.data_root else "")
    fraction = f" x {config.pretrain_fraction:g}" if config.pretrain_fraction < 1 else ""
    return f"{source}{fraction} -> {evaluation}"


def print_data_pairs(grid: Grid, configs: list[TrialConfig]) -> None:
    """One line per distinct pretrain -> evaluation pair, where any trial names its pretraining data."""
    if all(config.pretrain_dataset is None and config.pretrain_fraction == 1 for config in configs):
        return
    counts: dict[str, int] = {}
    for config in configs:
        counts[data_pair(config)] = counts.get(data_pair(config), 0) + grid.num_samples
    paired = [group for group in grid.paired if "pretrain_dataset" in group]
    how = (f"paired axes {', '.join(paired[0])}: one cell per pair, crossed with the other axes" if paired
           else "pretraining data of its own")
    print(f"pretrain -> evaluation ({how}):")
    width = max(map(len, counts))
    for pair, count in counts.items():
        print(f"  {pair:<{width}}  {count} trial(s)")


def memory_line(plan: ResourcePlan) -> str:
    if plan.gpu_memory_bytes is None:
        return ("GiB/GPU: estimated peak per GPU (orchestrator/memory.py), not checked: the GPUs' memory is "
                "unknown; state it in the node type (labels: {gpu-memory-gib: \"24\"})")
    return (f"GiB/GPU: estimated peak per GPU (bf16 training; orchestrator/memory.py); every trial fits "
            f"{1 - RESIDENT_MEMORY_FRACTION:.0%} of the {plan.gpu_memory_bytes / GIB:.1f} GiB GPUs (the rest "
            "may hold the training split), spread over workers and checkpointed where needed")


def print_table(header: list[str], rows: list[list[str]]) -> None:
    rows = [[redact_values(cell) for cell in row] for row in rows]  # a weights_path axis' URLs
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in [header, ["-" * width for width in widths], *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def run(args: argparse.Namespace, grid: Grid, address: str | None, substitutions: list[str]) -> int:
    from orchestrator.progress import keep_epoch_lines, progress_view

    keep_epoch_lines()  # before Ray is imported
    import ray

    from orchestrator.lineage import refuse_mlflow_pickles, resolve_weights, share_weights
    from orchestrator.priors import resolve_priors, share_priors
    from orchestrator.tracking import SweepTracker, error_line, flatten, resolve_tracking_uri
    from orchestrator.tune_driver import (
        TABLE_HEADER,
        Interruption,
        report_best,
        run_tune,
        summarize,
        trial_display_name,
    )

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    refuse_mlflow_pickles()  # the driver runs no MLflow loader that unpickles
    tracking_uri = resolve_tracking_uri(args.tracking_uri)
    storage_path = args.storage_path if "://" in args.storage_path else \
        str(Path(args.storage_path).expanduser().resolve())
    try:  # the pre-flight: before Ray starts and before any MLflow store exists, nothing has begun
        checked = check_inputs(grid.trial_configs(), tracking_uri, storage_path, args.sweep, args.resume)
        weights = resolve_weights(grid.trial_configs(), tracking_uri)  # runs:/ and models:/ weights_path
        priors = resolve_priors(grid.trial_configs())  # files on this machine: workers need not have them
    except (OSError, ValueError) as error:
        return fail(" ".join(str(error).split()))
    decoded = checked.decoded
    connect(address)
    plan, shape = make_plan(grid, args, live=True)
    check_storage(storage_path, shape)
    sweep = SWEEPS[args.sweep]
    stage_1 = first_stage(args.sweep, grid)
    print_trial_table(args.sweep, stage_1, plan, shape)
    print_stage_2(screening_of(args), grid)
    print(f"MLflow: {redact_uri(tracking_uri)} (experiment {args.sweep!r}); "
          f"Ray storage: {redact_uri(storage_path)}")
    shared_data = share(decoded)  # one object per (dataset, folder, image size)
    del decoded  # the object store holds them now
    shared_weights, shared_priors = share_weights(weights), share_priors(priors)
    del priors

    tracker = SweepTracker(tracking_uri, args.sweep)
    if args.resume:
        try:
            tracker.resume_parent()
        except RuntimeError as error:  # no earlier run of this sweep in this store
            ray.shutdown()
            return fail(str(error))
        repaired = tracker.close_unfinished_trials()  # left RUNNING by a crashed driver
        if repaired:
            print(f"resume: {repaired} trial run(s) left RUNNING by an earlier driver continue now")
    else:
        tracker.start_parent(args.sweep, {"sweep": args.sweep, "axes": ",".join(grid.display_axes),
                                          **flatten({"grid": grid.axes, "fixed": grid.params})},
                             description=(sweep.hypothesis or sweep.description).strip())
        tracker.tag_parent("smoke", str(is_smoke_run(args)).lower())
        if stage_1.num_merged:
            tracker.log_parent_dict(stage_1.served_cells(), MERGED_TRIALS_FILE)
        if substitutions:
            tracker.tag_parent("smoke_dataset_substitutions", "; ".join(substitutions))
    print_mlflow_links(tracker, grid)
    status = "FAILED"  # unless the sweep gets to its end
    interruption = Interruption()
    screening = screening_of(args)
    total_trials = stage_1.num_trials + (stage_2_trial_count(grid.axes, grid.params, screening)
                                         if screening else 0)

    def run_stage(name: str, stage: Grid, resume: bool, progress: Any) -> list[Any]:
        return list(run_tune(name, stage, plan, storage_path,
                             tracker.trial_logger(grid.method_params, plan, args.register_model),
                             resume, shared_data, max_failures=args.max_failures,
                             shared_weights=shared_weights, progress=progress,
                             shared_priors=shared_priors))

    try:
        with interruption, progress_view(args.sweep, total_trials, storage_path, args.verbose) as progress:
            interruption.notify = progress.note if progress else None
            results = run_stage(args.sweep, stage_1, args.resume, progress)
            if screening is not None and not interruption.signal:
                results += run_stage_2(args, screening, grid, tracker, results, storage_path, progress,
                                       run_stage)
            # Nothing after this needs Ray; shut it down inside the redirect, so that the workers'
            # lines Ray forwards late, at its shutdown, go to its output file, not under the table.
            ray.shutdown()
        rows, failed = summarize(results, grid.display_axes, interrupted=interruption.signal is not None)
        status = "KILLED" if interruption.signal else "FAILED" if failed else "FINISHED"
        print(f"\nsweep {args.sweep}: final metrics (test_* from each trial's evaluation protocol)")
        header = ["trial", *grid.display_axes, *TABLE_HEADER]
        print_table(header, rows)
        for result in results:
            if result.error is not None:
                error_file = f"{result.path}/error.txt"  # a path in the storage's file system (S3 too)
                print(f"failed: {trial_display_name(result)}: {error_line(error_file, result.filesystem)}")
        tracker.log_parent_text(table_csv(header, rows), "summary.csv")
        if grid.search and not interruption.signal:
            report_best(results, grid, tracker)
        if not interruption.signal:
            report_on_parent(tracker, args.sweep, status)
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once
        interruption.signal = interruption.signal or signal.SIGINT
        status = "KILLED"
    finally:
        if status != "FINISHED":
            tracker.close_unfinished_trials()
        tracker.finish_parent(status)
        ray.shutdown()
    if interruption.signal:
        name = signal.Signals(interruption.signal).name
        print(f"interrupted ({name}): unfinished trials are marked KILLED in MLflow; continue from their "
              f"last epoch with: python -m orchestrator.sweep {args.sweep} --resume (and the same options)",
              file=sys.stderr)
        return 128 + interruption.signal
    return EXIT_TRIALS_FAILED if status == "FAILED" else 0


def run_stage_2(args: argparse.Namespace, screening: Screening, grid: Grid, tracker: Any,
                stage_1_results: list[Any], storage_path: str, progress: Any, run_stage: Any) -> list[Any]:
    """which_prior's stage 2: the grid's methods on stage 1's top priors plus the baseline. The
    ranking is said on the terminal and kept on the parent run (tag screening.ranking)."""
    from orchestrator.tune_driver import can_restore

    ranked = rank_priors(stage_1_results, screening.metric)
    line = ranking_line(ranked, screening.metric)
    (progress.note if progress else print)(line)
    tracker.tag_parent("screening.ranking", line[:5000])
    stage = dataclasses.replace(grid, axes=pretraining_axes(grid.axes, grid.params, screening, ranked))
    if not stage.axes["init"]:
        return []
    name = args.sweep + STAGE_2_SUFFIX
    if progress is not None:  # the view counts stage 2's trials from here
        progress.sweep_name = f"{args.sweep} (stage 2)"
        progress.total_trials = stage.num_trials
    resume = args.resume and can_restore(storage_path, name)
    return run_stage(name, stage, resume, progress)


def is_smoke_run(args: argparse.Namespace) -> bool:
    """A plumbing check, not a result: the --smoke variant of any sweep, or the smoke sweep itself
    (which is small by design and never needs the flag)."""
    return args.smoke or args.sweep == "smoke"


def report_on_parent(tracker: Any, sweep_name: str, status: str) -> None:
    """The report (orchestrator.report) of this run, on its parent run and in reports/NAME/;
    `status` is the one the parent run is about to end with."""
    from orchestrator.report.render import report_sweep_run

    reported = report_sweep_run(tracker.tracking_uri, sweep_name, tracker.parent_run_id,
                                Path("reports") / sweep_name, status)
    if reported is not None:
        markdown, report = reported
        for recommendation in report.recommendations:
            print(f"recommendation: {recommendation.sentence(report.metric)}")
        print(f"report: {markdown} (also on the parent run under report/)")
    print(f"parent run: {run_link(tracker.tracking_uri, tracker.experiment_id, tracker.parent_run_id)}")


def print_mlflow_links(tracker: Any, grid: Grid) -> None:
    """Save the runs table's view (the sweep's metrics and axes as columns, its metrics as the first
    charts) and print the links that open it and the parent run in MLflow's model-training view."""
    from orchestrator.tracking import TAG_STATUS

    sweep = SWEEPS[tracker.sweep_name]
    evaluation_metrics = [claim.metric for claim in sweep.claims] or [
        metrics.evaluation_metric(str(config.eval), metrics.TEST_BALANCED_ACCURACY)
        for config in grid.trial_configs()[:1]]
    view = runs_table_view(evaluation_metrics, metrics.KNN_VAL_ACCURACY,
                           grid.display_axes, [TAG_STATUS])
    tracker.save_runs_table_view(view)
    if not tracker.tracking_uri.startswith(("http://", "https://")):
        print(f"MLflow UI: {UI_COMMAND.format(uri=redact_uri(tracker.tracking_uri))}, then open")
    print(f"runs table: {runs_table_link(tracker.tracking_uri, tracker.experiment_id)}")
    print(f"charts:     {runs_table_link(tracker.tracking_uri, tracker.experiment_id, charts=True)}")
    print(f"parent run: {run_link(tracker.tracking_uri, tracker.experiment_id, tracker.parent_run_id)}")


def table_csv(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(",".join(row) for row in [header, *rows]) + "\n"


if __name__ == "__main__":
    sys.exit(main())
