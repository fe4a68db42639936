"""From a sweep plus command-line overrides to validated trial configs, before anything starts."""

import dataclasses
import functools
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.memory import fit_to_plan
from orchestrator.resources import ResourcePlan
from orchestrator.screening import available_priors
from search_spaces import Search, Sweep
from trainables import metrics
from trainables.config import FIELD_TYPES, ConfigError, TrialConfig, coerce, coerce_method_param
from trainables.data import DATASETS
from trainables.methods import METHODS

METHOD_PARAMS_PREFIX = "method_params."
MERGED_TRIALS_FILE = "merged_trials.json"  # on the parent run: Grid.served_cells, read by the report
# What only pretraining reads: a method that does not pretrain (`none`) gives the same trial
# whatever these are (batch_size too, unless fine-tuning reads it: see run_key).
PRETRAINING_ONLY = ("batch_size", "epochs", "learning_rate", "learning_rate_scaling", "weight_decay",
                    "optimizer", "momentum", "warmup_epochs", "knn_every", "activation_checkpointing",
                    "compile", "compile_backend", "method_params")


@dataclass(frozen=True)
class MergedTrial:
    """One trial that runs, and every grid cell it serves (its own first): cells no axis can change."""

    trial: dict[str, Any]  # the nested config that runs (the first cell's)
    cells: list[dict[str, Any]]  # each served cell's axis values, flat keys


def run_key(trial: dict[str, Any]) -> str:
    """Equal for two trial dicts exactly when they run the same computation: the validated config,
    with what only pretraining reads set to its default for a method that does not pretrain."""
    config = TrialConfig.from_dict(trial)
    if not METHODS[config.method].pretrains:
        ignored = [key for key in PRETRAINING_ONLY if not (key == "batch_size" and config.eval == "finetune")]
        config = dataclasses.replace(config, **{key: getattr(TrialConfig(), key) for key in ignored})
    return json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)


@dataclass(frozen=True)
class Grid:
    axes: dict[str, list[Any]]  # flat keys ("method_params.temperature" for method options)
    params: dict[str, Any]
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per method
    search: Search | None = None  # Optuna + ASHA instead of (on top of) the grid
    num_samples: int = 1  # trials per grid point drawn by the search
    screened_out: tuple[str, ...] = ()  # which_prior: priors left out of `init`, and why (one line each)
    paired: tuple[tuple[str, ...], ...] = ()  # axes that vary together (Sweep.paired): zipped, not crossed

    @property
    def display_axes(self) -> list[str]:
        """What varies between trials: the grid's axes, then the searched parameters."""
        return [*self.axes, *(self.search.space if self.search else {})]

    @property
    def num_trials(self) -> int:
        """The trials that run (merged cells run once)."""
        return len(self.merged_trials()) * self.num_samples

    def cells(self) -> list[dict[str, Any]]:
        """Every grid cell's axis values (flat keys), in grid order: the product of the axes, where
        a group of paired axes counts as one axis whose values are their rows."""
        group_of = {axis: group for group in self.paired for axis in group}
        factors = [[dict(zip(group, row, strict=True))
                    for row in zip(*(self.axes[name] for name in group), strict=True)]
                   for group in dict.fromkeys(group_of.get(axis, (axis,)) for axis in self.axes)]
        cells = [{key: value for part in parts for key, value in part.items()}
                 for parts in itertools.product(*factors)]
        return [{axis: cell[axis] for axis in self.axes} for cell in cells]

    def trial_dicts(self) -> list[dict[str, Any]]:
        """Every cell's config dict (nested, as TrialConfig.from_dict takes it), in grid order."""
        return [with_method_params(nest({**self.params, **cell}), self.method_params)
                for cell in self.cells()]

    def merged_trials(self) -> list[MergedTrial]:
        """The trials that run, each with the cells it serves, in grid order of their first cell.

        A search sweep merges nothing: its searcher draws each trial's values, not the grid."""
        return list(self._merged_trials)

    @functools.cached_property
    def _merged_trials(self) -> tuple[MergedTrial, ...]:
        """Built once per grid (a frozen grid's trials never change; dataclasses.replace makes a
        new grid, with its own)."""
        if self.search is not None:
            return tuple(MergedTrial(trial, [cell]) for trial, cell in zip(self.trial_dicts(), self.cells(),
                                                                            strict=True))
        merged: dict[str, MergedTrial] = {}
        for trial, cell in zip(self.trial_dicts(), self.cells(), strict=True):
            merged.setdefault(run_key(trial), MergedTrial(trial, [])).cells.append(cell)
        return tuple(merged.values())

    @property
    def num_merged(self) -> int:
        """How many cells run in another cell's trial."""
        return sum(len(merged.cells) - 1 for merged in self.merged_trials())

    def trial_configs(self) -> list[TrialConfig]:
        """The configs of the trials that run (every cell is validated on the way), built once per
        grid: the pre-flight, the plan, the table and the weights all read these."""
        return list(self._trial_configs)

    @functools.cached_property
    def _trial_configs(self) -> tuple[TrialConfig, ...]:
        return tuple(TrialConfig.from_dict(merged.trial) for merged in self._merged_trials)

    def served_cells(self) -> list[dict[str, list[dict[str, str]]]]:
        """For the parent run: each merged trial's axis values and the other cells it serves, as
        MLflow's params hold them (strings), so the report can give every cell its value."""
        def as_params(cell: dict[str, Any]) -> dict[str, str]:
            return {key: str(value) for key, value in cell.items()}
        return [{"runs": [as_params(merged.cells[0])],
                 "serves": [as_params(cell) for cell in merged.cells[1:]]}
                for merged in self.merged_trials() if len(merged.cells) > 1]


def with_method_params(trial: dict[str, Any], per_method: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The trial config with the sweep's per-method hyperparameters under its own (--set wins).

    Tune's search space holds only the axes and fixed params: running_config applies this to
    each Tune trial's config.
    """
    defaults = per_method.get(trial.get("method", TrialConfig.method), {})
    if defaults:
        trial = {**trial, "method_params": {**defaults, **trial.get("method_params", {})}}
    return trial


def running_config(trial: dict[str, Any], per_method: dict[str, dict[str, Any]],
                   plan: ResourcePlan | None) -> TrialConfig:
    """The one place a Tune trial's config becomes the TrialConfig its workers run: the sweep's
    per-method hyperparameters merged in (with_method_params), validated, fitted to the plan's GPUs
    (orchestrator.memory; None: as configured), and every value the method decides written in
    (TrialConfig.resolved). The Tune driver hands exactly this to the workers, and the MLflow logger
    records exactly this; both call it with the same trial config, sweep and plan."""
    config = TrialConfig.from_dict(with_method_params(trial, per_method))
    if plan is not None:
        (config, _), = fit_to_plan([config], plan)
    return config.resolved()


def short(value: Any) -> str:
    """An axis value as trial names and tables show it: floats to 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{"method_params.temperature": 0.1} -> {"method_params": {"temperature": 0.1}}."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        if key.startswith(METHOD_PARAMS_PREFIX):
            nested.setdefault("method_params", {})[key.removeprefix(METHOD_PARAMS_PREFIX)] = value
        else:
            nested[key] = value
    return nested


def flat_value(config: dict[str, Any], flat_key: str) -> Any:
    """The value of a flat key ("method_params.temperature") in a nested config (nest's inverse)."""
    value: Any = config
    for part in flat_key.split("."):
        value = value[part]
    return value


def parse_override(text: str) -> tuple[str, list[str]]:
    """"KEY=V1,V2" -> ("KEY", ["V1", "V2"])."""
    key, separator, values = text.partition("=")
    if not separator or not key or not values:
        raise ConfigError(f"bad --set {text!r}; write KEY=VALUE or KEY=VALUE1,VALUE2")
    return key.strip(), [value.strip() for value in values.split(",")]


def apply_overrides(sweep: Sweep, overrides: list[str], smoke: bool = False) -> Grid:
    """The sweep's grid with each --set applied: one value fixes a parameter, several make an axis.

    With `smoke`, the sweep's own scaled-down axes and parameters come first.
    """
    axes = {**sweep.grid, **(sweep.smoke_grid if smoke else {})}
    params = {**sweep.params, **(sweep.smoke_params if smoke else {})}
    seen: set[str] = set()
    for text in overrides:
        key, raw_values = parse_override(text)
        if key not in FIELD_TYPES and not key.startswith(METHOD_PARAMS_PREFIX):
            raise ConfigError(f"unknown --set key {key!r}; valid keys: {', '.join(FIELD_TYPES)}")
        if key == "method_params":
            raise ConfigError("set method options one by one: --set method_params.NAME=VALUE")
        if key in seen:
            raise ConfigError(f"--set {key} is given twice; give it once, with every value: "
                              f"--set {key}=VALUE1,VALUE2")
        seen.add(key)
        values = [typed_value(key, raw, axes, params) for raw in raw_values]
        if duplicates := sorted({str(value) for value in values if values.count(value) > 1}):
            raise ConfigError(f"--set {text!r} repeats {', '.join(duplicates)}; each value once (a trial "
                              "would run twice, or name a seed axis seed=0,1,2)")
        axes.pop(key, None)
        params.pop(key, None)
        if len(values) == 1:
            params[key] = values[0]
        else:
            axes[key] = values
    paired = paired_groups(sweep, axes, seen)
    search = sweep.search
    num_samples = (search.smoke_num_samples if smoke else search.num_samples) if search else 1
    for key in (search.space if search else {}):
        if key not in FIELD_TYPES and not key.startswith(METHOD_PARAMS_PREFIX):
            raise ConfigError(f"unknown searched key {key!r} in sweep {sweep.name}; valid keys: "
                              f"{', '.join(FIELD_TYPES)}")
    if search:
        params = with_monitor_for_search(search, axes, params, sweep.name)
    screened_out: list[str] = []
    if sweep.screening is not None and "init" not in seen:  # --set init=... screens exactly those
        axes["init"], screened_out = available_priors(axes["init"], params)
        if not axes["init"]:
            raise ConfigError(f"no prior of sweep {sweep.name} is available here "
                              f"({'; '.join(screened_out)}); "
                              "name some with --set init=...")
    grid = Grid(axes=axes, params=params, method_params=sweep.method_params, search=search,
                num_samples=num_samples, screened_out=tuple(screened_out), paired=paired)
    grid.trial_configs()  # validate every trial now: nothing starts with a bad config
    return grid


def paired_groups(sweep: Sweep, axes: dict[str, list[Any]],
                  overridden: set[str]) -> tuple[tuple[str, ...], ...]:
    """The sweep's groups of paired axes that still stand: a group whose axes the command line sets
    all together is replaced by them (and no longer paired); setting only some is refused, since
    the pairs would silently cross."""
    groups = []
    for group in sweep.paired:
        if (set_here := [axis for axis in group if axis in overridden]):
            if len(set_here) < len(group):
                rows = ", ".join(" -> ".join(str(value) for value in row)
                                 for row in zip(*(sweep.grid[axis] for axis in group), strict=True))
                raise ConfigError(f"--set {', '.join(set_here)} alone would cross sweep {sweep.name}'s pairs "
                                  f"({', '.join(group)}: {rows}); set them together: "
                                  + " ".join(f"--set {axis}=VALUE" for axis in group))
            continue
        if any(axis not in axes for axis in group) or len({len(axes[axis]) for axis in group}) != 1:
            raise ConfigError(f"sweep {sweep.name} pairs axes {', '.join(group)}: each must be a grid axis "
                              "with as many values as the others")
        groups.append(group)
    return tuple(groups)


def with_monitor_for_search(search: Search, axes: dict[str, list[Any]], params: dict[str, Any],
                            sweep_name: str) -> dict[str, Any]:
    """A search on the kNN monitor monitors every epoch (knn_every=1).

    Tune refuses a result without the metric its scheduler and searcher read (strict metric
    checking), and OptunaSearch reads it from every result; ASHA alone would skip such results.
    So an epoch without a kNN value cannot reach a search that decides on it.
    """
    if search.metric != metrics.KNN_VAL_ACCURACY:
        return params
    chosen = axes.get("knn_every") or [params.get("knn_every", 1)]
    if any(value != 1 for value in chosen):
        raise ConfigError(f"bad value {chosen[0] if len(chosen) == 1 else chosen!r} for knn_every in sweep "
                          f"{sweep_name}: its search decides on {search.metric} every epoch; use knn_every=1")
    return {**params, "knn_every": 1}


def typed_value(key: str, raw: str, axes: dict[str, list[Any]], params: dict[str, Any]) -> Any:
    if not key.startswith(METHOD_PARAMS_PREFIX):
        return coerce(key, raw)
    methods = axes.get("method") or [params.get("method", TrialConfig.method)]
    name = key.removeprefix(METHOD_PARAMS_PREFIX)
    return [coerce_method_param(method, name, raw) for method in methods][0]


def substitute_missing_datasets(grid: Grid, fallback: str = "shapes",
                                pretrain_fallback: str = "digits") -> tuple[Grid, list[str]]:
    """For --smoke: every evaluation dataset not on disk becomes `fallback`; a pretraining dataset
    not on disk becomes `fallback` where it is its evaluation's dataset, else `pretrain_fallback`,
    so that a cross-dataset cell still pretrains on other images than it evaluates on. Paired axes
    are substituted row by row (equal rows then merge). Returns the grid and what changed."""
    data_root = Path(str(grid.params.get("data_root", TrialConfig.data_root)))
    pretrain_root = Path(str(grid.params.get("pretrain_data_root") or data_root))
    changed: list[str] = []

    def available(name: str, root: Path, replacement: str) -> str:
        if DATASETS[name].on_disk(root):
            return name
        changed.append(f"{name} (not under {root}/) -> {replacement}")
        return replacement

    def substituted(values: dict[str, Any], evaluations: set[str]) -> dict[str, Any]:
        """One row of dataset keys (dataset and/or pretrain_dataset) with the missing ones replaced."""
        row = dict(values)
        if "dataset" in row:
            row["dataset"] = available(row["dataset"], data_root, fallback)
        if row.get("pretrain_dataset") is not None:
            name = row["pretrain_dataset"]
            row["pretrain_dataset"] = available(name, pretrain_root,
                                                fallback if name in evaluations else pretrain_fallback)
        return row

    axes, params = dict(grid.axes), dict(grid.params)
    all_evaluations = set(axes.get("dataset") or [params.get("dataset", TrialConfig.dataset)])
    keys = ("dataset", "pretrain_dataset")
    for group in [*grid.paired, *((key,) for key in keys if not any(key in g for g in grid.paired))]:
        names = [name for name in group if name in keys]
        if not names or any(name not in axes for name in names):
            continue
        rows = []
        for row in (dict(zip(group, values, strict=True))
                    for values in zip(*(axes[name] for name in group), strict=True)):
            evaluations = {row["dataset"]} if "dataset" in row else all_evaluations
            rows.append(tuple(substituted(row, evaluations).values()))
        rows = list(dict.fromkeys(rows))  # equal after substitution: one cell
        axes.update({name: [row[position] for row in rows] for position, name in enumerate(group)})
    fixed = {key: params[key] for key in keys if key in params and key not in axes}
    if "dataset" not in axes:
        fixed["dataset"] = params.get("dataset", TrialConfig.dataset)
    params.update(substituted(fixed, all_evaluations))
    return dataclasses.replace(grid, axes=axes, params=params), list(dict.fromkeys(changed))
