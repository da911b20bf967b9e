"""OOD-detection metrics, written out in numpy so each convention is visible.

Conventions shared by the three papers and by every function here:

* a detector returns a score per image, **higher = more in-distribution (ID)**;
* ID is the **positive** class: "true positive rate" = fraction of ID images accepted;
* every metric is a fraction in [0, 1] (the papers print percentages; ``results`` converts once).

    from ood_utils import metrics
    m = metrics.evaluate(id_scores, ood_scores)   # dict: auroc, fpr95, aupr_in, aupr_out

The functions agree with scikit-learn (``roc_auc_score``, ``average_precision_score``, and the first ROC
point with TPR >= 95%), ties included; ``tests/test_metrics.py`` checks this. scikit-learn is not imported
here so that the definitions can be read in one place.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

__all__ = ["auroc", "fpr_at_tpr", "aupr_in", "aupr_out", "roc_curve", "accuracy", "evaluate", "mean_std",
           "bootstrap_ci", "bootstrap_bounds", "paired_bootstrap_ci", "evaluate_sets"]


# ------------------------------------------------------------------------------------------- validation

def _to_numpy(x) -> np.ndarray:
    """Accept numpy arrays, lists and (CPU or GPU) torch tensors."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _scores(x, name: str) -> np.ndarray:
    """A 1-D, non-empty, finite float64 vector, or a ValueError that says what is wrong."""
    arr = _to_numpy(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one score per image), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: a metric needs at least one score")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} non-finite value(s) (NaN or inf) out of {arr.size}; "
                         "fix the detector (e.g. compute the score in log space) before evaluating it")
    return arr


def _check_tpr(tpr: float) -> float:
    if not (isinstance(tpr, (int, float, np.floating)) and 0.0 < float(tpr) <= 1.0):
        raise ValueError(f"tpr must be a fraction in (0, 1], got {tpr!r} (95% is tpr=0.95)")
    return float(tpr)


# ------------------------------------------------------------------------------------------- ranking metrics

def auroc(id_scores, ood_scores) -> float:
    """Area under the ROC curve: P(score of a random ID image > score of a random OOD image), ties = 1/2.

    Computed as the Mann-Whitney U statistic from average ranks, so it is exact with ties and O(n log n):
    AUROC = (sum of ID ranks - n_id (n_id + 1) / 2) / (n_id n_ood).
    """
    s_in, s_out = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    both = np.concatenate([s_in, s_out])
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    # Average rank (1-based) of each distinct value: tied scores share the mean of the ranks they span.
    upper = np.cumsum(counts)
    avg_rank = upper - (counts - 1) / 2.0
    ranks = avg_rank[inverse]
    n_in, n_out = s_in.size, s_out.size
    u = ranks[:n_in].sum() - n_in * (n_in + 1) / 2.0
    return float(u / (n_in * n_out))


def fpr_at_tpr(id_scores, ood_scores, tpr: float = 0.95) -> float:
    """FPR at ``tpr`` TPR (FPR95 for the default): the fraction of OOD images accepted as ID when the
    threshold keeps at least ``tpr`` of the ID images.

    Convention (exact with ties): an image is accepted when ``score >= threshold``, and the threshold is the
    *largest* ID score t such that the fraction of ID scores >= t is at least ``tpr``. With the ID scores
    sorted in decreasing order, that is the k-th one, k = the smallest count with k / n_id >= tpr. Tied ID
    scores may push the kept fraction above ``tpr``; tied OOD scores at the threshold count as accepted.
    This is the first point of scikit-learn's full ROC curve whose TPR reaches ``tpr``.
    """
    tpr = _check_tpr(tpr)
    s_in, s_out = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    n = s_in.size
    # Smallest k with k / n >= tpr, decided with the same float division a ROC curve uses.
    k = max(1, min(n, math.ceil(tpr * n)))
    while k > 1 and (k - 1) / n >= tpr:
        k -= 1
    while k < n and k / n < tpr:
        k += 1
    threshold = np.sort(s_in)[::-1][k - 1]
    return float(np.mean(s_out >= threshold))


def roc_curve(id_scores, ood_scores) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve (fpr, tpr), one point per distinct threshold from high to low, starting at (0, 0).

    fpr = fraction of OOD with score >= threshold, tpr = fraction of ID with score >= threshold.
    """
    s_in, s_out = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    tps, fps = _cumulative_counts(np.concatenate([s_in, s_out]),
                                  np.concatenate([np.ones(s_in.size), np.zeros(s_out.size)]))
    fpr = np.concatenate([[0.0], fps / s_out.size])
    tpr = np.concatenate([[0.0], tps / s_in.size])
    return fpr, tpr


def _cumulative_counts(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positives and negatives with score >= t, for every distinct score t in decreasing order."""
    order = np.argsort(-scores, kind="mergesort")
    scores, positive = scores[order], positive[order]
    # The last index of each run of tied scores: a threshold accepts a whole run or none of it.
    last_of_run = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.cumsum(positive)[last_of_run]
    fps = (last_of_run + 1) - tps
    return tps, fps


def _average_precision(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """Area under the precision-recall curve as the step sum  sum_n (R_n - R_{n-1}) P_n  over distinct
    thresholds (no interpolation), the definition scikit-learn's ``average_precision_score`` uses."""
    scores = np.concatenate([pos_scores, neg_scores])
    positive = np.concatenate([np.ones(pos_scores.size), np.zeros(neg_scores.size)])
    tps, fps = _cumulative_counts(scores, positive)
    precision = tps / (tps + fps)
    recall = tps / pos_scores.size
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def aupr_in(id_scores, ood_scores) -> float:
    """Average precision with ID as the positive class (higher score = more ID)."""
    return _average_precision(_scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores"))


def aupr_out(id_scores, ood_scores) -> float:
    """Average precision with OOD as the positive class: the score is negated so that higher = more OOD."""
    return _average_precision(-_scores(ood_scores, "ood_scores"), -_scores(id_scores, "id_scores"))


def evaluate(id_scores, ood_scores) -> dict[str, float]:
    """The four numbers reported per OOD set: ``auroc``, ``fpr95``, ``aupr_in``, ``aupr_out`` (fractions)."""
    s_in, s_out = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    return {
        "auroc": auroc(s_in, s_out),
        "fpr95": fpr_at_tpr(s_in, s_out, 0.95),
        "aupr_in": aupr_in(s_in, s_out),
        "aupr_out": aupr_out(s_in, s_out),
    }


# ------------------------------------------------------------------------------------------- uncertainty

METRICS = {"auroc": auroc, "fpr95": lambda s_in, s_out: fpr_at_tpr(s_in, s_out, 0.95), "aupr_in": aupr_in,
           "aupr_out": aupr_out}


def _metric_fn(metric: str):
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {sorted(METRICS)}")
    return METRICS[metric]


def _check_bootstrap(n_boot: int, level: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
        raise ValueError(f"n_boot must be an integer >= 2, got {n_boot!r}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def _draws(n: int, m: int, n_boot: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The resamples: per draw, n ID indices then m OOD indices, with replacement."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, n, size=n), rng.integers(0, m, size=m)) for _ in range(n_boot)]


def _interval(values, level: float) -> tuple[float, float]:
    tail = 50.0 * (1.0 - float(level))
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def _resampled_metrics(s_in: np.ndarray, s_out: np.ndarray, draws) -> dict[str, np.ndarray]:
    """AUROC and FPR95 on every resample at once. A resample is a vector of counts (how often each image was
    drawn), AUROC a count-weighted rank sum and FPR95 a count-weighted threshold, so no resample is sorted:
    equal, ties included, to :func:`auroc` / :func:`fpr_at_tpr` on the resampled scores, several times faster."""
    n, m = len(s_in), len(s_out)
    order = np.argsort(s_out, kind="mergesort")
    ood_sorted = s_out[order]
    below_at, above_at = np.searchsorted(ood_sorted, s_in, "left"), np.searchsorted(ood_sorted, s_in, "right")
    desc = np.argsort(-s_in, kind="mergesort")
    k = next(k for k in range(1, n + 1) if k / n >= 0.95)        # as fpr_at_tpr: kept ID share >= 95%
    auroc_values, fpr_values = [], []
    for chunk in range(0, len(draws), 50):
        w = np.stack([np.bincount(i, minlength=n) for i, _ in draws[chunk:chunk + 50]]).astype(np.float64)
        v = np.stack([np.bincount(o, minlength=m) for _, o in draws[chunk:chunk + 50]])[:, order]
        cum = np.concatenate([np.zeros((len(v), 1)), np.cumsum(v, axis=1)], axis=1)  # OOD counts below each rank
        below, ties = cum[:, below_at], cum[:, above_at] - cum[:, below_at]
        auroc_values.append((w * (below + 0.5 * ties)).sum(axis=1) / (n * m))
        threshold = s_in[desc][np.argmax(np.cumsum(w[:, desc], axis=1) >= k, axis=1)]  # k-th largest drawn ID
        at = np.searchsorted(ood_sorted, threshold, "left")[:, None]
        fpr_values.append((m - np.take_along_axis(cum, at, axis=1)[:, 0]) / m)
    return {"auroc": np.concatenate(auroc_values), "fpr95": np.concatenate(fpr_values)}


def _bootstrap_values(s_in: np.ndarray, s_out: np.ndarray, metric: str, draws) -> np.ndarray:
    if metric in ("auroc", "fpr95"):
        return _resampled_metrics(s_in, s_out, draws)[metric]
    fn = METRICS[metric]
    return np.array([fn(s_in[i], s_out[o]) for i, o in draws])


def bootstrap_ci(id_scores, ood_scores, metric: str = "auroc", n_boot: int = 200, *, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of one metric over the test samples: the ID and the OOD scores are
    each resampled with replacement (they are two independent samples), the metric recomputed ``n_boot``
    times, and the central ``level`` share of those values returned as (lo, hi). It measures how much the
    number would move with another draw of test images of the same size, not training noise (use seeds
    and :func:`mean_std` for that)."""
    _metric_fn(metric)
    _check_bootstrap(n_boot, level)
    s_in, s_out = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    return _interval(_bootstrap_values(s_in, s_out, metric, _draws(s_in.size, s_out.size, n_boot, seed)), level)


def bootstrap_bounds(id_scores, ood_scores, n_boot: int = 200, *, level: float = 0.95,
                     seed: int = 0) -> dict[str, tuple[float, float]]:
    """:func:`bootstrap_ci` of AUROC and FPR95 from the same resamples, in one pass: {metric: (lo, hi)}."""
    _check_bootstrap(n_boot, level)
    s_in, s_out = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    values = _resampled_metrics(s_in, s_out, _draws(s_in.size, s_out.size, n_boot, seed))
    return {metric: _interval(v, level) for metric, v in values.items()}


def paired_bootstrap_ci(id_a, ood_a, id_b, ood_b, metric: str = "auroc", n_boot: int = 200, *,
                        level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Interval of ``metric(a) - metric(b)`` for two detectors scored on the *same* images: each bootstrap
    draw uses the same resampled indices for both, so the noise they share cancels (a difference of
    0.005 can be significant when two intervals of 0.02 overlap)."""
    _metric_fn(metric)
    _check_bootstrap(n_boot, level)
    a_in, a_out = _scores(id_a, "id_a"), _scores(ood_a, "ood_a")
    b_in, b_out = _scores(id_b, "id_b"), _scores(ood_b, "ood_b")
    if a_in.shape != b_in.shape or a_out.shape != b_out.shape:
        raise ValueError("paired_bootstrap_ci needs both detectors scored on the same images: "
                         f"ID {a_in.shape} vs {b_in.shape}, OOD {a_out.shape} vs {b_out.shape}")
    draws = _draws(a_in.size, a_out.size, n_boot, seed)
    diff = _bootstrap_values(a_in, a_out, metric, draws) - _bootstrap_values(b_in, b_out, metric, draws)
    return _interval(diff, level)


# ------------------------------------------------------------------------------------------- many OOD sets

SUMMARIES = {"average": "all", "near": "near", "far": "far"}


def evaluate_sets(method: str, scores: dict, groups: dict, *, average_over=None,
                  summaries=("average", "near", "far"), n_boot: int = 0, seed: int = 0, **extra) -> list[dict]:
    """Tidy rows for one method over several OOD sets, the shape every track's tables are built from.

    ``scores`` maps ``"id"`` and each OOD set to its scores (higher = more ID); ``groups`` maps each OOD set
    to ``"near"`` or ``"far"``. One row per set ``{"method", "dataset", "group", "auroc", "fpr95", **extra}``
    (with ``auroc_lo/hi`` and ``fpr95_lo/hi`` from :func:`bootstrap_ci` when ``n_boot > 0``), then one row
    per summary: ``"average"`` (group ``"all"``: the plain mean over ``average_over``, default every set, as
    the papers' tables average), ``"near"`` / ``"far"`` (the mean over that group; skipped when empty)."""
    if "id" not in scores:
        raise ValueError(f"scores needs an 'id' entry besides the OOD sets; got keys {sorted(scores)}")
    missing = [name for name in groups if name not in scores]
    if missing:
        raise ValueError(f"no scores for OOD set(s) {missing}; scores has {sorted(scores)}")
    bad = {name: g for name, g in groups.items() if g not in ("near", "far")}
    if bad:
        raise ValueError(f"groups must be 'near' or 'far', got {bad}")
    unknown = [s for s in summaries if s not in SUMMARIES]
    if unknown:
        raise ValueError(f"unknown summaries {unknown}; valid: {list(SUMMARIES)}")
    if average_over is not None and not set(average_over) & set(groups):
        raise ValueError(f"average_over {list(average_over)} names none of the sets {list(groups)}")
    rows = []
    for name, group in groups.items():
        row = {"method": method, "dataset": name, "group": group}
        bounds = bootstrap_bounds(scores["id"], scores[name], n_boot, seed=seed) if n_boot else {}
        for metric in ("auroc", "fpr95"):
            row[metric] = float(METRICS[metric](scores["id"], scores[name]))
            if n_boot:
                row[f"{metric}_lo"], row[f"{metric}_hi"] = bounds[metric]
        rows.append({**row, **extra})
    for summary in summaries:
        if summary == "average":
            chosen = [r for r in rows if average_over is None or r["dataset"] in set(average_over)]
        else:
            chosen = [r for r in rows if r["group"] == summary]
        if not chosen:
            continue
        row = {"method": method, "dataset": summary, "group": SUMMARIES[summary]}
        # bounds are averaged too: wider than the mean's own interval (the sets' noise partly cancels), so
        # a summary's interval errs on the cautious side
        for key in chosen[0]:
            if key.startswith(("auroc", "fpr95")):
                row[key] = float(np.mean([r[key] for r in chosen]))
        rows.append({**row, **extra})
    return rows


# ------------------------------------------------------------------------------------------- classification

def accuracy(logits_or_preds, labels) -> float:
    """Top-1 accuracy. Accepts logits / probabilities (N, C), predicted by argmax, or predictions (N,)."""
    out = _to_numpy(logits_or_preds)
    y = _to_numpy(labels)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array of class indices, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y))):
            raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    if out.ndim == 2:
        if not np.all(np.isfinite(out)):
            raise ValueError("logits contain NaN or inf")
        preds = out.argmax(axis=1)
    elif out.ndim == 1:
        preds = out
    else:
        raise ValueError(f"logits_or_preds must be (N, C) logits or (N,) predictions, got shape {out.shape}")
    if preds.shape[0] != y.shape[0]:
        raise ValueError(f"{preds.shape[0]} predictions but {y.shape[0]} labels")
    return float(np.mean(preds.astype(np.int64) == y.astype(np.int64)))


# ------------------------------------------------------------------------------------------- over seeds

def mean_std(values: Iterable[float], ddof: int = 0) -> tuple[float, float]:
    """Mean and standard deviation over seeds (``ddof=0``, numpy's default, as the papers' code reports;
    one value gives std 0)."""
    arr = _scores(list(values) if not hasattr(values, "shape") else values, "values")
    if ddof >= arr.size:
        return float(arr.mean()), 0.0
    return float(arr.mean()), float(arr.std(ddof=ddof))
