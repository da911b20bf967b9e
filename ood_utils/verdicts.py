"""Verdicts: a paper's claim measured against the run's own uncertainty.

A claim becomes an effect in the paper's direction (positive = as the paper says, e.g. AUROC(GReg) -
AUROC(Energy), or FPR95(Energy) - FPR95(GReg)) with a 95% interval, and the interval decides:

    verdict(delta, noise)          # "agrees" / "tie within noise" / "disagrees" / "undetermined"
    seed_verdict(a, b)             # training results over seeds: paired t interval, df = n - 1
    bootstrap_effect(sa, sb, sets) # post-hoc scores on the same images: paired bootstrap over test images
    bootstrap_family(sa, {...}, sets)  # one detector against each of several (Bonferroni), post-hoc
    average_verdict(a, b)          # the paper's "average" column: mean over OOD sets per seed, then seeds
    sweep_verdict(runs, value)     # a sweep, pre-declared: the paper's value against each other value
    all_verdict(verdicts)          # a claim about every member of a set (every OOD set, every pair)

The results module re-exports all of them (``results.seed_verdict`` is this ``seed_verdict``).
"""
from __future__ import annotations

import math
import zlib
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from . import metrics, plots

#: what a claim of a paper can come to, measured with the run's uncertainty
VERDICTS = ("agrees", "tie within noise", "disagrees", "undetermined")
#: one colour per verdict, wherever the kit draws or tints one: the kit's palette (:data:`plots.PALETTE`)
VERDICT_COLORS = {v: plots.color("verdict", v) for v in VERDICTS}
#: metrics where a lower value is better (the effect's sign flips)
LOWER_IS_BETTER = frozenset({"fpr95"})


def verdict(delta: float, noise: float) -> str:
    """Compare a measured effect with the paper's claim. ``delta`` is the effect in the direction the paper
    claims; ``noise`` >= 0 is the half-width of its 95% interval (the t interval over seeds, or the
    bootstrap half-width). "agrees" when the effect clears the noise, "disagrees" when it clears it the
    other way, "tie within noise" in between; "undetermined" when there is no estimate of the noise (one
    seed): a single run cannot tell an effect from luck."""
    delta, noise = float(delta), float(noise)
    if not math.isfinite(delta):
        raise ValueError(f"delta must be finite, got {delta}")
    if math.isnan(noise):
        return "undetermined"
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if delta > noise:
        return "agrees"
    if delta < -noise:
        return "disagrees"
    return "tie within noise"


def interval_verdict(lo: float, hi: float) -> str:
    """:func:`verdict` from a (95%) interval of the claimed-direction effect: above 0 agrees, below 0
    disagrees, straddling 0 is a tie within noise."""
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"need a finite interval with lo <= hi, got ({lo}, {hi})")
    return verdict((lo + hi) / 2.0, (hi - lo) / 2.0)


def all_verdict(verdicts) -> str:
    """A claim about every member of a set (every OOD set, every pair, every other sweep value):
    "disagrees" as soon as one member disagrees (one counterexample refutes "every"), else "undetermined"
    if a member is, "agrees" if every member agrees, otherwise "tie within noise" ("undetermined" for an
    empty set)."""
    verdicts = list(verdicts)
    unknown = sorted(set(verdicts) - set(VERDICTS))
    if unknown:
        raise ValueError(f"unknown verdict(s) {unknown}; valid: {VERDICTS}")
    if "disagrees" in verdicts:
        return "disagrees"
    if not verdicts or "undetermined" in verdicts:
        return "undetermined"
    return "agrees" if all(v == "agrees" for v in verdicts) else "tie within noise"


# ---------------------------------------------------------------------------------------------- over seeds

def t_halfwidth(std: float, n: int, level: float = 0.95, df: float | None = None) -> float:
    """Half-width of a ``level`` confidence interval of a mean of ``n`` values with sample std ``std``:
    ``t_{(1+level)/2, df} * std / sqrt(n)`` with ``df = n - 1`` unless given. With 3 seeds the t quantile is
    4.30, not the 1.96 (or "two standard errors") of a normal approximation, which would be about an 80%
    interval there. One value has no interval (NaN)."""
    if n < 2:
        return float("nan")
    df = n - 1 if df is None else df
    return float(stats.t.ppf(0.5 + level / 2.0, df)) * float(std) / math.sqrt(n)


def _values(values, what: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} needs finite values, got {arr.tolist()}")
    return arr


def seed_verdict(better_values, worse_values, higher_is_better: bool = True, level: float = 0.95) -> dict:
    """The paper says method ``better`` beats ``worse``; both were run over seeds. Returns ``verdict``,
    ``delta`` (mean effect in the paper's direction), ``noise`` (half-width of the ``level`` t interval of
    that mean: paired over seeds when both have the same number of runs, as the kit runs seed i of both
    methods on the same data order, df = n - 1; Welch's unpaired interval otherwise), ``lo`` / ``hi``
    (the interval), ``better`` / ``worse`` (mean, std) and ``n``."""
    a, b = _values(better_values, "seed_verdict (better)"), _values(worse_values, "seed_verdict (worse)")
    sign = 1.0 if higher_is_better else -1.0
    delta = sign * float(a.mean() - b.mean())
    if a.size == b.size and a.size > 1:
        noise = t_halfwidth(float(np.std(a - b, ddof=1)), a.size, level)
    elif a.size > 1 and b.size > 1:
        va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1)) if se > 0 else 1.0
        noise = float(stats.t.ppf(0.5 + level / 2.0, df)) * se
    else:
        noise = float("nan")
    return {"verdict": verdict(delta, noise), "delta": delta, "noise": noise, "lo": delta - noise,
            "hi": delta + noise, "better": metrics.mean_std(a), "worse": metrics.mean_std(b),
            "n": int(min(a.size, b.size))}


# ---------------------------------------------------------------------------------------------- averages

def set_average(per_set: Mapping[str, Sequence[float]], sets: Sequence[str] | None = None) -> np.ndarray:
    """The papers' "average" column, one value per seed: the plain mean over OOD sets of each set's metric
    (``per_set``: set -> values over seeds, seeds in the same order). Every set weighs the same whatever its
    size. A *pooled* AUROC (:func:`pooled_auroc`, one AUROC of ID against the union of the sets) is another
    number: it weighs the sets by their sizes and ranks one set's scores against another's."""
    sets = list(per_set) if sets is None else list(sets)
    missing = [s for s in sets if s not in per_set]
    if not sets or missing:
        raise ValueError(f"set_average needs values for every set; missing {missing or 'all'} in {sorted(per_set)}")
    table = [_values(per_set[s], f"set {s!r}") for s in sets]
    if len({len(t) for t in table}) != 1:
        raise ValueError(f"every set needs one value per seed: lengths {[len(t) for t in table]} for {sets}")
    return np.mean(np.stack(table), axis=0)


def pooled_auroc(id_scores, ood_sets: Mapping[str, Sequence[float]]) -> float:
    """AUROC of the ID scores against every OOD set pooled into one: *not* what the papers' tables average
    (see :func:`set_average`); shown to say why the two differ."""
    return metrics.auroc(id_scores, np.concatenate([np.asarray(v, dtype=float) for v in ood_sets.values()]))


def average_verdict(better: Mapping[str, Sequence[float]], worse: Mapping[str, Sequence[float]],
                    higher_is_better: bool = True, level: float = 0.95, sets: Sequence[str] | None = None) -> dict:
    """A claim about the paper's average over OOD sets, for methods run over seeds: :func:`seed_verdict` of
    the per-seed means over ``sets`` (default: the sets of ``better``), paired over seeds, plus ``per_set``,
    a frame with each set's own :func:`seed_verdict` (delta, lo, hi, verdict) for supporting rows."""
    sets = list(better) if sets is None else list(sets)
    out = seed_verdict(set_average(better, sets), set_average(worse, sets), higher_is_better, level)
    rows = []
    for s in sets:
        v = seed_verdict(better[s], worse[s], higher_is_better, level)
        rows.append({"dataset": s, "delta": v["delta"], "lo": v["lo"], "hi": v["hi"], "verdict": v["verdict"]})
    return {**out, "per_set": pd.DataFrame(rows, columns=["dataset", "delta", "lo", "hi", "verdict"])}


def _draws(n: int, name: str, n_boot: int, seed: int) -> list[np.ndarray]:
    """``n_boot`` resamples of ``n`` indices for the set ``name`` ("id" for the ID test set): seeded by the
    name, so every comparison and every scope of one run resamples a set the same way."""
    rng = np.random.default_rng([int(seed), zlib.crc32(str(name).encode())])
    return [rng.integers(0, n, size=n) for _ in range(n_boot)]


def _check_scores(scores: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], sets, who: str) -> None:
    for name in ("id", *sets):
        if name not in scores:
            raise ValueError(f"no scores for {name!r} in {who}; it has {sorted(scores)}")
        if np.shape(scores[name]) != np.shape(reference[name]):
            raise ValueError(f"{name!r}: {who} must score the same images as the reference, got "
                             f"{np.shape(scores[name])} and {np.shape(reference[name])}")


def bootstrap_family(reference: Mapping[str, np.ndarray], others: Mapping[str, Mapping[str, np.ndarray]],
                     sets: Sequence[str], metric: str = "auroc", n_boot: int = 200, level: float = 0.95,
                     seed: int = 0) -> dict:
    """A claim that one detector (``reference``, scores ``{"id": ..., set: ...}``) beats *each* of ``others``
    (name -> scores on the same images), one run of post-hoc scores: per other detector, the effect in the
    claimed direction (AUROC: reference - other; FPR95: other - reference) averaged over ``sets`` as the
    papers average, with a paired percentile bootstrap interval of that mean at the Bonferroni level
    ``1 - (1 - level) / m`` for m comparisons (the family holds at ``level``); :func:`all_verdict` combines
    them. Each draw resamples the ID images once (every set's metric reads the same ID scores) and each OOD
    set on its own, the same draw for every detector, so the noise they share cancels.

    Returns ``verdict``, ``delta`` / ``lo`` / ``hi`` of the closest competitor, ``closest``, ``level`` and
    ``comparisons`` (one row per other detector: name, delta, lo, hi, verdict, and ``per_set`` deltas)."""
    metrics._metric_fn(metric)
    metrics._check_bootstrap(n_boot, level)
    sets = list(sets)
    if not sets or not others:
        raise ValueError("bootstrap_family needs at least one OOD set and one detector to compare with")
    _check_scores(reference, reference, sets, "the reference")
    for name, scores in others.items():
        _check_scores(scores, reference, sets, repr(name))
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    each = 1.0 - (1.0 - level) / len(others)
    id_draws = _draws(len(reference["id"]), "id", n_boot, seed)
    draws = {s: list(zip(id_draws, _draws(len(reference[s]), s, n_boot, seed))) for s in sets}

    def boot(scores) -> np.ndarray:       # (n_boot,) the metric's mean over the sets on every draw
        return np.mean([metrics._bootstrap_values(np.asarray(scores["id"], float), np.asarray(scores[s], float),
                                                  metric, draws[s]) for s in sets], axis=0)

    def point(scores) -> dict:
        return {s: metrics.METRICS[metric](scores["id"], scores[s]) for s in sets}

    ref_boot, ref_point = boot(reference), point(reference)
    rows = []
    for name, scores in others.items():
        theirs = point(scores)
        per_set = {s: sign * (ref_point[s] - theirs[s]) for s in sets}
        delta = float(np.mean(list(per_set.values())))
        lo, hi = metrics._interval(sign * (ref_boot - boot(scores)), each)
        lo, hi = min(lo, delta), max(hi, delta)   # a percentile interval may miss a degenerate estimate
        rows.append({"name": name, "delta": delta, "lo": lo, "hi": hi, "verdict": interval_verdict(lo, hi),
                     "per_set": per_set})
    table = pd.DataFrame(rows, columns=["name", "delta", "lo", "hi", "verdict", "per_set"])
    closest = table.loc[table["delta"].idxmin()]
    return {"verdict": all_verdict(table["verdict"]), "delta": float(closest["delta"]), "lo": float(closest["lo"]),
            "hi": float(closest["hi"]), "closest": closest["name"], "level": each, "comparisons": table}


def bootstrap_effect(better: Mapping[str, np.ndarray], worse: Mapping[str, np.ndarray], sets: Sequence[str],
                     metric: str = "auroc", n_boot: int = 200, level: float = 0.95, seed: int = 0) -> dict:
    """One comparison of post-hoc scores on the *same* images: :func:`bootstrap_family` with a single other
    detector. Returns ``delta`` (the effect in the claimed direction, averaged over ``sets``), ``lo`` /
    ``hi`` (its paired bootstrap interval), ``verdict`` and ``per_set`` ({set: delta})."""
    fam = bootstrap_family(better, {"worse": worse}, sets, metric, n_boot, level, seed)
    row = fam["comparisons"].iloc[0]
    return {"delta": fam["delta"], "lo": fam["lo"], "hi": fam["hi"], "verdict": fam["verdict"],
            "per_set": row["per_set"]}


# ---------------------------------------------------------------------------------------------- sweeps

SWEEP_COLUMNS = ["value", "delta", "lo", "hi", "verdict", "n"]


def sweep_verdict(runs: Mapping, paper_value, higher_is_better: bool = True, level: float = 0.95) -> dict:
    """A sweep claim declared before looking: "the paper's value of a hyperparameter is at least as good as
    every other value tried". ``runs`` maps each value to its metric over seeds (seed i of every value on the
    same data order, so the comparisons are paired). The paper's value is compared with *each* other value
    by :func:`seed_verdict` at the Bonferroni level ``1 - (1 - level) / m`` (m comparisons, so the whole
    family holds at ``level``), and :func:`all_verdict` combines them: one value significantly better than
    the paper's refutes the claim. (Comparing with the best other value, picked after the fact, would
    test a different, post-hoc question and overstate confidence.)

    Returns ``verdict``, ``delta`` / ``lo`` / ``hi`` of the closest competitor (the smallest effect),
    ``closest`` (its value), ``level`` (per comparison), ``n`` and ``comparisons`` (one row per other value:
    value, delta, lo, hi, verdict, n)."""
    if paper_value not in runs:
        raise ValueError(f"the paper's value {paper_value!r} is not among the sweep's values {list(runs)}")
    others = [v for v in runs if v != paper_value]
    if not others:
        raise ValueError("a sweep needs at least one value besides the paper's")
    each = 1.0 - (1.0 - level) / len(others)
    rows = []
    for v in others:
        r = seed_verdict(runs[paper_value], runs[v], higher_is_better, each)
        rows.append({"value": v, "delta": r["delta"], "lo": r["lo"], "hi": r["hi"], "verdict": r["verdict"],
                     "n": r["n"]})
    table = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
    closest = table.loc[table["delta"].idxmin()]
    return {"verdict": all_verdict(table["verdict"]), "delta": float(closest["delta"]), "lo": float(closest["lo"]),
            "hi": float(closest["hi"]), "closest": closest["value"], "level": each,
            "n": int(table["n"].min()), "comparisons": table}
