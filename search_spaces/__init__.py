"""Named sweeps. Add a sweep: write one module here defining `SWEEP`, and add it below.

A sweep is data, not machinery: its hypothesis, the grid of axes, and the fixed trial
parameters. The orchestrator turns it into a Ray Tune run.
"""

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sweep:
    name: str
    description: str  # one line, shown by --list
    grid: dict[str, list[Any]]  # axis -> values; the trials are their Cartesian product
    params: dict[str, Any] = field(default_factory=dict)  # fixed trial parameters
    hypothesis: str = ""
    # Per-method hyperparameters (method -> method_params), e.g. CPU-sized heads for a smoke run.
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)


def _registry() -> dict[str, Sweep]:
    from search_spaces import smoke

    return {sweep.name: sweep for sweep in (smoke.SWEEP,)}


SWEEPS: dict[str, Sweep] = _registry()
