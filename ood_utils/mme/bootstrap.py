"""Bootstrap intervals of AUROC and FPR95 for many detectors and OOD sets, fast enough for every table.

``metrics.bootstrap_ci`` / ``metrics.paired_bootstrap_ci`` define the intervals: resample the ID and the OOD
scores with replacement, recompute the metric, take the central 95%. Here the *same* resamples are drawn
(same seed, same order) and every resample is evaluated at once, which makes the notebooks' tables several
times faster; the tests check that both give the same numbers.
"""
from __future__ import annotations

import numpy as np

from .. import metrics


def with_bounds(rows: list[dict], scores: dict, average_over, n_boot: int, seed: int = 0) -> list[dict]:
    """``metrics.evaluate_sets(..., n_boot=n_boot)`` rows, the bounds computed by :func:`bootstrap_bounds`
    (the same resamples, all at once): per set, then averaged into each summary as evaluate_sets does."""
    per_set = {r["dataset"]: r for r in rows if r["dataset"] not in metrics.SUMMARIES}
    for name, row in per_set.items():
        for metric, (lo, hi) in bootstrap_bounds(scores["id"], scores[name], n_boot, seed).items():
            row[f"{metric}_lo"], row[f"{metric}_hi"] = lo, hi
    for row in rows:
        if row["dataset"] in metrics.SUMMARIES:
            chosen = [r for r in per_set.values() if (r["dataset"] in set(average_over) if row["group"] == "all"
                                                      else r["group"] == row["group"])]
            for key in ("auroc_lo", "auroc_hi", "fpr95_lo", "fpr95_hi"):
                row[key] = float(np.mean([r[key] for r in chosen]))
    return rows


def bootstrap_bounds(id_scores, ood_scores, n_boot: int = 200, seed: int = 0, level: float = 0.95) -> dict:
    """``metrics.bootstrap_ci`` of AUROC and FPR95 from the very same resamples, computed for all of them at
    once (see :func:`_resampled_metrics`). Returns {metric: (lo, hi)}."""
    values = _resampled_metrics(id_scores, ood_scores, _draws(len(id_scores), len(ood_scores), n_boot, seed))
    return {key: _interval(vals, level) for key, vals in values.items()}


def paired_bounds(id_a, ood_a, id_b, ood_b, metric: str = "auroc", n_boot: int = 200, seed: int = 0,
                  level: float = 0.95) -> tuple[float, float]:
    """``metrics.paired_bootstrap_ci`` (interval of metric(a) - metric(b), both detectors on the same
    resampled images), from the same resamples, all at once."""
    if len(id_a) != len(id_b) or len(ood_a) != len(ood_b):
        raise ValueError("paired bounds need both detectors scored on the same images")
    draws = _draws(len(id_a), len(ood_a), n_boot, seed)
    diff = _resampled_metrics(id_a, ood_a, draws)[metric] - _resampled_metrics(id_b, ood_b, draws)[metric]
    return _interval(diff, level)


def _draws(n: int, m: int, n_boot: int, seed: int) -> list:
    rng = np.random.default_rng(seed)  # metrics' order: ID indices, then OOD indices, per resample
    return [(rng.integers(0, n, size=n), rng.integers(0, m, size=m)) for _ in range(n_boot)]


def _interval(values, level: float) -> tuple[float, float]:
    tail = 50.0 * (1.0 - level)
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def _resampled_metrics(id_scores, ood_scores, draws) -> dict[str, np.ndarray]:
    """AUROC and FPR95 on every resample: a resample is a vector of counts (how often each image was drawn),
    AUROC a count-weighted rank sum and FPR95 a count-weighted threshold, so no resample is ever sorted.
    Equal, ties included, to ``metrics.auroc`` / ``metrics.fpr_at_tpr`` on the resampled scores."""
    s_in, s_out = np.asarray(id_scores, dtype=np.float64), np.asarray(ood_scores, dtype=np.float64)
    n, m = len(s_in), len(s_out)
    order = np.argsort(s_out, kind="mergesort")
    ood_sorted = s_out[order]
    below_at, above_at = np.searchsorted(ood_sorted, s_in, "left"), np.searchsorted(ood_sorted, s_in, "right")
    desc = np.argsort(-s_in, kind="mergesort")
    k = next(k for k in range(1, n + 1) if k / n >= 0.95)  # metrics.fpr_at_tpr: kept ID share >= 95%
    auroc, fpr = [], []
    for chunk in range(0, len(draws), 50):
        w = np.stack([np.bincount(i, minlength=n) for i, _ in draws[chunk:chunk + 50]]).astype(np.float64)
        v = np.stack([np.bincount(o, minlength=m) for _, o in draws[chunk:chunk + 50]])[:, order]
        cum = np.concatenate([np.zeros((len(v), 1)), np.cumsum(v, axis=1)], axis=1)  # OOD counts below each rank
        below, ties = cum[:, below_at], cum[:, above_at] - cum[:, below_at]
        auroc.append((w * (below + 0.5 * ties)).sum(axis=1) / (n * m))
        threshold = s_in[desc][np.argmax(np.cumsum(w[:, desc], axis=1) >= k, axis=1)]  # k-th largest drawn ID score
        at = np.searchsorted(ood_sorted, threshold, "left")[:, None]
        fpr.append((m - np.take_along_axis(cum, at, axis=1)[:, 0]) / m)
    return {"auroc": np.concatenate(auroc), "fpr95": np.concatenate(fpr)}
