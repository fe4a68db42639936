"""A sweep's report rendered: report.md, pivot.csv, differences.csv and the figures, written to a
folder and published on the sweep's parent run."""

import csv
import io
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlflow.tracking import MlflowClient

from orchestrator.mlflow_view import artifact_url
from orchestrator.report.model import SweepReport, build_report
from orchestrator.report.plot import (
    has_block_similarity,
    write_convergence_png,
    write_similarity_by_depth_png,
)
from orchestrator.report.runs import load_trials, metric_histories
from orchestrator.report.summary import log_summary
from orchestrator.report.tables import (
    Cell,
    ClaimResult,
    Contrast,
    Verdict,
    combinations,
    describe,
    pivot_cell,
)
from search_spaces import SWEEPS
from trainables import metrics

REPORT_ARTIFACT_PATH = "report"
MARKDOWN_FILE, PIVOT_FILE, DIFFERENCES_FILE, CONVERGENCE_FILE = (
    "report.md", "pivot.csv", "differences.csv", "convergence.png")
SIMILARITY_FILE = "similarity_by_depth.png"  # only when the trials measured per-block similarity
CONVERGENCE_METRIC = metrics.KNN_VAL_ACCURACY
COLOUR_AXIS = "init"  # convergence lines are coloured by the prior, when it varies


# Numbers as text -----------------------------------------------------------------------------------

def number(value: float | None, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def cell_text(cell: Cell | None, over_seeds: bool) -> str:
    if cell is None:
        return "—"
    text = number(cell.mean) + (f" ± {number(cell.std)}" if math.isfinite(cell.std) else "")
    return f"{text} (n={cell.count})" if over_seeds else text


def contrast_text(result: Contrast, over_seeds: bool) -> str:
    if result.missing:
        return "missing " + "; ".join(result.missing)
    text = number(result.value, signed=True)
    if math.isfinite(result.spread):
        text += f" ± {number(result.spread)}"
        text += f" (s.e. over {result.seeds} seeds)" if over_seeds else " (propagated repeat std)"
    if math.isfinite(result.ci_low):
        text += f", 95% CI [{number(result.ci_low, signed=True)}, {number(result.ci_high, signed=True)}]"
    return text + (f"; {result.note}" if result.note else "")


def p_text(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else ""


def verdict_text(result: Verdict) -> str:
    """The verdict word with its Holm-adjusted p-value, or why it is inconclusive."""
    if result.reason:
        return f"{result.word} ({result.reason})"
    return f"{result.word} (adjusted p = {p_text(result.adjusted_p)})"


def spread_kind(over_seeds: bool) -> str:
    return "standard error over seeds" if over_seeds else "propagated repeat std"


# Tables ----------------------------------------------------------------------------------------------

def pivot_axes(report: SweepReport) -> tuple[list[str], str | None]:
    """The row axes and the column axis: all axes but the last, and the last. A search's axes hold
    sampled values, not a grid: one row per trial's values, and the metric as the one column."""
    if report.sweep.search is not None or not report.axes:
        return list(report.axes), None
    return list(report.axes[:-1]), report.axes[-1]


def pivot_table(report: SweepReport) -> tuple[list[str], list[list[Cell | None]], list[dict[str, str]]]:
    """Column labels, cells[row][column] and the row keys (see pivot_axes); a search's rows are
    ranked by the metric, highest first (the report's metrics are accuracies, F1 and AUC)."""
    row_axes, column_axis = pivot_axes(report)
    if column_axis is None and report.sweep.search is not None:
        observed = {tuple(trial.params.get(axis, "") for axis in row_axes): None
                    for trial in report.trials if trial.usable}
        rows = [dict(zip(row_axes, values, strict=True)) for values in observed]
        means = [pivot_cell(report.trials, row, report.metric, report.over_seeds) for row in rows]
        order = sorted(range(len(rows)), key=lambda i: -means[i].mean if means[i] else math.inf)
        rows = [rows[i] for i in order]
    else:
        rows = combinations(row_axes, report.values)
    columns = [{column_axis: value} for value in report.values[column_axis]] if column_axis else [{}]
    cells = [[pivot_cell(report.trials, {**row, **column}, report.metric, report.over_seeds)
              for column in columns] for row in rows]
    labels = [describe(column) if column else report.metric for column in columns]
    return labels, cells, rows


def pivot_csv(report: SweepReport) -> str:
    labels, cells, rows = pivot_table(report)
    header = pivot_axes(report)[0] + [f"{label} {part}" for label in labels for part in ("mean", "std", "n")]
    lines = [header]
    for row, row_cells in zip(rows, cells, strict=True):
        line = list(row.values())
        for cell in row_cells:
            line += [number(cell.mean), number(cell.std), str(cell.count)] if cell else ["", "", "0"]
        lines.append(line)
    return to_csv(lines)


def terms_text(report: SweepReport, result: ClaimResult, group: dict[str, str]) -> str:
    parts = []
    for cell, weight in result.claim.terms:
        where = {**{key: str(value) for key, value in cell.items()}, **group}
        mean = pivot_cell(report.trials, where, result.claim.metric, report.over_seeds)
        parts.append(f"{weight:+g} x [{describe(where)}] {number(mean.mean) if mean else 'missing'}")
    return " ".join(parts)


DIFFERENCES_HEADER = ["comparison", "metric", "group", "contrast", "spread", "spread_kind", "seeds",
                      "ci_low", "ci_high", "p_value", "adjusted_p", "verdict", "reason", "terms", "missing",
                      "note"]


def differences_csv(report: SweepReport) -> str:
    lines: list[list[str]] = [DIFFERENCES_HEADER]
    for result in [*report.claims, *([report.ablation] if report.ablation else [])]:
        claim = result.claim
        rows = [(describe(group), contrast, judged, terms_text(report, result, group))
                for (group, contrast), judged in zip(result.groups, result.group_verdicts, strict=True)]
        rows.append(("average over groups", result.overall, result.verdict, ""))
        claims = result is not report.ablation  # the last axis' difference claims nothing: no verdict
        for group, contrast, judged, terms in rows:
            lines.append([claim.text, claim.metric, group, number(contrast.value, signed=True),
                          number(contrast.spread), spread_kind(report.over_seeds), str(contrast.seeds),
                          number(contrast.ci_low, signed=True), number(contrast.ci_high, signed=True),
                          p_text(contrast.p_value), p_text(judged.adjusted_p), judged.word if claims else "",
                          judged.reason if claims else "",
                          terms, "; ".join(contrast.missing), contrast.note])
    return to_csv(lines)


def to_csv(lines: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(lines)
    return buffer.getvalue()


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    escape = [[str(cell).replace("|", "\\|") for cell in row] for row in [header, *rows]]
    lines = ["| " + " | ".join(escape[0]) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in escape[1:]])


# Markdown ---------------------------------------------------------------------------------------------

def render_markdown(report: SweepReport, figures: Mapping[str, str] | None = None) -> str:
    """The report; `figures` maps a figure's file name to what the Markdown links (default: the
    name, a file next to report.md)."""
    figures = figures or {}
    statuses = Counter(trial.status for trial in report.trials)
    parent = report.parent
    spread = ("mean ± std over seeds, n = seeds per cell" if report.over_seeds
              else "one seed: mean ± the std logged over the evaluation's repeats")
    sections = [
        f"# Sweep report: {report.sweep.name}",
        f"{report.sweep.description}\n\nParent run `{parent.info.run_id}` ({parent.info.run_name}, "
        f"{report.parent_status}) in `{report.tracking_uri}`; {len(report.trials)} trial(s): "
        + ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
        + f". Axes: {', '.join(report.axes) or '(none)'}.",
        *(["## Recommendation", recommendation_markdown(report)] if report.sweep.screening else []),
        "## Claims", claims_markdown(report),
        f"## {report.metric} ({spread})", pivot_markdown(report),
        "## Differences", differences_markdown(report),
        f"## Convergence: {CONVERGENCE_METRIC}",
        f"![{CONVERGENCE_METRIC} per epoch]({figures.get(CONVERGENCE_FILE, CONVERGENCE_FILE)})",
        "## Collapsed, failed and unfinished trials (in no number above)", excluded_markdown(report),
    ]
    if has_block_similarity(report.trials):
        sections[-2:-2] = ["## Similarity by depth (each block to its start; CKA and SVCCA)",
                           f"![per-block similarity, coloured by {colour_axis(report)}]"
                           f"({figures.get(SIMILARITY_FILE, SIMILARITY_FILE)})"]
    return "\n\n".join(sections) + "\n"


def recommendation_markdown(report: SweepReport) -> str:
    """which_prior's answer: one sentence per label fraction (orchestrator.which_prior)."""
    if not report.recommendations:
        return f"No recommendation: no finished trial has {report.metric}."
    ranking = report.parent.data.tags.get("screening.ranking")
    lines = [f"- {recommendation.sentence(report.metric)}" for recommendation in report.recommendations]
    if ranking:
        lines.append(f"\nHow the priors were chosen for pretraining: {ranking}.")
    return "\n".join(lines)


def claims_markdown(report: SweepReport) -> str:
    if not report.claims:
        return "The sweep states no paper claims."
    lines = []
    for result in report.claims:
        lines.append(f"- **{verdict_text(result.verdict)}**: {result.claim.text} — {result.claim.metric} "
                     "contrast "
                     f"{contrast_text(result.overall, report.over_seeds)}")
    return "\n".join(lines)


def pivot_markdown(report: SweepReport) -> str:
    labels, cells, rows = pivot_table(report)
    return markdown_table([*pivot_axes(report)[0], *labels],
                          [[*row.values(), *(cell_text(cell, report.over_seeds) for cell in row_cells)]
                           for row, row_cells in zip(rows, cells, strict=True)])


def differences_markdown(report: SweepReport) -> str:
    titled = []
    if report.ablation:
        titled.append((f"### {report.ablation.claim.text} ({report.metric})", report.ablation))
    titled += [(f"### Claim {number}: {result.claim.text} ({result.claim.metric})", result)
               for number, result in enumerate(report.claims, start=1)]
    sections = []
    for title, result in titled:
        group_axes = list(result.groups[0][0]) if result.groups else []
        rows = [[*group.values(), contrast_text(contrast, report.over_seeds), verdict_text(judged),
                 terms_text(report, result, group)]
                for (group, contrast), judged in zip(result.groups, result.group_verdicts, strict=True)]
        average = ["average", *[""] * (len(group_axes) - 1)] if group_axes else []
        rows.append([*average, contrast_text(result.overall, report.over_seeds), verdict_text(result.verdict),
                     ""])
        if result is report.ablation:  # the last axis' difference claims nothing: no verdict word
            rows = [[*row[:-2], "", row[-1]] for row in rows]
        sections.append(title + "\n\n" + markdown_table([*group_axes, "contrast", "verdict", "cells"], rows))
    return "\n\n".join(sections) or "No claims, and the last axis does not have exactly two values."


def excluded_markdown(report: SweepReport) -> str:
    excluded = [trial for trial in report.trials if not trial.usable]
    if not excluded:
        return "None."
    rows = [[trial.name, trial.status, describe({axis: trial.params.get(axis, "?") for axis in report.axes}),
             trial.error] for trial in excluded]
    return markdown_table(["trial", "status", "axes", "error"], rows)


# Files and the command line ---------------------------------------------------------------------------

def colour_axis(report: SweepReport) -> str | None:
    if len({trial.params.get(COLOUR_AXIS) for trial in report.trials}) > 1:
        return COLOUR_AXIS
    return report.axes[0] if report.axes else None


def convergence_axes(report: SweepReport) -> tuple[list[str], str | None]:
    """The axes that colour the convergence lines and the one that styles them: every axis that
    varies, the last one (not the prior, which colours) as the line style."""
    varying = [axis for axis in report.axes
               if len(report.values.get(axis) or {t.params.get(axis) for t in report.trials}) > 1]
    if len(varying) < 2:
        return varying, None
    style = next(axis for axis in reversed(varying) if axis != COLOUR_AXIS)
    colour = [axis for axis in varying if axis != style]
    return sorted(colour, key=lambda axis: axis != COLOUR_AXIS), style


def write_report(report: SweepReport, client: MlflowClient, out: Path) -> tuple[str, list[Path]]:
    """Writes the report's files to `out` (report.md linking its figures beside it) and returns the
    Markdown and the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in (MARKDOWN_FILE, PIVOT_FILE, DIFFERENCES_FILE, CONVERGENCE_FILE)]
    histories = metric_histories(client, report.trials, CONVERGENCE_METRIC)
    write_convergence_png(paths[-1], report.trials, histories, CONVERGENCE_METRIC, *convergence_axes(report))
    if has_block_similarity(report.trials):
        axis = colour_axis(report)
        colour_values = (report.values.get(axis) or sorted({t.params.get(axis, "") for t in report.trials})
                         if axis else [])
        paths.append(out / SIMILARITY_FILE)
        write_similarity_by_depth_png(paths[-1], report.trials, axis, colour_values)
    markdown = render_markdown(report)
    for path, text in zip(paths[:3], (markdown, pivot_csv(report), differences_csv(report)), strict=True):
        path.write_text(text)
    return markdown, paths


def publish(report: SweepReport, client: MlflowClient, out: Path) -> tuple[str, list[Path]]:
    """Write the report's files to `out` and log them on the parent run under "report", with its
    summary metrics and tags (orchestrator.report.summary). Returns the Markdown and the paths.

    The logged report.md links its figures by their address on the UI's server: MLflow's Markdown
    viewer shows no relative or inlined image (orchestrator.mlflow_view)."""
    markdown, paths = write_report(report, client, out)
    run_id = report.parent.info.run_id
    for path in paths[1:]:
        client.log_artifact(run_id, str(path), REPORT_ARTIFACT_PATH)
    figures = {path.name: artifact_url(report.tracking_uri, run_id, f"{REPORT_ARTIFACT_PATH}/{path.name}")
               for path in paths[3:]}
    client.log_text(run_id, render_markdown(report, figures), f"{REPORT_ARTIFACT_PATH}/{MARKDOWN_FILE}")
    log_summary(client, report)
    return markdown, paths


def report_sweep_run(tracking_uri: str, sweep_name: str, parent_run_id: str, out: Path,
                     parent_status: str) -> tuple[Path, SweepReport] | None:
    """The report of one sweep run, published on its parent run (the sweep does this at its end,
    just before it ends the parent run with `parent_status`); returns report.md's path and the
    report, or None when the run has no trial runs."""
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    trials = load_trials(client, parent)
    if not trials:
        return None
    report = build_report(SWEEPS[sweep_name], tracking_uri, parent, trials, None, parent_status)
    _, paths = publish(report, client, out)
    return paths[0], report
