"""Figures of notebooks 11-12: methods with error bars over seeds, the gradient term's effect seed by seed,
and what the energy-based sampler picks from a candidate pool.

Statistical plots use seaborn (dots with error bars, no truncated bars); every function draws on the axes it
is given and returns them, so the notebooks arrange and save figures with ``plots.savefig``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import plots
from .report import title

METRIC_LABEL = {"auroc": "AUROC (higher is better)", "fpr95": "FPR95 (lower is better)",
                "id_accuracy": "ID accuracy"}
SUMMARY_MARKERS = {"near": "o", "far": "s", "average": "D"}
#: the objectives of the seed-by-seed panel: colours the summary panels (near / far / average) do not use
PAIR_COLORS = (plots.COLORS[3], plots.COLORS[4], plots.COLORS[7])


def _sns():
    import seaborn as sns

    return sns


def method_points(rows: pd.DataFrame, ax, metric: str = "auroc", datasets=("near", "far", "average"),
                  table: str = "4", posthoc: pd.DataFrame | None = None, paper: pd.DataFrame | None = None,
                  paper_label: str = ""):
    """One row per method, a dot per summary (near / far / average) with the std over seeds as error bar;
    post-hoc baselines (one model: their bootstrap 95% interval) below a line; optionally the paper's values
    as hollow diamonds labelled with the setting they come from (``paper``: columns method, value in %)."""
    sns = _sns()
    frame = rows[rows["dataset"].isin(datasets)].copy()
    if posthoc is not None and not posthoc.empty:
        frame = pd.concat([frame, posthoc[posthoc["dataset"].isin(datasets)]], ignore_index=True)
    frame["label"] = [title(m, table if m in _table_methods(table) else "main") for m in frame["method"]]
    frame["value"] = 100.0 * frame[metric]
    order = list(dict.fromkeys(frame["label"]))
    sns.pointplot(data=frame, x="value", y="label", hue="dataset", hue_order=list(datasets), order=order,
                  errorbar="sd", dodge=0.45, linestyle="none", markers=[SUMMARY_MARKERS[d] for d in datasets],
                  palette=plots.COLORS[:len(datasets)], ax=ax, capsize=0.15, err_kws={"linewidth": 1.2})
    if posthoc is not None and not posthoc.empty and f"{metric}_lo" in posthoc:
        _draw_intervals(posthoc, ax, metric, datasets, order, table)
    if paper is not None and not paper.empty:
        rows_ = [(order.index(m), v) for m, v in zip(paper["method"], paper["value"]) if m in order]
        if rows_:
            y, v = zip(*rows_)
            ax.scatter(v, y, marker="D", s=60, facecolors="none", edgecolors="black", zorder=5,
                       label=f"paper, {paper_label}")
    ax.set_xlabel(f"{METRIC_LABEL.get(metric, metric)}, %")
    ax.set_ylabel("")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8,
              title="colour / marker: OOD summary; grey lines: post-hoc bootstrap 95% intervals", title_fontsize=7)
    return ax


def _table_methods(table: str) -> set:
    from .report import TITLES

    return set(TITLES.get(table, {}))


def _draw_intervals(posthoc, ax, metric, datasets, order, table):
    """Thin lines for the bootstrap intervals of the post-hoc baselines (no seeds to average over)."""
    offsets = np.linspace(-0.45 / 2, 0.45 / 2, len(datasets)) if len(datasets) > 1 else [0.0]
    for r in posthoc[posthoc["dataset"].isin(datasets)].itertuples(index=False):
        label = title(r.method, "main")
        if label not in order:
            continue
        y = order.index(label) + offsets[list(datasets).index(r.dataset)]
        ax.plot([100 * getattr(r, f"{metric}_lo"), 100 * getattr(r, f"{metric}_hi")], [y, y], color="grey",
                linewidth=0.8, zorder=1)


def grad_effect(rows: pd.DataFrame, ax, pairs: dict, metric: str = "auroc", dataset: str = "near",
                table: str = "4"):
    """Seed by seed: each objective without the gradient term (left) and with it (right), joined by a line
    per seed; the mean as a large marker. A rising line = the term helped on that seed."""
    sel = rows[rows["dataset"] == dataset]
    for i, (plain, grad) in enumerate(pairs.items()):
        a = sel[sel["method"] == plain].sort_values("seed")
        b = sel[sel["method"] == grad].sort_values("seed")
        if a.empty or b.empty:
            continue
        color = PAIR_COLORS[i % len(PAIR_COLORS)]
        x0, x1 = 2 * i, 2 * i + 1
        for va, vb in zip(100 * a[metric].to_numpy(), 100 * b[metric].to_numpy()):
            ax.plot([x0, x1], [va, vb], color=color, alpha=0.5, marker="o", markersize=4)
        ax.plot([x0, x1], [100 * a[metric].mean(), 100 * b[metric].mean()], color=color, linewidth=2.5,
                marker="D", markersize=8, label=title(plain, table))
    ticks = [(2 * i + j, title(m, table)) for i, p in enumerate(pairs.items()) for j, m in enumerate(p)]
    ax.set_xticks([t for t, _ in ticks], [lab for _, lab in ticks], rotation=30, ha="right")
    ax.set_ylabel(f"{METRIC_LABEL.get(metric, metric)} on {dataset}-OOD, %")
    ax.legend(title="objective (thin: one seed, thick: mean)", fontsize=8, title_fontsize=8)
    return ax


def per_set_points(rows: pd.DataFrame, ax, methods, metric: str = "auroc", table: str = "4"):
    """Every OOD set (near first) on the x axis, one dot per method with the std over seeds."""
    sns = _sns()
    sel = rows[rows["method"].isin(methods) & ~rows["dataset"].isin(["average", "near", "far", "id"])].copy()
    sel = sel.sort_values("group", key=lambda g: g.map({"near": 0, "far": 1}), kind="stable")
    sel["method"] = [title(m, table) for m in sel["method"]]
    sel["value"] = 100.0 * sel[metric]
    sns.pointplot(data=sel, x="dataset", y="value", hue="method", errorbar="sd", dodge=0.5, linestyle="none",
                  ax=ax, palette=plots.COLORS[:len(methods)], capsize=0.1, err_kws={"linewidth": 1})
    ax.set_ylabel(f"{METRIC_LABEL.get(metric, metric)}, %")
    ax.set_xlabel("")
    ax.tick_params(axis="x", rotation=30)
    return ax


def pool_projection(feats: np.ndarray) -> np.ndarray:
    """2D PCA of the L2-normalised features (the space K-Means clusters in), for pictures only."""
    z = feats / np.linalg.norm(feats, axis=1, keepdims=True).clip(1e-12)
    z = z - z.mean(0)
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    return z @ vt[:2].T


def sampler_picture(proj: np.ndarray, labels: np.ndarray, low: np.ndarray, high: np.ndarray, ax,
                    extra: np.ndarray | None = None):
    """The pool in 2D coloured by cluster; the lowest-energy pick of each cluster as a black-edged triangle
    down, the highest-energy one as a triangle up, random top-ups as crosses."""
    k = int(labels.max()) + 1
    cmap = __import__("matplotlib").colormaps["tab20"].resampled(max(k, 2))
    ax.scatter(proj[:, 0], proj[:, 1], c=labels % 20, cmap=cmap, s=10, alpha=0.45, linewidths=0)
    ax.scatter(proj[low, 0], proj[low, 1], marker="v", s=60, c=labels[low] % 20, cmap=cmap, edgecolors="black",
               label="lowest energy in cluster (for eq. 1)")
    ax.scatter(proj[high, 0], proj[high, 1], marker="^", s=60, c=labels[high] % 20, cmap=cmap,
               edgecolors="black", label="highest energy in cluster (for eq. 3)")
    if extra is not None and len(extra):
        ax.scatter(proj[extra, 0], proj[extra, 1], marker="x", s=30, c="black", label="random top-up")
    ax.set_xlabel("PC 1 of normalised features")
    ax.set_ylabel("PC 2")
    ax.legend(loc="best", fontsize=8)
    return ax


def displayable(x, id_dataset: str) -> np.ndarray:
    """Normalised input tensors (N, C, H, W) back to [0, 1] images with the ID dataset's mean and std."""
    from .. import data

    info = data.ID_DATASETS[id_dataset]
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    mean = np.asarray(info.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(info.std, dtype=np.float32).reshape(1, -1, 1, 1)
    return np.clip(arr * std + mean, 0.0, 1.0)
