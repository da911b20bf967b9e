"""Figures of notebooks 30, 31 and 32 (the walk figure lives beside the walks)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .. import metrics, plots


def pca_2d(points: np.ndarray, fit_on: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Project onto the top two principal directions of ``fit_on`` (default: ``points``); returns
    (projected points, the (2, D) directions)."""
    base = points if fit_on is None else fit_on
    mean = base.mean(0)
    _, _, vt = np.linalg.svd(base - mean, full_matrices=False)
    return (points - mean) @ vt[:2].T, vt[:2]


def latent_map(feats, labels, anchors, class_names, *, outliers=None, ax=None, max_points: int = 1500):
    """The latent sphere seen through PCA: normalised features coloured by class, the anchors' directions
    as stars (and, if given, outlier features as black crosses). The PCA is fitted on the features."""
    z = F.normalize(torch.as_tensor(feats).float(), dim=1).numpy()
    g = F.normalize(torch.as_tensor(anchors).float(), dim=1).numpy()
    keep = np.random.default_rng(0).permutation(len(z))[:max_points]
    pz, dirs = pca_2d(z[keep])
    mean = z[keep].mean(0)
    pg = (g - mean) @ dirs.T
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 5.5))
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    y = np.asarray(labels)[keep]
    for c, name in enumerate(class_names):
        ax.scatter(*pz[y == c].T, s=6, alpha=0.35, color=cmap(c % cmap.N), label=name)
        ax.scatter(*pg[c], marker="*", s=260, color=cmap(c % cmap.N), edgecolor="black", linewidth=0.8)
    if outliers is not None:
        po = (F.normalize(torch.as_tensor(outliers).float(), dim=1).numpy() - mean) @ dirs.T
        ax.scatter(*po.T, marker="x", s=18, color="black", label="outliers")
    ax.set(xlabel="PC 1", ylabel="PC 2", title="normalised features (dots) and anchors (stars)")
    ax.legend(fontsize=7, markerscale=2, ncol=2, loc="best")
    return ax.figure


def per_set_points(frame: pd.DataFrame, id_dataset: str, metric: str = "auroc", ax=None):
    """Mean +- std over seeds of ``metric`` (percent) per OOD set, one point per method (points, not bars:
    the AUROC axis is zoomed to the data, and a bar on a zoomed axis exaggerates its length)."""
    import seaborn as sns

    sub = frame[(frame["id_dataset"] == id_dataset) & ~frame["dataset"].isin(["id"])].copy()
    sub["value"] = sub[metric] * 100
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.6))
    sns.pointplot(data=sub, x="dataset", y="value", hue="method", errorbar="sd", dodge=0.4, linestyle="none",
                  capsize=0.1, ax=ax)
    ax.set(xlabel="", ylabel=f"{metric.upper()} (%)", title=f"{id_dataset}: {metric.upper()} per OOD set, mean ± std over seeds")
    ax.tick_params(axis="x", rotation=30)
    if metric == "auroc":
        ax.set_ylim(max(0, sub["value"].min() - 5), 100.5)
        chance_line(ax, "h")
    return ax.figure


def chance_line(ax, orientation: str = "h", near: float = 60.0):
    """AUROC 50% (chance), drawn when the AUROC axis reaches below ``near`` percent."""
    lo, _ = ax.get_ylim() if orientation == "h" else ax.get_xlim()
    if lo <= near:
        (ax.axhline if orientation == "h" else ax.axvline)(50, color="grey", ls="--", lw=1, label="chance (AUROC 50%)")


SWEEP_LABELS = {"step_size": r"step size $\alpha$", "extra_steps": "extra steps $c$ after crossing",
                "boundary_ratio": "boundary ratio $r$ (%)", "reg_weight": r"regularisation weight $\beta$",
                "max_steps": "maximum steps $K$"}


def _mean_interval(values) -> tuple[float, float]:
    """Mean and the half-width of its 95% t interval over seeds (0 for one seed)."""
    from .. import results

    v = np.asarray(values, dtype=float)
    half = results.t_halfwidth(float(v.std(ddof=1)), v.size) if v.size > 1 else 0.0
    return float(v.mean()), half


def sweep_panels(sweep_runs: dict, paper_best: dict | None = None, metric_of=None):
    """Figs. 5-6: the average AUROC over OOD sets (mean of the per-set AUROCs, percent) against each swept
    parameter, mean and 95% t interval over seeds; the paper's value marked, the parameter's values as
    evenly spaced categories (the grids are uneven: a log axis crowds their ticks)."""
    from .report import run_metric

    metric_of = metric_of or (lambda r: run_metric(r, "auroc", "average"))
    keys = list(sweep_runs)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 3.4), squeeze=False, sharey=True)
    for ax, key in zip(axes[0], keys):
        values = sorted({r.params["value"] for r in sweep_runs[key]})
        stats = [_mean_interval([metric_of(r) * 100 for r in sweep_runs[key] if r.params["value"] == v]) for v in values]
        x = np.arange(len(values))
        ax.errorbar(x, [m for m, _ in stats], yerr=[h for _, h in stats], fmt="o-", capsize=4,
                    color=plots.COLORS[0], label="BOOD, mean ± 95% CI over seeds")
        if paper_best and paper_best.get(key) in values:
            i = values.index(paper_best[key])
            ax.plot(x[i], stats[i][0], "*", ms=16, color=plots.COLORS[3], zorder=5, label="the paper's value")
        failed = [j for j, v in enumerate(values) if any(r.health is not None and not r.health.ok
                                                          for r in sweep_runs[key] if r.params["value"] == v)]
        if failed:
            ax.plot(x[failed], [stats[j][0] for j in failed], "x", ms=12, color="black", label="a run failed its health checks")
        ax.set_xticks(x, [f"{v:g}" for v in values])
        ax.set(xlabel=SWEEP_LABELS.get(key, key), title=f"sweep of {key}")
        ax.set_xlim(-0.5, len(values) - 0.5)
    axes[0][0].set_ylabel("average AUROC over OOD sets (%)")
    chance_line(axes[0][0], "h")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def method_points(runs_by_method: dict, order=None, metric_of=None, ax=None):
    """Average AUROC over OOD sets (percent) of each outlier generator (ablations): every seed as a dot,
    the mean with its 95% t interval over seeds as a bar; failed runs as crosses."""
    from .report import run_metric

    metric_of = metric_of or (lambda r: run_metric(r, "auroc", "average"))
    names = [m for m in (order or runs_by_method) if m in runs_by_method]
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.4))
    for i, name in enumerate(names):
        runs = runs_by_method[name]
        vals = [metric_of(r) * 100 for r in runs]
        mean, half = _mean_interval(vals)
        color = plots.COLORS[3] if name == "BOOD" else plots.COLORS[0]
        ax.errorbar(mean, i, xerr=half, fmt="D", color=color, capsize=4, ms=7)
        ok = [r.health is None or r.health.ok for r in runs]
        ax.scatter([v for v, k in zip(vals, ok) if k], [i + 0.18] * sum(ok), s=14, color=color, alpha=0.6)
        if not all(ok):
            ax.scatter([v for v, k in zip(vals, ok) if not k], [i + 0.18] * (len(ok) - sum(ok)), marker="x",
                       s=40, color="black")
        ax.text(mean + half, i, f"  {mean:.1f}", va="center", fontsize=8)
    chance_line(ax, "v")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set(xlabel="average AUROC over OOD sets (%): seeds (dots), mean ± 95% CI (diamond)",
           title="where the outlier features come from (Tables 3 and 6, DreamOOD)")
    ax.figure.tight_layout()
    return ax.figure


def label_grid_rows(ax, labels, tile: int = 28, pad: int = 2, fontsize: float = 8, titled: bool = False):
    """Name the rows of a ``plots.image_grid`` mosaic on its y axis (``titled``: the grid has tile titles)."""
    gap = pad + (max(4, tile // 3) if titled else 0)
    ax.set_yticks([gap + r * (tile + gap) + tile / 2 for r in range(len(labels))])
    ax.set_yticklabels(labels, fontsize=fontsize)
    ax.tick_params(axis="y", length=0)
    ax.set_xticks([])
    ax.grid(False)
    ax.axis("on")
    for side in ax.spines.values():
        side.set_visible(False)


def decoder_curves(histories: dict, fidelity: dict):
    """The mini decoders' training losses (autoencoder, denoiser) per ID dataset, with their class fidelity."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for k, (ds, hist) in enumerate(histories.items()):
        frame = pd.DataFrame(hist)
        for ax, phase in zip(axes, ("ae", "denoiser")):
            part = frame[frame.phase == phase]
            ax.plot(part.step, part.loss, color=plots.COLORS[k % len(plots.COLORS)],
                    label=f"{ds} (class fidelity {fidelity[ds]:.2f})")
    axes[0].set(xlabel="step", ylabel="binary cross-entropy", title="autoencoder (pixels)")
    axes[1].set(xlabel="step", ylabel="MSE of the velocity", title="conditional denoiser (latent)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def outlier_readings(frame: pd.DataFrame):
    """Stacked bars: how the base classifier reads decoded images of each setting: as the source class,
    as another class without confidence, or confidently as another ID class (a clean digit, not an outlier)."""
    parts = [("source class", plots.COLORS[0]), ("another class, unsure", plots.COLORS[1]),
             ("another class, confident", plots.COLORS[3])]
    fig, ax = plt.subplots(figsize=(8.5, 0.45 * len(frame) + 1.3))
    left = np.zeros(len(frame))
    labels = [f"{r['ID dataset']}: {r['images']}" for _, r in frame.iterrows()]
    for name, color in parts:
        ax.barh(labels, frame[name] * 100, left=left, color=color, label=name)
        for i, (l, v) in enumerate(zip(left, frame[name] * 100)):
            if v >= 6:
                ax.text(l + v / 2, i, f"{v:.0f}", ha="center", va="center", fontsize=8, color="white")
        left += frame[name].to_numpy() * 100
    ax.invert_yaxis()
    ax.set(xlabel="decoded images (%)", xlim=(0, 100))
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def claim_intervals(numbers: pd.DataFrame, titles: dict):
    """One panel per claim: the claimed-direction effect with its 95% interval, per ID dataset."""
    keys = list(dict.fromkeys(numbers.claim))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 0.5 * numbers.dataset.nunique() + 1.9),
                             sharey=True, squeeze=False)
    datasets = list(dict.fromkeys(numbers.dataset))
    for ax, key in zip(axes[0], keys):
        part = numbers[numbers.claim == key].set_index("dataset").reindex(datasets)
        err = [(part.difference - part.lo).clip(lower=0), (part.hi - part.difference).clip(lower=0)]
        ax.errorbar(part.difference, range(len(part)), xerr=err, fmt="o", capsize=3, color=plots.COLORS[0])
        ax.axvline(0, color="0.5", lw=1, ls="--")
        ax.set_title(titles.get(key, key), fontsize=9)
        ax.set_ylim(-0.6, len(part) - 0.4)
        ax.margins(x=0.15)
    axes[0, 0].set_yticks(range(len(datasets)))
    axes[0, 0].set_yticklabels(datasets)
    fig.suptitle("claimed-direction effects with 95% bootstrap intervals (right of the dashed 0 = as the paper says)",
                 fontsize=10)
    fig.tight_layout()
    return fig


savefig = plots.savefig
