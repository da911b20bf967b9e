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
    return ax.figure


def sweep_panels(sweep_runs: dict, paper_best: dict | None = None):
    """Figs. 5-6: average AUROC and FPR95 against each swept parameter (one seed)."""
    keys = list(sweep_runs)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 3.0), squeeze=False)
    for ax, key in zip(axes[0], keys):
        vals = [r.params["value"] for r in sweep_runs[key]]
        au = [np.mean([metrics.auroc(r.scores["id"], s) for k, s in r.scores.items() if k != "id"]) * 100
              for r in sweep_runs[key]]
        fp = [np.mean([metrics.fpr_at_tpr(r.scores["id"], s) for k, s in r.scores.items() if k != "id"]) * 100
              for r in sweep_runs[key]]
        ax.plot(vals, au, "o-", color="tab:blue", label="AUROC")
        ax2 = ax.twinx()
        ax2.plot(vals, fp, "s--", color="tab:red", label="FPR95")
        if paper_best and key in paper_best:
            ax.axvline(paper_best[key], color="grey", lw=1, ls=":")
        ax.set(xlabel=key, ylabel="average AUROC (%)")
        ax2.set_ylabel("average FPR95 (%)", color="tab:red")
        if key in ("step_size", "reg_weight", "boundary_ratio"):
            ax.set_xscale("log")
    fig.tight_layout()
    return fig


def method_points(frame: pd.DataFrame, id_dataset: str, order=None, ax=None):
    """Average AUROC and FPR95 of each outlier generator (ablations), one seed, as two dot columns."""
    sub = frame[(frame["id_dataset"] == id_dataset) & (frame["dataset"] == "average")]
    sub = sub.groupby("method")[["auroc", "fpr95"]].mean() * 100
    sub = sub.loc[[m for m in (order or sub.index) if m in sub.index]]
    if ax is None:
        _, ax = plt.subplots(1, 2, figsize=(9, 0.45 * len(sub) + 1.2), sharey=True)
    for a, metric in zip(ax, ("auroc", "fpr95")):
        a.barh(sub.index, sub[metric], color="tab:blue" if metric == "auroc" else "tab:red")
        for i, v in enumerate(sub[metric]):
            a.text(v, i, f" {v:.1f}", va="center", fontsize=8)
        a.set(xlabel=f"average {metric.upper()} (%)")
    ax[0].invert_yaxis()
    ax[0].figure.tight_layout()
    return ax[0].figure


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
