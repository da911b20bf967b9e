"""The MME notebooks' figures, each drawn into axes the notebook creates (so it controls size and layout).

Colours follow the kit's palette (``plots.COLORS``, Okabe-Ito); heatmaps and label placement are the shared
``plots.heatmap`` and ``plots.place_labels``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import plots
from .assumptions import grid_matrix, noop_cells
from .benchmark import FAMILIES, FIT_ON, PAPER_NAMES, average_table, per_set
from .ensemble import TRUNCATION_TITLES
from .factors import factor_label

FAMILY_COLORS = {"probability": "#009E73", "logit": "#0072B2", "feature": "#E69F00", "multiple": "#D55E00"}


GROUP_COLORS = {g: plots.color("group", g) for g in ("ID", "near", "far")}   # the kit's palette


FIT_ON_TITLES = {"raw": "S fitted on raw z (as inside MME)", "truncated": "S fitted on g(z_train)"}


FIT_ON_SHORT = {"raw": "S fitted on raw z", "truncated": "S fitted on g(z_train)"}


def plot_covariance_gaps(cov: pd.DataFrame, ax):
    """Assumption 1 per pair and OOD set: (Cov_in - Cov_out) / |Cov_in|. Blue (> 0): the assumption holds."""
    cov = per_set(cov)
    cov = cov.assign(pair=[f"{PAPER_NAMES.get(a, a)} · {PAPER_NAMES.get(b, b)}"
                           for a, b in zip(cov["score_a"], cov["score_b"])])
    m = cov.pivot_table(index="pair", columns="dataset", values="rel_gap", sort=False)
    m = m[list(dict.fromkeys(cov["dataset"]))]
    image = plots.heatmap(ax, m.clip(-1, 1).values, list(m.index), list(m.columns), fmt=".2f",
                          cmap="RdBu", vmin=-1, vmax=1, colorbar=False)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.03, label="relative gap (clipped to ±1)")
    ax.set_title("Assumption 1 per pair and OOD set: (Cov_in − Cov_out) / |Cov_in|   (blue: holds, red: fails)")
    return ax


def plot_consistency(ratios: pd.DataFrame, ax, column: str = "co_scale"):
    """The CO consistency ratio per set with its binomial 95% interval, ID first; Assumption 1 predicts every
    OOD set below the ID line."""
    from matplotlib.lines import Line2D

    values = ratios[column].to_numpy(dtype=float)
    half = 2.0 * np.sqrt(values * (1 - values) / ratios["n"].to_numpy(dtype=float))
    colors = [GROUP_COLORS.get(g, "#777777") for g in ratios["group"]]
    x = np.arange(len(ratios))
    ax.axhline(values[0], color="#555555", lw=1, ls="--", zorder=0)
    ax.vlines(x, values - half, values + half, colors=colors, lw=2.2, alpha=0.6)
    ax.scatter(x, values, color=colors, s=40, zorder=3)
    for i, v in enumerate(values):
        ax.annotate(f"{v:.2f}", (i, v + half[i]), xytext=(0, 3), textcoords="offset points", ha="center",
                    fontsize=8)
    ax.set_xticks(x, labels=list(ratios["dataset"]), rotation=30, ha="right")
    ax.set_ylabel("consistency ratio (95% interval)")
    ax.set_ylim(0, 1.08)
    handles = [plt_patch(GROUP_COLORS[g], g if g == "ID" else f"{g}-OOD") for g in ("ID", "near", "far")]
    handles.append(Line2D([], [], color="#555555", lw=1, ls="--", label="ID ratio"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


def plt_patch(color, label):
    from matplotlib.patches import Patch

    return Patch(color=color, label=label)


def mark_chance(ax, axis: str = "x") -> None:
    """AUROC's chance level: a dashed line at 0.5 where the axis shows it; on an axis zoomed above it the
    axis label says where chance lies, so a zoomed gap is not read as a large one."""
    lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
    if lo <= 0.5 <= hi:
        line = ax.axvline if axis == "x" else ax.axhline
        line(0.5, color="#777777", ls="--", lw=1, zorder=0, label="chance (AUROC 0.5)")
        return
    label = ax.get_xlabel() if axis == "x" else ax.get_ylabel()
    (ax.set_xlabel if axis == "x" else ax.set_ylabel)(f"{label}\n(axis zoomed: chance is 0.5)")


def plot_truncation_grid(grid: pd.DataFrame, axes, value: str = "auroc"):
    """Fig. 3: scoring function x truncation heatmaps of the average AUROC (``value="auroc"``) or of its gain
    over the raw feature (``value="gain"``; Hypothesis 1 predicts >= 0), one panel per protocol of
    ``grid["fit_on"]``, on one colour scale. The gain scale is symmetric around 0 and saturates at the 75th
    percentile of |gain| (at least 0.01), so the small gains that decide the hypothesis keep their colour;
    the cells print the exact values. Cells where the truncation changes nothing are hatched."""
    protocols = [p for p in FIT_ON if p in set(grid.get("fit_on", pd.Series(["raw"])))]
    mats = [grid_matrix(grid, value, fit_on=p) for p in protocols]
    if value == "gain":
        mats = [m.drop(columns="none", errors="ignore") for m in mats]
        gains = np.abs(np.concatenate([m.to_numpy().ravel() for m in mats]))
        lim = max(0.01, float(np.nanpercentile(gains[gains > 1e-12], 75)) if (gains > 1e-12).any() else 0.01)
        cmap, vmin, vmax, fmt = "RdBu", -lim, lim, "+.3f"
    else:
        cmap, vmin, vmax, fmt = "viridis", min(float(np.nanmin(m.values)) for m in mats), 1.0, ".3f"
    image = None
    for k, (ax, protocol, m) in enumerate(zip(axes, protocols, mats)):
        image = plots.heatmap(ax, m.values, [PAPER_NAMES.get(r, r) for r in m.index],
                              [TRUNCATION_TITLES.get(c, c) for c in m.columns], fmt=fmt, cmap=cmap,
                              vmin=vmin, vmax=vmax, fontsize=7.5, colorbar=False)
        noop = noop_cells(grid, protocol).reindex(index=m.index, columns=m.columns)
        for (i, j), flag in np.ndenumerate(noop.to_numpy()):
            if flag is True or flag == 1:
                ax.add_patch(_hatch(j, i))
        ax.set_title(FIT_ON_TITLES.get(protocol, protocol))
        ax.set_xlabel("feature truncation g")
        if k:
            ax.tick_params(labelleft=False)
    label = "average AUROC" if value == "auroc" else "AUROC(S(g(z))) − AUROC(S(z))"
    axes[0].figure.colorbar(image, ax=list(axes[:len(protocols)]), fraction=0.03, pad=0.02, label=label,
                            extend="both" if value == "gain" else "neither")
    from matplotlib.patches import Patch

    axes[len(protocols) - 1].legend(
        handles=[Patch(facecolor="white", edgecolor="#888888", hatch="///",
                       label="g changes nothing S reads:\nleft out of the counts")],
        loc="upper left", bbox_to_anchor=(0.0, -0.22), frameon=False, fontsize=8)
    return axes


def _hatch(j, i):
    from matplotlib.patches import Rectangle

    return Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="#888888", lw=0)


def plot_proposition(check: pd.DataFrame, axes):
    """Proposition 1 per (factors, OOD set): left the paper's measure V, right AUROC (scale-free).
    Green = the product separates at least as well as its best factor; red = it does not. A white dot marks
    a cell where a premise of the proof is broken (``check["premises"]`` False: one of eq. 2, E_out[S] >= 1,
    Assumption 1; never checked for the product of all five)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D

    cmap = ListedColormap(["#D55E00", "#009E73"])
    for ax, col, title in ((axes[0], "holds", "V(S1·S2) ≥ max V(Si)"),
                           (axes[1], "auroc_holds", "AUROC(S1·S2) ≥ max AUROC(Si)")):
        m = check.pivot_table(index="factors", columns="dataset", values=col, aggfunc="first", sort=False)
        m = m[list(dict.fromkeys(check["dataset"]))].astype(float)
        premise = check.pivot_table(index="factors", columns="dataset", values="premises", aggfunc="first",
                                    sort=False)[m.columns]
        ax.imshow(m.values, cmap=cmap, vmin=0, vmax=1, aspect="auto")
        for (i, j), ok in np.ndenumerate(premise.values):
            if not ok:
                ax.plot(j, i, "o", color="white", ms=3.5)
        ax.set_xticks(range(m.shape[1]), labels=list(m.columns), rotation=30, ha="right")
        ax.set_yticks(range(m.shape[0]), labels=[factor_label(f) for f in m.index])
        ax.grid(False)
        ax.set_title(f"{title}: holds in {m.values.mean():.0%}")
    handles = [plt_patch("#009E73", "holds"), plt_patch("#D55E00", "fails"),
               Line2D([], [], marker="o", ls="", color="white", markeredgecolor="#333333", ms=5,
                      label="a premise of the proof broken\n(eq. 2, E_out[S] ≥ 1 or Assumption 1)")]
    axes[-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return axes


def plot_score_distributions(scores: dict[str, np.ndarray], groups: dict[str, str], ax, title: str = "",
                             coverage: float = 99.0):
    """Densities of one score: ID test, and the OOD sets pooled by group (near, far). The x axis spans the
    central ``coverage`` percent of all scores; the few beyond it are left out, not piled into the end bins
    (which would draw false spikes), and the legend says how many each group lost."""
    import seaborn as sns

    pools = {"ID": scores["id"]}
    for g in ("near", "far"):
        sets = [scores[n] for n, gg in groups.items() if gg == g]
        if sets:
            pools[f"{g}-OOD"] = np.concatenate(sets)
    tail = (100.0 - coverage) / 2
    lo, hi = np.percentile(np.concatenate(list(pools.values())), [tail, 100 - tail])
    for name, values in pools.items():
        inside = (values >= lo) & (values <= hi)
        color = GROUP_COLORS[name.split("-")[0]]
        cut = f", {1 - inside.mean():.0%} off the axis" if inside.mean() < 0.995 else ""
        sns.histplot(values[inside], bins=np.linspace(lo, hi, 50), stat="density", element="step", fill=True,
                     alpha=0.3, color=color, ax=ax, label=f"{name} (n={len(values)}{cut})")
    ax.set_xlim(lo, hi)
    ax.set_title(title)
    ax.set_ylabel("density")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


def plot_sensitivity(sens: pd.DataFrame, axes, paper_values: dict | None = None):
    """Fig. 5: MME's AUROC against lambda and against T (log x axes): average, near- and far-OOD means."""
    for ax, param in zip(axes, ("lambda", "T")):
        sub = sens[(sens["param"] == param) & ~sens["dataset"].isin(("near", "far"))]
        for label, mask, color in (("average", sub["dataset"] == "average", "#000000"),
                                   ("near-OOD", sub["group"] == "near", GROUP_COLORS["near"]),
                                   ("far-OOD", sub["group"] == "far", GROUP_COLORS["far"])):
            curve = sub[mask].groupby("value")["auroc"].mean()
            if len(curve):
                ax.plot(curve.index, curve.values, "o-", color=color, label=label)
        if paper_values and param in paper_values:
            ax.axvline(paper_values[param], color="#777777", ls=":", label="preset value")
        ax.set_xscale("log")
        values = sorted(sub["value"].unique())
        ax.set_xticks(values, labels=[f"{v:g}" for v in values])
        ax.minorticks_off()
        ax.set_xlabel("λ (CO+ weight)" if param == "lambda" else "T (NME+ temperature)")
        ax.set_ylabel("AUROC")
        mark_chance(ax, "y")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return axes


def _scatter_methods(summary: pd.DataFrame, ax, metric: str):
    for _, r in summary.iterrows():
        mme = r["method"] == "mme"
        ax.scatter(r[f"far_{metric}"], r[f"near_{metric}"], s=110 if mme else 45,
                   marker="^" if r["truncation"] else "o", color=FAMILY_COLORS[r["family"]],
                   edgecolor="black" if mme else "none", linewidth=1.2, zorder=3)
    ax.set_xlabel(f"far-OOD {metric.upper()} (mean over far sets)")
    ax.set_ylabel(f"near-OOD {metric.upper()} (mean over near sets)")


def plot_near_far(summary: pd.DataFrame, axes, metric: str = "auroc", title: str | None = None):
    """Fig. 1 (right): near-OOD against far-OOD mean AUROC per method; colour = information source,
    triangle = a feature truncation with the Energy score, circle = a scoring function. With two axes the
    second zooms into the crowded corner (methods at or above the median on both axes, and MME), drawn as a
    box on the first. ``title`` becomes the figure's title; labels are placed last, on the final layout."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    axes = list(np.atleast_1d(axes))
    far, near = summary[f"far_{metric}"].to_numpy(float), summary[f"near_{metric}"].to_numpy(float)
    if not (np.isfinite(far).all() and np.isfinite(near).all()):
        raise ValueError("Fig. 1 needs near- and far-OOD sets; this benchmark lacks one of the two groups")
    xy = np.column_stack([far, near])
    titles = summary["title"].tolist()
    weights = np.where(summary["method"] == "mme", 1.0, 0.0)
    _scatter_methods(summary, axes[0], metric)
    pad_x, pad_y = 0.04 * np.ptp(far) + 1e-3, 0.06 * np.ptp(near) + 1e-3
    axes[0].set_xlim(far.min() - pad_x, far.max() + pad_x)
    axes[0].set_ylim(near.min() - pad_y, near.max() + 2 * pad_y)
    if metric == "auroc":
        mark_chance(axes[0], "x")
        mark_chance(axes[0], "y")
    handles = [plt_patch(c, f) for f, c in FAMILY_COLORS.items()]
    handles += [Line2D([], [], marker="o", ls="", color="#777777", label="scoring function"),
                Line2D([], [], marker="^", ls="", color="#777777", label="truncation + Energy")]
    axes[-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="uses")
    if title:
        axes[0].figure.suptitle(title)
    if len(axes) == 1:
        return [plots.place_labels(axes[0], far, near, titles, weights=weights)]
    inside = ((far >= np.median(far)) & (near >= np.median(near))) | (summary["method"] == "mme").to_numpy()
    x0, x1, y0, y1 = far[inside].min(), far[inside].max(), near[inside].min(), near[inside].max()
    px, py = 0.12 * (x1 - x0) + 2e-4, 0.12 * (y1 - y0) + 2e-4
    box = (x0 - px, x1 + 2 * px, y0 - py, y1 + py)
    axes[0].add_patch(Rectangle((box[0], box[2]), box[1] - box[0], box[3] - box[2], fill=False, ls="--",
                                edgecolor="#777777", lw=1))
    axes[0].set_title("all methods (the dashed box is zoomed on the right)")
    _scatter_methods(summary, axes[1], metric)
    axes[1].set_xlim(box[0], box[1])
    axes[1].set_ylim(box[2], box[3])
    axes[1].set_title("zoom")
    if metric == "auroc":
        mark_chance(axes[1], "x")
        mark_chance(axes[1], "y")
    keep = (far >= box[0]) & (far <= box[1]) & (near >= box[2]) & (near <= box[3])
    plots.place_labels(axes[1], far[keep], near[keep], [t for t, k in zip(titles, keep) if k], weights=weights[keep],
                 avoid=xy[~keep])
    plots.place_labels(axes[0], far[~keep], near[~keep], [t for t, k in zip(titles, keep) if not k],
                 weights=weights[~keep], avoid=xy[keep])
    return axes


def plot_methods(rows: pd.DataFrame, ax, metric: str = "auroc", scope: str = "average", highlight: str = "MME",
                 paper: dict | None = None, paper_label: str = "paper"):
    """``metric`` per method on one summary (``scope``: "average", "near", "far"), best at the top, as dots
    with their 95% bootstrap interval (``<metric>_lo`` / ``_hi`` where the rows have them) and, optionally,
    the paper's values (``paper``: {method title: value}) as hollow diamonds labelled ``paper_label``."""
    table = average_table(rows, scope=scope).rename(index=lambda m: PAPER_NAMES.get(m, m))
    table = table.sort_values(metric, ascending=metric == "fpr95")
    has_ci = f"{metric}_lo" in table
    theirs = [paper.get(m) for m in table.index] if paper else None
    plots.interval_dots(ax, list(table.index), table[metric].to_numpy(),
                        table[f"{metric}_lo"].to_numpy() if has_ci else None,
                        table[f"{metric}_hi"].to_numpy() if has_ci else None, highlight=[highlight], paper=theirs,
                        paper_label=paper_label,
                        xlabel=f"{scope} {metric.upper()} ({'higher' if metric == 'auroc' else 'lower'} is better)"
                               + (", 95% interval" if has_ci else ""))
    if metric == "auroc":
        mark_chance(ax, "x")
    return ax


def plot_scale_tradeoff(ax):
    """Fig. 1 (left) from the transcribed tables: each method's average AUROC on CIFAR (Table 1, mean of
    CIFAR-10 and CIFAR-100; small scale) against ImageNet-1K (Table 2, mean of ViT and BiT; large scale),
    for the methods both tables list."""
    from .records import paper_values

    def mean_auroc(table):
        p = paper_values(table)
        p = p[(p["dataset"] == "average") & (p["metric"] == "auroc")]
        return p.groupby("method", sort=False)["value"].mean()

    small, large = mean_auroc("Table 1"), mean_auroc("Table 2")
    both = [m for m in small.index if m in large.index]
    if not both:
        raise ValueError("Tables 1 and 2 share no method: the transcribed tables are missing")
    inverse = {v: k for k, v in PAPER_NAMES.items() if k != "vra_clip"}
    families = [FAMILIES.get(inverse.get(m, ""), "multiple") for m in both]
    x, y = small[both].to_numpy(), large[both].to_numpy()
    for xi, yi, m, fam in zip(x, y, both, families):
        ax.scatter(xi, yi, s=110 if m == "MME" else 45, color=FAMILY_COLORS[fam],
                   edgecolor="black" if m == "MME" else "none", linewidth=1.2, zorder=3)
    ax.set_xlabel("small scale: CIFAR average AUROC (Table 1)")
    ax.set_ylabel("large scale: ImageNet-1K average AUROC (Table 2)")
    ax.set_title("published: small- vs large-scale (Fig. 1, left)")
    mark_chance(ax, "x")
    mark_chance(ax, "y")
    plots.place_labels(ax, x, y, both, weights=np.array([m == "MME" for m in both], dtype=float))
    return ax
