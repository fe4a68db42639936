"""The report: a sweep's results read back from MLflow as tables, a figure and claim verdicts.

`cli` is `python -m orchestrator.report NAME` (the verdict rule is in its docstring); `runs`
reads a parent run and its trial children into `TrialRun`s; `tables` builds the pivot, the
paper-style differences and each claim's verdict; `model` holds the report as data
(`SweepReport`); `render` writes it as Markdown, CSV and figures and publishes it on the parent
run; `plot` draws the figures; `summary` puts its verdicts on the parent as metrics and tags. Add a
table or a figure as a function in `tables` or `plot` and call it from `render.write_report`.
"""
