"""The convergence figure: a per-epoch metric, one line per trial, coloured by one axis.

Uses matplotlib's object API with the Agg canvas (no pyplot, no global figure state), so it is
safe in a headless process and in threads.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from orchestrator.report.runs import STATUS_FINISHED, TrialRun

LINE_STYLES = {STATUS_FINISHED: "-", "collapsed": "--", "failed": ":"}  # anything else: dash-dot


def convergence_figure(trials: Sequence[TrialRun], histories: Mapping[str, Sequence[tuple[int, float]]],
                       metric: str, colour_axis: str | None, colour_values: Sequence[str]) -> Figure:
    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colours = {value: f"C{index % 10}" for index, value in enumerate(colour_values)}
    plotted_statuses = set()
    for trial in trials:
        points = histories.get(trial.run_id, [])
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        colour = colours.get(trial.params.get(colour_axis, ""), "C0") if colour_axis else "C0"
        style = LINE_STYLES.get(trial.status, "-.")
        plotted_statuses.add(trial.status)
        axes.plot(steps, values, color=colour, linestyle=style, marker="o", markersize=3, linewidth=1.2,
                  alpha=0.85)
    if not plotted_statuses:
        axes.text(0.5, 0.5, f"no {metric} history logged", ha="center", va="center", transform=axes.transAxes)
    handles = [Line2D([], [], color=colours[value], label=f"{colour_axis}={value}")
               for value in colour_values] if colour_axis else []
    handles += [Line2D([], [], color="grey", linestyle=LINE_STYLES.get(status, "-."), label=status)
                for status in sorted(plotted_statuses) if status != STATUS_FINISHED]
    if handles:
        axes.legend(handles=handles, fontsize="small", loc="best")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch (0 = the initialization)")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} per epoch, one line per trial")
    axes.grid(alpha=0.3)
    return figure


def write_convergence_png(path: Path, trials: Sequence[TrialRun],
                          histories: Mapping[str, Sequence[tuple[int, float]]], metric: str,
                          colour_axis: str | None, colour_values: Sequence[str]) -> None:
    convergence_figure(trials, histories, metric, colour_axis, colour_values).savefig(path, dpi=120)
