"""The values a numeric setting allows, and types that carry them in a signature.

A method declares each hyperparameter's range in its `__init__` beside the paper default, e.g.
`temperature: PositiveFloat = 0.1`; string hyperparameters declare their choices as a
`Literal[...]`. `trainables.methods.method_hyperparameters` reads both, and the trial config
(trainables/config.py) checks `--set method_params.NAME=VALUE` against them before anything runs.
"""

import math
from dataclasses import dataclass
from typing import Annotated


@dataclass(frozen=True)
class NumberRange:
    """The values a numeric setting allows. NaN and infinities are never allowed: a NaN learning
    rate or temperature would not fail until the loss is NaN, minutes into a trial on a cluster."""

    minimum: float | None = None
    maximum: float | None = None
    minimum_included: bool = True
    maximum_included: bool = True

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.minimum is not None and not (value >= self.minimum if self.minimum_included
                                             else value > self.minimum):
            return False
        return self.maximum is None or (value <= self.maximum if self.maximum_included
                                        else value < self.maximum)

    def describe(self) -> str:
        """'>= 1', '> 0', 'in [0, 1)', or '' when any finite number will do."""
        if self.minimum is not None and self.maximum is not None:
            return (f"in {'[' if self.minimum_included else '('}{self.minimum:g}, "
                    f"{self.maximum:g}{']' if self.maximum_included else ')'}")
        if self.minimum is not None:
            return f"{'>=' if self.minimum_included else '>'} {self.minimum:g}"
        if self.maximum is not None:
            return f"{'<=' if self.maximum_included else '<'} {self.maximum:g}"
        return ""


AT_LEAST_ONE = NumberRange(minimum=1)
NOT_NEGATIVE = NumberRange(minimum=0)
POSITIVE = NumberRange(minimum=0, minimum_included=False)
FRACTION = NumberRange(minimum=0, maximum=1)
ANY_FINITE = NumberRange()

# Hyperparameter types with their range: sizes and counts, weights, divisors, EMA rates.
PositiveInt = Annotated[int, AT_LEAST_ONE]
NonNegativeInt = Annotated[int, NOT_NEGATIVE]
PositiveFloat = Annotated[float, POSITIVE]  # e.g. a temperature: the logits are divided by it
NonNegativeFloat = Annotated[float, NOT_NEGATIVE]
Fraction = Annotated[float, FRACTION]
