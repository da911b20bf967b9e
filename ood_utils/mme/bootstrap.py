"""Bootstrap bounds added to rows that were evaluated without them (the MME tables score first, then
decide which rows need intervals). The intervals themselves are ``metrics.bootstrap_bounds``."""
from __future__ import annotations

import numpy as np

from .. import metrics
from ..metrics import bootstrap_bounds, paired_bootstrap_ci as paired_bounds  # noqa: F401 (re-exported)


def with_bounds(rows: list[dict], scores: dict, average_over, n_boot: int, seed: int = 0) -> list[dict]:
    """``metrics.evaluate_sets(..., n_boot=n_boot)`` rows, the bounds computed by :func:`bootstrap_bounds`
    (``metrics.bootstrap_bounds``): per set, then averaged into each summary as evaluate_sets does."""
    per_set = {r["dataset"]: r for r in rows if r["dataset"] not in metrics.SUMMARIES}
    for name, row in per_set.items():
        for metric, (lo, hi) in bootstrap_bounds(scores["id"], scores[name], n_boot, seed=seed).items():
            row[f"{metric}_lo"], row[f"{metric}_hi"] = lo, hi
    for row in rows:
        if row["dataset"] in metrics.SUMMARIES:
            chosen = [r for r in per_set.values() if (r["dataset"] in set(average_over) if row["group"] == "all"
                                                      else r["group"] == row["group"])]
            for key in ("auroc_lo", "auroc_hi", "fpr95_lo", "fpr95_hi"):
                row[key] = float(np.mean([r[key] for r in chosen]))
    return rows
