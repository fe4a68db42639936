"""The report's figures: convergence (a per-epoch metric, one line per trial, coloured by one axis
and styled by another)
and, for trials that measured it, per-block similarity by depth.

Uses matplotlib's object API with the Agg canvas (no pyplot, no global figure state), so it is
safe in a headless process and in threads.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from orchestrator.report.runs import STATUS_FINISHED, TrialRun
from trainables import metrics

STATUS_MARKERS = {STATUS_FINISHED: "o", "collapsed": "x", "failed": "s"}  # anything else: "^"
LINE_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))  # the style axis' values


def axes_label(params: Mapping[str, str], axes: Sequence[str]) -> str:
    return ", ".join(f"{axis}={params.get(axis, '')}" for axis in axes)


def convergence_styles(trials: Sequence[TrialRun], colour_axes: Sequence[str], style_axis: str | None
                       ) -> tuple[dict[str, str], dict[str, str | tuple]]:
    """Colour per value of `colour_axes` (together), line style per value of `style_axis`, both in
    the trials' order: {label: colour}, {style value: line style}."""
    colour_labels = dict.fromkeys(axes_label(trial.params, colour_axes) for trial in trials)
    style_values = dict.fromkeys(trial.params.get(style_axis, "") for trial in trials) if style_axis else {}
    return ({label: f"C{index % 10}" for index, label in enumerate(colour_labels)},
            {value: LINE_STYLES[index % len(LINE_STYLES)] for index, value in enumerate(style_values)})


def convergence_figure(trials: Sequence[TrialRun], histories: Mapping[str, Sequence[tuple[int, float]]],
                       metric: str, colour_axes: Sequence[str], style_axis: str | None) -> Figure:
    """One line per trial: colour by the values of `colour_axes`, line style by `style_axis`, so
    every axis that varies tells its lines apart; the marker says how the trial ended."""
    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    plotted = [trial for trial in trials if histories.get(trial.run_id)]
    colours, styles = convergence_styles(plotted, colour_axes, style_axis)
    for trial in plotted:
        steps, values = zip(*histories[trial.run_id], strict=True)
        axes.plot(steps, values, color=colours[axes_label(trial.params, colour_axes)],
                  linestyle=styles.get(trial.params.get(style_axis, ""), "-") if style_axis else "-",
                  marker=STATUS_MARKERS.get(trial.status, "^"), markersize=4, linewidth=1.2, alpha=0.85)
    if not plotted:
        axes.text(0.5, 0.5, f"no {metric} history logged", ha="center", va="center", transform=axes.transAxes)
    handles = legend_handles(plotted, colours, styles, style_axis) if colour_axes or style_axis else []
    if handles:
        axes.legend(handles=handles, fontsize="small", loc="best")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch (0 = the initialization)")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} per epoch, one line per trial")
    axes.grid(alpha=0.3)
    return figure


def legend_handles(trials: Sequence[TrialRun], colours: Mapping[str, str], styles: Mapping[str, str | tuple],
                   style_axis: str | None) -> list[Line2D]:
    """Colour entries, line-style entries (grey) and, when some trial did not finish, marker entries."""
    handles = [Line2D([], [], color=colour, label=label) for label, colour in colours.items() if label]
    handles += [Line2D([], [], color="grey", linestyle=style, label=f"{style_axis}={value}")
                for value, style in styles.items()]
    statuses = sorted({trial.status for trial in trials})
    if statuses != [STATUS_FINISHED]:
        handles += [Line2D([], [], color="grey", linestyle="", marker=STATUS_MARKERS.get(status, "^"),
                           label=status) for status in statuses]
    return handles


def write_convergence_png(path: Path, trials: Sequence[TrialRun],
                          histories: Mapping[str, Sequence[tuple[int, float]]], metric: str,
                          colour_axes: Sequence[str], style_axis: str | None) -> None:
    convergence_figure(trials, histories, metric, colour_axes, style_axis).savefig(path, dpi=120)


def has_block_similarity(trials: Sequence[TrialRun]) -> bool:
    """Whether any trial logged per-block similarity (its `block_similarity` setting was on)."""
    return any(name.startswith(metrics.SIMILARITY_PREFIX + "/") for trial in trials for name in trial.metrics)


def similarity_by_depth_figure(trials: Sequence[TrialRun], colour_axis: str | None,
                               colour_values: Sequence[str]) -> Figure:
    """One panel per (comparison, measure) the trials logged: similarity per block, the input side
    on the left, one line per usable trial coloured by `colour_axis`; each trial's random-vs-random
    baseline as a grey dotted line."""
    compared = [comparison for comparison in (metrics.SIMILARITY_PRETRAINING, metrics.SIMILARITY_FINETUNING)
                if any(metrics.similarity_metric(comparison, measure, block) in trial.metrics
                       for trial in trials for measure in metrics.SIMILARITY_MEASURES
                       for block in metrics.SIMILARITY_BLOCKS)] or [metrics.SIMILARITY_RANDOM_BASELINE]
    measures = metrics.SIMILARITY_MEASURES
    figure = Figure(figsize=(4.5 * len(measures), 3.6 * len(compared)), layout="constrained")
    FigureCanvasAgg(figure)
    colours = {value: f"C{index % 10}" for index, value in enumerate(colour_values)}
    usable = [trial for trial in trials if trial.usable]
    for row, comparison in enumerate(compared):
        for column, measure in enumerate(measures):
            axes = figure.add_subplot(len(compared), len(measures), row * len(measures) + column + 1)
            for trial in usable:
                colour = colours.get(trial.params.get(colour_axis, ""), "C0") if colour_axis else "C0"
                plot_by_depth(axes, trial, metrics.SIMILARITY_RANDOM_BASELINE, measure, "grey", ":")
                plot_by_depth(axes, trial, comparison, measure, colour, "-")
            axes.set_xticks(range(len(metrics.SIMILARITY_BLOCKS)), metrics.SIMILARITY_BLOCKS)
            axes.set_ylim(0, 1.05)
            axes.set_ylabel(f"{measure} similarity")
            axes.set_title(f"{measure}: {comparison.replace('_', ' ')}", fontsize="medium")
            axes.grid(alpha=0.3)
    handles = [Line2D([], [], color=colours[value], label=f"{colour_axis}={value}")
               for value in colour_values] if colour_axis else []
    handles.append(Line2D([], [], color="grey", linestyle=":", label="random vs random init (baseline)"))
    figure.legend(handles=handles, fontsize="small", loc="outside lower center", ncols=min(4, len(handles)))
    figure.suptitle("similarity of each block to its start, one line per trial")
    return figure


def plot_by_depth(axes: Axes, trial: TrialRun, comparison: str, measure: str, colour: str,
                  style: str) -> None:
    """The trial's similarity per block at x = the block's depth (stem 0, block N at N)."""
    points = [(depth, trial.metrics[name]) for depth, block in enumerate(metrics.SIMILARITY_BLOCKS)
              if (name := metrics.similarity_metric(comparison, measure, block)) in trial.metrics]
    if points:
        depths, values = zip(*points, strict=True)
        axes.plot(depths, values, color=colour, linestyle=style, marker="o", markersize=3, linewidth=1.2,
                  alpha=0.85)


def write_similarity_by_depth_png(path: Path, trials: Sequence[TrialRun], colour_axis: str | None,
                                  colour_values: Sequence[str]) -> None:
    similarity_by_depth_figure(trials, colour_axis, colour_values).savefig(path, dpi=120)
