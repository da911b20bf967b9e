"""The shape of a recipe card (:class:`Card` of :class:`Field` values), of a deliberate departure and of one
checked field, plus what every card shares: value comparison and the metric definitions."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

CHECKED_PROFILES = ("quick", "paper")


@dataclass(frozen=True)
class Field:
    """One value of a published recipe. ``kit(ctx)`` reads what the kit runs (None: documented only,
    nothing in the kit to read); ``note`` says which of paper / public code the value follows and why."""

    name: str
    value: Any
    source: str
    kit: Callable[[Any], Any] | None = None
    note: str = ""


@dataclass(frozen=True)
class Card:
    """The published recipe of one table or figure: ``context(profile)`` resolves the notebook's config."""

    name: str
    paper: str
    target: str                      # "Table 5", "Fig. 1a and Fig. 3", ...
    notebooks: tuple[str, ...]       # notebook numbers that run it
    context: Callable[[str], Any]
    fields: tuple[Field, ...]
    selector: dict = field(default_factory=dict)   # parameters that select this card in its notebook
    profiles: tuple[str, ...] = CHECKED_PROFILES    # the profiles that reproduce it

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"card {self.name!r} has no field {name!r}; fields: {', '.join(f.name for f in self.fields)}")


@dataclass(frozen=True)
class Departure:
    """A deliberate difference from the published recipe: ``card.field`` runs ``kit`` under ``profiles``."""

    card: str
    field: str
    profiles: tuple[str, ...]
    kit: Any
    reason: str


@dataclass(frozen=True)
class Check:
    """One field of a card under one profile: ``status`` is "as published", "departure", "differs" or
    "documented" (no kit value to read)."""

    card: str
    field: str
    profile: str
    published: Any
    kit: Any
    status: str
    source: str
    note: str = ""


def same(a: Any, b: Any) -> bool:
    """Equality of recipe values: floats to 1e-9 relative, lists = tuples, recursively."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b



METRICS = "ID positive; FPR95 = OOD accepted at 95% ID TPR; AUROC, ties 1/2"


def metrics_definition(_ctx=None) -> str:
    """The metric definitions the kit's ``metrics`` module implements, checked on a tiny example."""
    import numpy as np

    from .. import metrics

    id_s, ood_s = np.arange(100.0), np.array([96.0, 3.0, 50.0, 50.0])
    fpr = metrics.fpr_at_tpr(id_s, ood_s, 0.95)          # threshold keeps 95 of 100 ID (>= 5): 3 of 4 OOD pass
    tie = metrics.auroc(np.array([1.0]), np.array([1.0]))
    ok = abs(fpr - 0.75) < 1e-12 and abs(tie - 0.5) < 1e-12
    return METRICS if ok else f"other (FPR95 {fpr} on the probe, AUROC of a tie {tie})"
