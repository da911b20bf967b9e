"""Valid ranges of the detectors' hyperparameters, checked when a detector is built.

Each detector (and truncation) declares ``ranges = {"temperature": positive, ...}`` and, for pairs that
must be ordered, ``ordered = (("lower", "upper"),)``. A value outside its range fails at
``get_detector(...)`` with the detector, the parameter, the value and the valid range, before any data is
touched, instead of a ZeroDivisionError or an all-equal score deep inside ``fit`` / ``score``.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Sequence


class HyperparameterError(ValueError):
    """A detector hyperparameter is outside its valid range (or of the wrong kind)."""


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class Interval:
    """A real (or integer) interval; ``None`` bounds are infinite."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def accepts(self, value: Any) -> bool:
        if not (_is_int(value) if self.integer else _is_real(value)):
            return False
        v = float(value)
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return self.high is None or (v < self.high if self.high_open else v <= self.high)

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.high is None:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}" if self.low is not None else kind
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open else "]"
        low = "-inf" if self.low is None else f"{self.low:g}"
        return f"{kind} in {left}{low}, {self.high:g}{right}"


@dataclass(frozen=True)
class OneOf:
    """One of a few named choices."""

    choices: tuple

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.choices

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)


@dataclass(frozen=True)
class AutoOr:
    """``"auto"`` (a rule of the detector picks the value) or a value of ``inner``."""

    inner: Interval

    def accepts(self, value: Any) -> bool:
        return value == "auto" or self.inner.accepts(value)

    def __str__(self) -> str:
        return f"'auto' or {self.inner}"


@dataclass(frozen=True)
class Flag:
    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)

    def __str__(self) -> str:
        return "True or False"


@dataclass(frozen=True)
class NoneOrPositiveNumbers:
    """``None`` or a sequence of positive numbers (ODIN's per-channel std)."""

    def accepts(self, value: Any) -> bool:
        if value is None:
            return True
        return (isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0
                and all(_is_real(v) and v > 0 for v in value))

    def __str__(self) -> str:
        return "None or a sequence of positive numbers"


# the ranges that recur; each detector's ranges read like its paper's definitions
positive = Interval(0.0, low_open=True)                       # temperatures, weights, floors
non_negative = Interval(0.0)
fraction = Interval(0.0, 1.0, low_open=True)                  # a share of the training set: (0, 1]
quantile = Interval(0.0, 1.0)                                 # a quantile level: [0, 1]
percentile = Interval(0.0, 100.0, high_open=True)             # pruned / sparsified share: [0, 100)
clip_percentile = Interval(0.0, 100.0, low_open=True)         # a clip at the p-th percentile: (0, 100]
count = Interval(1, integer=True)                             # k, M, batch sizes: >= 1
seed = Interval(0, integer=True)
flag = Flag()


def check(name: str, hparams: Mapping[str, Any], ranges: Mapping[str, Any],
          ordered: Sequence[tuple[str, str]] = ()) -> None:
    """Raise :class:`HyperparameterError` for the first value outside its range or pair out of order."""
    for key, spec in ranges.items():
        if key in hparams and not spec.accepts(hparams[key]):
            raise HyperparameterError(f"detector {name!r}: {key}={hparams[key]!r} is out of range; "
                                      f"valid: {spec}")
    for low, high in ordered:
        if hparams[low] > hparams[high]:
            raise HyperparameterError(f"detector {name!r}: {low}={hparams[low]!r} must not exceed "
                                      f"{high}={hparams[high]!r} (valid: {low} <= {high})")
