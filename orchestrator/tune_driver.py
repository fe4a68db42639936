"""The Ray Tune wiring: how a sweep's trials are set up and run, and what is read from their results.

Setup: each Tune trial runs a driver function that launches a TorchTrainer. This is the Train
V2 idiom: the driver builds a `TorchTrainer` whose run name is derived from the Tune trial id
(stable across `Tuner.restore`, so a restarted trial finds its checkpoints), and
`TuneReportCallback` forwards rank 0's reports to Tune. Trials are named by their axis values
(`trial_name`).

Results: the sweep's interruption by a signal (`Interruption`, Tune's graceful stop), the final
table's rows from Tune's results (`summarize`), a search's best trial (`report_best`) and a
trial's name read back from its folder (`trial_display_name`).
"""

import functools
import math
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import ray
import ray.exceptions
import ray.train
import ray.tune
from ray import tune
from ray.train.torch import TorchTrainer
from ray.tune.experiment import Trial
from ray.tune.integration.ray_train import TuneReportCallback

from orchestrator.datasets import PoolKey
from orchestrator.grid import Grid, flat_value, nest, running_config, short
from orchestrator.resources import ResourcePlan
from orchestrator.tracking import MlflowTrialLogger, SweepTracker
from orchestrator.trial_status import trial_status
from trainables import metrics
from trainables.config import TrialConfig
from trainables.failures import no_retry_can_fix
from trainables.loop import train_loop_per_worker
from trainables.redaction import redact_values
from trainables.shipped_priors import PriorKey

TRAIN_RUNS_FOLDER = "train_runs"
DRIVER_MEMORY_BYTES = 64 * 1024**2
HEAD_NODE_RESOURCE = "node:__internal_head__"  # Ray gives the head node 1 of it
# Final table columns: the trial's own evaluation protocol's metrics, then the last epoch's.
TABLE_EVALUATION_METRICS = (metrics.TEST_ACCURACY, metrics.TEST_BALANCED_ACCURACY,
                            metrics.TEST_MACRO_F1, metrics.TEST_AUC)
TABLE_EPOCH_METRICS = (metrics.KNN_VAL_ACCURACY, metrics.PRETRAIN_COLLAPSE_STD)
TABLE_HEADER = ("status", "eval", *TABLE_EVALUATION_METRICS, *TABLE_EPOCH_METRICS)


class FailOnce(ray.train.UserCallback):
    """Ends a trial at its first error that no retry can fix (trainables.failures): Ray Train would
    restart its workers `max_failures` times and fail the same way each time. A lost worker (an
    actor that died, a preempted node) is left to Ray's failure policy, which restarts it.

    Runs in the Train controller: the error raised here ends the run there (a ControllerError is
    not retried), and `run_trial` re-raises the worker's own exception, so its words arrive."""

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        errors = list(worker_exceptions.values())
        if any(isinstance(error, ray.exceptions.RayActorError) for error in errors):
            return  # a lost worker: other ranks' errors are its collateral
        for error in errors:
            if no_retry_can_fix(error):
                raise error


def build_trainer(config: TrialConfig, run_name: str, storage_path: str, plan: ResourcePlan,
                  callbacks: list | None = None, shared_data: ray.ObjectRef | None = None,
                  max_failures: int = 0, shared_weights: ray.ObjectRef | None = None,
                  shared_pretraining: ray.ObjectRef | None = None,
                  shared_prior: ray.ObjectRef | None = None) -> TorchTrainer:
    """The TorchTrainer of one trial. The same run name and storage path resume its checkpoints.

    `shared_data`: the evaluation dataset's decoded pool in the object store (orchestrator.datasets),
    so workers on any node train without reading data_root; None: each worker loads the dataset
    itself. `shared_pretraining`: the pool of the trial's own pretraining dataset, if it has one.
    `max_failures`: how often a lost worker (preemption, OOM kill, crash) restarts the worker
    group from the latest checkpoint before the trial fails.
    `shared_weights`: the weights an MLflow URI in weights_path names (orchestrator.lineage).
    `shared_prior`: the prior's file, found on the driver's disk (orchestrator.priors).
    """
    resources_per_worker = {"CPU": plan.cpus_per_worker}
    if plan.use_gpu:
        resources_per_worker["GPU"] = plan.gpus_per_worker
    return TorchTrainer(
        functools.partial(train_loop_per_worker, shared_data=shared_data, shared_weights=shared_weights,
                          shared_pretraining=shared_pretraining, shared_prior=shared_prior),
        train_loop_config=config.to_dict(),
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.num_workers, use_gpu=plan.use_gpu, resources_per_worker=resources_per_worker,
            placement_strategy=plan.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=os.path.join(storage_path, TRAIN_RUNS_FOLDER),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            callbacks=[*(callbacks or []), FailOnce()],
        ),
    )


def run_trial(config: dict[str, Any], storage_path: str, plan: ResourcePlan,
              method_params: dict[str, dict[str, Any]], shared_data: dict[PoolKey, ray.ObjectRef],
              max_failures: int = 0, shared_weights: dict[str, ray.ObjectRef] | None = None,
              shared_priors: dict[PriorKey, ray.ObjectRef] | None = None) -> None:
    """The Tune trainable: resolve the trial's config once (grid.running_config, as the MLflow
    logger records it), then run its TorchTrainer on that config to the end."""
    trial_config = running_config(config, method_params, plan)
    trial_id = ray.tune.get_context().get_trial_id()
    trainer = build_trainer(trial_config, f"trial_{trial_id}", storage_path, plan,
                            callbacks=[TuneReportCallback()],
                            shared_data=shared_data.get(PoolKey.evaluation(trial_config)),
                            max_failures=max_failures,
                            shared_weights=(shared_weights or {}).get(trial_config.resolved_weights_path),
                            shared_pretraining=shared_data.get(PoolKey.pretraining(trial_config)),
                            shared_prior=(shared_priors or {}).get(PriorKey.of(trial_config)))
    try:
        trainer.fit()
    except ray.train.ControllerError as error:
        if no_retry_can_fix(error.controller_failure):  # FailOnce ended it: the worker's own words
            raise error.controller_failure from None
        raise


# Axes whose values say what they are ("simclr", "imagenet", "resnet50", "digits"): named by value
# alone. Every other axis is key=value, with these short keys for the common ones.
SELF_DESCRIBING_AXES = ("method", "init", "backbone", "dataset")
SHORT_KEYS = {"pretrain_dataset": "pretrain", "batch_size": "bs", "image_size": "px", "learning_rate": "lr",
              "weight_decay": "wd", "epochs": "ep", "label_fraction": "labels", "warmup_epochs": "warmup",
              "num_workers": "workers"}


def trial_name(trial: Trial, axes: list[str]) -> str:
    """Deterministic, short and readable: the axis values, then the trial's index in the sweep,
    e.g. "simclr_bs=64_0" (MLflow's runs table cuts long names, so two trials must differ early).

    (A grid's Tune trial id is "<random experiment prefix>_<index>"; the prefix is left out so that
    a re-run names its trials the same way. A searcher's ids have no index: they stay whole. Ray
    Train run names keep the whole id.) Characters that are unsafe in a folder name become "-";
    "+" is safe and stays, or 1e+12 would read as 1e-12.
    """
    parts = []
    for axis in axes:
        key, value = axis.split(".")[-1], short(redact_values(flat_value(trial.config, axis)))
        parts.append(value if key in SELF_DESCRIBING_AXES else f"{SHORT_KEYS.get(key, key)}={value}")
    suffix = trial.trial_id.rsplit("_", 1)[-1]  # a search sweep's trial ids are random: "583547f7"
    index = str(int(suffix)) if suffix.isdigit() else suffix
    return re.sub(r"[^A-Za-z0-9_.=+-]", "-", "_".join([*parts, index]))


DISTRIBUTIONS = {"uniform": tune.uniform, "loguniform": tune.loguniform, "int": tune.randint}


def param_space(grid: Grid) -> dict[str, Any]:
    """The Tune search space: fixed params as constants, each axis a grid_search, each searched
    parameter a distribution for Optuna."""
    flat = {**grid.params, **{axis: tune.grid_search(values) for axis, values in grid.axes.items()}}
    if grid.search:
        for key, (kind, low, high) in grid.search.space.items():
            flat[key] = DISTRIBUTIONS[kind](low, high)
    return nest(flat)


def search_config(grid: Grid, plan: ResourcePlan, axes: list[str]) -> tune.TuneConfig:
    """Grid sweeps enumerate their trials; search sweeps let Optuna's TPE propose and ASHA stop."""
    common = {"max_concurrent_trials": plan.max_concurrent_trials,
              "trial_name_creator": lambda trial: trial_name(trial, axes),
              # Folders keep Tune's whole id: a re-run must never write into an old run's folder.
              "trial_dirname_creator": lambda trial: f"{trial_name(trial, axes)}_{trial.trial_id}"}
    if grid.search is None:
        merged = grid.merged_trials()
        if len(merged) == len(grid.cells()) and not grid.paired:
            return tune.TuneConfig(**common)
        # Cells no axis can change run once, and paired axes are zipped, not crossed: each trial
        # that runs is a preset point that fixes every grid axis, so the grid yields exactly these
        # trials (Grid.merged_trials).
        from ray.tune.search.basic_variant import BasicVariantGenerator

        points = [nest(entry.cells[0]) for entry in merged]
        return tune.TuneConfig(search_alg=BasicVariantGenerator(points_to_evaluate=points),
                               num_samples=len(points), **common)
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    epochs = int(grid.params.get("epochs", TrialConfig.epochs))
    return tune.TuneConfig(
        search_alg=OptunaSearch(metric=grid.search.metric, mode=grid.search.mode, seed=0),
        scheduler=ASHAScheduler(metric=grid.search.metric, mode=grid.search.mode, time_attr=metrics.EPOCH,
                                # epochs + 1: at max_t ASHA stops a trial, and the last epoch's
                                # report comes before the evaluation's.
                                max_t=epochs + 1, grace_period=1),
        num_samples=grid.num_samples, **common,
    )


def experiment_path(storage_path: str, sweep_name: str) -> str:
    return os.path.join(storage_path, sweep_name)


def can_restore(storage_path: str, sweep_name: str) -> bool:
    """Whether the storage holds Tune state of this sweep (an earlier run --resume continues)."""
    return tune.Tuner.can_restore(experiment_path(storage_path, sweep_name))


def run_tune(sweep_name: str, grid: Grid, plan: ResourcePlan, storage_path: str,
             logger: MlflowTrialLogger, resume: bool, shared_data: dict[PoolKey, ray.ObjectRef],
             max_failures: int = 0,
             shared_weights: dict[str, ray.ObjectRef] | None = None,
             progress: tune.Callback | None = None,
             shared_priors: dict[PriorKey, ray.ObjectRef] | None = None) -> tune.ResultGrid:
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, storage_path=storage_path, plan=plan,
                             method_params=grid.method_params, shared_data=shared_data,
                             max_failures=max_failures, shared_weights=shared_weights,
                             shared_priors=shared_priors),
        # The driver only waits on its workers: it holds no CPU they could need. Tune refuses
        # an empty request, so it asks for a little memory instead; and a sliver of the head
        # node, so that no driver is lost with a preempted worker node (its workers restart).
        resources={"CPU": 0, "memory": DRIVER_MEMORY_BYTES, HEAD_NODE_RESOURCE: 0.001},
    )
    if resume:
        tuner = tune.Tuner.restore(experiment_path(storage_path, sweep_name), trainable,
                                   resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(grid),
            tune_config=search_config(grid, plan, grid.display_axes),
            run_config=tune.RunConfig(
                name=sweep_name,
                storage_path=storage_path,
                callbacks=[logger, *([progress] if progress else [])],
                failure_config=tune.FailureConfig(max_failures=0),
                verbose=1,
            ),
        )
    return tuner.fit()


class Interruption:
    """SIGINT (Ctrl-C) or SIGTERM during the sweep: the first asks Tune to stop the trials and save
    the experiment, so --resume continues it; a second SIGINT stops at once. `signal` records which.

    Tune's own SIGINT handler would stop it just as well but leaves no trace of the interruption,
    so Tune's is off (TUNE_DISABLE_SIGINT_HANDLER) and this one calls the handler Tune keeps on
    SIGUSR1 for the same graceful stop.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}
        self.notify: Any = None  # where to say it (the progress view's note), else stderr

    def __enter__(self) -> "Interruption":
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        self._previous = {number: signal.signal(number, self._handle)
                          for number in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame: Any) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = number
        message = (f"{signal.Signals(number).name}: stopping the trials and saving the sweep's state "
                   "(Ctrl-C again to stop at once)")
        if self.notify is not None:
            self.notify(message)
        else:
            print(f"\n{message}", file=sys.stderr, flush=True)
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if not callable(tune_stop):  # Tune is not running yet (or any more)
            raise KeyboardInterrupt
        tune_stop(signal.SIGUSR1, frame)


def trial_display_name(result: Any) -> str:
    """The trial's deterministic name (its MLflow run name, `trial_name`): its folder name less
    Tune's id, which is "<prefix>_<index>" in a grid and one random word in a search ("583547f7")."""
    if not result.path:
        return "?"
    return re.sub(r"_(?:[0-9a-f]+_\d{5}|[0-9a-f]{8})$", "", Path(result.path).name)


def summarize(results: Any, axes: list[str], interrupted: bool = False) -> tuple[list[list[str]], bool]:
    """The final table's rows (trial, axis values, then TABLE_HEADER's columns) and whether any
    trial failed."""
    rows, any_failed = [], False
    # In trial order; which_prior's stage 1 (experiment <sweep>) before stage 2 (<sweep>-pretrain).
    def order(result: Any) -> tuple[str, str]:
        return str(Path(str(result.path)).parent), str(result.path).rsplit("_", 1)[-1]

    for result in sorted(results, key=order):
        trial = trial_display_name(result)
        result_metrics = last_values(result)
        status = trial_status(result_metrics, failed=result.error is not None, interrupted=interrupted)
        any_failed = any_failed or result.error is not None
        protocol = result.config.get("eval", TrialConfig.eval)
        values = [format_metric(result_metrics.get(metrics.evaluation_metric(protocol, suffix)))
                  for suffix in TABLE_EVALUATION_METRICS]
        values += [format_metric(result_metrics.get(name)) for name in TABLE_EPOCH_METRICS]
        rows.append([trial, *(short(flat_value(result.config, a)) for a in axes), status, protocol, *values])
    return rows, any_failed


def last_values(result: Any) -> dict[str, Any]:
    """Each metric's last reported value: per-epoch metrics are absent from the final report."""
    history = result.metrics_dataframe
    values = dict(result.metrics or {})
    if history is not None:
        for name in metrics.PER_EPOCH:
            if name in history and history[name].notna().any():
                values.setdefault(name, history[name].dropna().iloc[-1])
    return values


def format_metric(value: Any) -> str:
    if isinstance(value, int | float) and math.isfinite(value):
        return f"{value:.4f}"
    return "-"


def readable(value: Any) -> Any:
    """Floats to 4 significant digits for the terminal (MLflow keeps full precision)."""
    return f"{value:.4g}" if isinstance(value, float) else value


def best_result(results: list[ray.tune.Result], metric: str, mode: str) -> ray.tune.Result | None:
    """The trial whose last reported `metric` is best (ResultGrid.get_best_result's "last" scope,
    over the stages' results together); None when no trial reported a finite value."""
    scored = []
    for result in results:
        value = last_values(result).get(metric)
        if isinstance(value, int | float) and math.isfinite(value):
            scored.append((value, result))
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda pair: pair[0])[1]


def report_best(results: list[ray.tune.Result], grid: Grid, tracker: SweepTracker) -> None:
    """Print the search's best trial config and log it on the parent run."""
    metric = grid.search.metric
    best = best_result(results, metric, grid.search.mode)
    if best is None:
        print(f"best: none, no trial reported a finite {metric}")
        return
    best_value = float(last_values(best)[metric])
    values = {key: flat_value(best.config, key) for key in grid.search.space}
    print(f"best ({metric} = {readable(best_value)}): "
          + ", ".join(f"{key}={readable(redact_values(value))}" for key, value in values.items()))
    tracker.log_parent_dict({"metric": metric, "value": best_value, "config": redact_values(best.config)},
                            "best_config.json")
    for key, value in values.items():
        tracker.tag_parent(f"best.{key}", str(redact_values(value)))
