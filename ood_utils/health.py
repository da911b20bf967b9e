"""Health checks of a training run: a failed run is a failed run, not a finding about a paper.

Every training the kit does (GReg fine-tunes, BOOD's regularised classifiers, the mini decoders) records a
few checks computed from the run itself, and a claim that rests on a run that fails them gets the verdict
"undetermined" with the reason, instead of "agrees" / "disagrees"::

    h = health.assess("bood beta=2.5 seed 0", [
        health.accuracy_check(acc, base_acc),                 # no large loss of ID accuracy
        health.spread_check(id_scores, base_id_scores),       # the score still varies on ID data
        health.separation_check(train_id_scores, train_outlier_scores),  # the regulariser separates its own data
        health.loss_check(losses),                            # finite, and it went down
    ])
    h.ok, h.reason            # False, "ID accuracy 0.653 vs base 0.982; ..."
    results.claim(..., health=[h])   # -> verdict "undetermined", diagnosis "training failed: ..."

The limits are deliberately loose: they catch collapsed or diverged runs, not runs that are merely worse.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np

from . import metrics

#: default limits; each check takes its own override
MAX_ACCURACY_DROP = 0.05   # absolute drop of ID accuracy against the base model
MIN_SPREAD_RATIO = 0.2     # std of the score on ID data, relative to the base model's
MIN_SEPARATION = 0.6       # AUROC of the trained score on its own training ID vs outlier data
LOSS_WINDOW = 0.2          # share of the loss curve averaged at its start and at its end


@dataclass(frozen=True)
class Check:
    """One health check: what was measured, the limit, whether it passed and a sentence saying so."""
    name: str
    value: float
    limit: float
    passed: bool
    detail: str


@dataclass(frozen=True)
class Health:
    """The checks of one training run. ``ok`` when every check passed; ``reason`` lists the failed ones."""
    run: str
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def reason(self) -> str:
        return "; ".join(c.detail for c in self.checks if not c.passed)

    def rows(self) -> list[dict]:
        """One row per check, for a table in the notebook."""
        return [{"run": self.run, **asdict(c)} for c in self.checks]

    def to_json(self) -> str:
        return json.dumps({"run": self.run, "checks": [asdict(c) for c in self.checks]})

    @classmethod
    def from_json(cls, text: str) -> "Health":
        data = json.loads(text)
        return cls(data["run"], tuple(Check(**c) for c in data["checks"]))

    def __str__(self) -> str:
        return f"{self.run}: {'healthy' if self.ok else 'FAILED (' + self.reason + ')'}"


def assess(run: str, checks: Iterable[Check]) -> Health:
    """Bundle the checks of one run."""
    checks = tuple(checks)
    if not checks:
        raise ValueError(f"health of {run!r} needs at least one check")
    return Health(str(run), checks)


def _finite(values, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError(f"{what} is empty")
    return arr


def accuracy_check(accuracy: float, base_accuracy: float, max_drop: float = MAX_ACCURACY_DROP) -> Check:
    """ID accuracy must not fall more than ``max_drop`` (absolute) below the base model's."""
    acc, base = float(accuracy), float(base_accuracy)
    drop = base - acc
    passed = math.isfinite(acc) and drop <= max_drop
    return Check("ID accuracy", acc, base - max_drop, passed,
                 f"ID accuracy {acc:.3f} vs base {base:.3f}" + ("" if passed else f" (drop {drop:.3f} > {max_drop})"))


def spread_check(id_scores, base_id_scores=None, min_ratio: float = MIN_SPREAD_RATIO,
                 min_std: float | None = None) -> Check:
    """The score must still vary on ID data: its std at least ``min_ratio`` times the base model's (or at
    least ``min_std`` when there is no base model). A collapsed model gives every input nearly the same
    score."""
    scores = _finite(id_scores, "id_scores")
    std = float(np.std(scores)) if np.all(np.isfinite(scores)) else float("nan")
    if base_id_scores is not None:
        base = float(np.std(_finite(base_id_scores, "base_id_scores")))
        limit = min_ratio * base
        detail = f"score std on ID {std:.3g} vs base {base:.3g}"
    elif min_std is not None:
        limit, detail = float(min_std), f"score std on ID {std:.3g}"
    else:
        raise ValueError("spread_check needs base_id_scores or min_std")
    passed = math.isfinite(std) and std >= limit
    return Check("score spread on ID", std, limit, passed, detail + ("" if passed else f" (< {limit:.3g})"))


def separation_check(train_id_scores, train_outlier_scores, min_auroc: float = MIN_SEPARATION,
                     name: str = "regulariser separation") -> Check:
    """The trained score (higher = more ID) must separate the ID and outlier data it was trained on:
    AUROC at least ``min_auroc``. A regulariser that cannot separate its own training data has not learnt."""
    a = _finite(train_id_scores, "train_id_scores")
    b = _finite(train_outlier_scores, "train_outlier_scores")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return Check(name, float("nan"), min_auroc, False, f"{name}: non-finite scores")
    auroc = float(metrics.auroc(a, b))
    passed = auroc >= min_auroc
    return Check(name, auroc, min_auroc, passed,
                 f"{name} AUROC {auroc:.3f} on its training data" + ("" if passed else f" (< {min_auroc})"))


def loss_check(losses: Sequence[float], window: float = LOSS_WINDOW, name: str = "training loss") -> Check:
    """The loss curve must be finite and end lower than it started (mean of the last ``window`` share of
    steps against the first)."""
    arr = _finite(losses, "losses")
    if not np.all(np.isfinite(arr)):
        return Check(name, float("nan"), 0.0, False, f"{name} has non-finite values")
    k = max(1, int(round(window * arr.size)))
    start, end = float(arr[:k].mean()), float(arr[-k:].mean())
    passed = arr.size < 2 or end <= start
    return Check(name, end, start, passed,
                 f"{name} {start:.3g} -> {end:.3g}" + ("" if passed else " (went up)"))


def failed(healths: Iterable[Health | None]) -> list[Health]:
    """The runs among ``healths`` that failed (None entries are ignored)."""
    return [h for h in healths if h is not None and not h.ok]


def failure_diagnosis(healths: Iterable[Health | None]) -> str:
    """``"training failed: <run>: <reason>; ..."`` for the failed runs, or ``""`` when all are healthy."""
    bad = failed(healths)
    if not bad:
        return ""
    return "training failed: " + " | ".join(f"{h.run}: {h.reason}" for h in bad)
