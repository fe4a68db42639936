"""The report: a sweep's results read back from MLflow as tables, a figure and claim verdicts.

`cli` is `python -m orchestrator.report NAME` (the verdict rule is in its docstring); `runs`
reads a parent run and its trial children into `TrialRun`s; `tables` builds the pivot, the
paper-style differences and each claim's verdict; `plot` draws the convergence curves. Add a
table or a figure as a function in `tables` or `plot` and call it from `cli.write_report`.
"""

from orchestrator.report.cli import main

__all__ = ["main"]
