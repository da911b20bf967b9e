"""Notebook 21's experiments: MME against the other detectors and the paper's ablations.

Table 3 (:func:`mme_ablation`), Table 5 (:func:`truncation_variants`), Table 6 (:func:`extra_scores`),
Fig. 5 (:func:`sensitivity`), Fig. 1 (:func:`near_far_summary`) and the headline, MME against the best
other detector (:func:`mme_vs_best`, :func:`per_set_ranks`).
"""
from __future__ import annotations

import pandas as pd

from ..detectors import DETECTORS
from .benchmark import (FAMILIES, LAMBDAS, PAPER_NAMES, TABLE6_EXTRAS, TEMPERATURES, Benchmark, _progress,
                        average_table, detector_scores, fit_detector, per_set, wide_table)
from .factors import MMEParts, factor_table, positive_factor, recombine


def rank(values: pd.Series, method: str, higher_better: bool = True) -> int:
    """1 + the number of entries strictly better than ``method``'s (ties share the better rank)."""
    better = values > values[method] if higher_better else values < values[method]
    return int(better.sum()) + 1


# ------------------------------------------------------------------------------------------ Tables 3-6
#: the summaries the ablation tables carry: the paper's average and, for the verdicts, the near / far means
SUMMARIES = ("average", "near", "far")


def mme_ablation(bench: Benchmark, preset: str | None = None, parts: MMEParts | None = None,
                 n_boot: int = 0) -> pd.DataFrame:
    """Table 3: NME+ alone, NME+ + CO+ and MME (the paper's rows), then MME with one factor left out at a
    time (the kit's addition: which factor carries the ensemble on this benchmark)."""
    parts = parts or MMEParts(bench, preset)
    rows = []
    for name in ("nme", "nme_co", "mme"):
        rows += bench.evaluate(PAPER_NAMES[name], detector_scores(bench, name, preset=preset), n_boot=n_boot,
                               summaries=SUMMARIES)
    leave_out = {"ViM": ("vim",), "fDBD": ("fdbd",), "PCA": ("pca",), "NME+": ("nme",), "CO+": ("co",),
                 "NME+ and CO+": ("nme", "co")}
    for title, drop in leave_out.items():
        rows += bench.evaluate(f"MME w/o {title}", parts.scores(drop=drop), n_boot=n_boot, summaries=SUMMARIES)
    return pd.DataFrame(rows)


#: Table 5's rows: (component, its truncation in that row); "baseline" = eq. (7) as published
TABLE5_VARIANTS = (("energy", None), ("energy", "vra_clip"), ("vim", None), ("vim", "scale"),
                   ("fdbd", None), ("fdbd", "scale"), ("pca", None), ("pca", "scale"),
                   ("nme", "scale"), ("nme", "vra_clip"), ("baseline", None))


TRUNCATION_TITLES = {None: "Base", "scale": "SCALE", "vra_clip": "VRA", "react": "ReAct", "dice": "DICE",
                     "ash": "ASH-S", "vra": "VRA-P", "none": "Base"}


COMPONENT_TITLES = {"energy": "Energy", "vim": "ViM", "fdbd": "fDBD", "pca": "PCA", "nme": "NME+",
                    "baseline": "Baseline"}


def truncation_variants(bench: Benchmark, preset: str | None = None, parts: MMEParts | None = None,
                        variants=TABLE5_VARIANTS, n_boot: int = 0) -> pd.DataFrame:
    """Table 5: MME with the truncation feeding one component swapped (e.g. ViM on SCALE instead of VRA).
    Columns ``component`` and ``truncation`` name the row as the paper prints it."""
    parts = parts or MMEParts(bench, preset)
    rows = []
    for component, trunc in variants:
        swap = {} if component == "baseline" else {component: trunc}
        title = COMPONENT_TITLES[component]
        label = f"{title} ({TRUNCATION_TITLES[trunc]})" if component != "baseline" else "MME"
        rows += bench.evaluate(label, parts.scores(truncations=swap), n_boot=n_boot, summaries=SUMMARIES,
                               component=title,
                               truncation="default" if component == "baseline" else TRUNCATION_TITLES[trunc])
    return pd.DataFrame(rows)


def extra_scores(bench: Benchmark, preset: str | None = None, parts: MMEParts | None = None,
                 extras=TABLE6_EXTRAS, n_boot: int = 0) -> pd.DataFrame:
    """Table 6: MME times one more scoring function (see :func:`positive_factor`); "MME" (the paper's
    "empty set" row) last."""
    parts = parts or MMEParts(bench, preset)
    rows = []
    for name in extras:
        det = fit_detector(bench, name, preset)
        factor = positive_factor(det.score(bench.train.feats, bench.train.logits))
        rows += bench.evaluate(f"MME + {PAPER_NAMES[name]}",
                               parts.scores(extra=lambda f, l, d=det, g=factor: g(d.score(f, l))),
                               n_boot=n_boot, summaries=SUMMARIES, added=PAPER_NAMES[name])
    rows += bench.evaluate("MME", parts.scores(), n_boot=n_boot, summaries=SUMMARIES, added="none")
    return pd.DataFrame(rows)


def sensitivity(bench: Benchmark, preset: str | None = None, parts: MMEParts | None = None,
                lambdas=LAMBDAS, temperatures=TEMPERATURES, table: dict | None = None,
                progress: bool = True) -> pd.DataFrame:
    """Fig. 5: MME's AUROC / FPR95 as lambda (CO+ weight) or T (NME+ temperature) varies, the other fixed at
    the preset's value. Columns ``param`` ("lambda" or "T") and ``value``. Each setting recombines the cached
    factors (``table``: :func:`factor_table` with these temperatures; built when not given)."""
    parts = parts or MMEParts(bench, preset)
    table = table if table is not None else factor_table(parts, temperatures)
    rows = []
    grid = [("lambda", v) for v in lambdas] + [("T", v) for v in temperatures]
    for param, v in _progress(grid, "settings", progress):
        scores = recombine(table, temperature=v if param == "T" else None, co_weight=v if param == "lambda" else None)
        rows += bench.evaluate("MME", scores, param=param, value=float(v))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------- Fig. 1 and the headline
def near_far_summary(rows: pd.DataFrame, groups: dict[str, str] | None = None) -> pd.DataFrame:
    """Fig. 1: per method, the mean AUROC / FPR95 over the near-OOD sets and over the far-OOD sets, with its
    family (probability, logit, feature, multiple) and whether it is a feature truncation (triangles).
    ``groups`` ({set: "near" | "far"}, e.g. ``bench.fig1_groups()``) overrides the rows' own groups."""
    sets = per_set(rows)
    if groups is not None:
        sets = sets[sets["dataset"].isin(groups)].assign(group=lambda d: d["dataset"].map(groups))
    sets = sets[sets["group"].isin(["near", "far"])]
    out = sets.groupby(["method", "group"], sort=False)[["auroc", "fpr95"]].mean().unstack("group")
    out.columns = [f"{group}_{metric}" for metric, group in out.columns]
    out = out.reindex(columns=[f"{g}_{m}" for g in ("near", "far") for m in ("auroc", "fpr95")])  # NaN: no such set
    out = out.reset_index()
    out["family"] = out["method"].map(FAMILIES).fillna("multiple")
    out["truncation"] = out["method"].map(lambda m: DETECTORS[m].kind == "truncation" if m in DETECTORS else False)
    out["title"] = out["method"].map(lambda m: PAPER_NAMES.get(m, m))
    return out


def mme_vs_best(main: pd.DataFrame, near_far: pd.DataFrame | None = None, method: str = "mme") -> pd.DataFrame:
    """The headline: MME against the best *other* detector, for AUROC and FPR95, on the average over the
    table's OOD sets and (with ``near_far``) on the near- and far-OOD means. ``rank`` counts the methods
    strictly better than MME, plus one."""
    scopes = {"average": average_table(main)}
    if near_far is not None:
        nf = near_far.set_index("method")
        for g in ("near", "far"):
            if f"{g}_auroc" in nf and nf[f"{g}_auroc"].notna().all():
                scopes[g] = nf[[f"{g}_auroc", f"{g}_fpr95"]].set_axis(["auroc", "fpr95"], axis=1)
    rows = []
    for scope, table in scopes.items():
        for metric in ("auroc", "fpr95"):
            col, higher = table[metric].dropna(), metric == "auroc"
            others = col.drop(method)
            best = others.idxmax() if higher else others.idxmin()
            rows.append({"scope": scope, "metric": metric, "MME": col[method],
                         "rank": rank(col, method, higher), "of": len(col),
                         "best other": PAPER_NAMES.get(best, best), "best other value": others[best],
                         "MME better": bool(col[method] > others[best]) if higher else bool(col[method] < others[best])})
    return pd.DataFrame(rows)


def per_set_ranks(main: pd.DataFrame, method: str = "mme") -> pd.DataFrame:
    """MME's rank among all methods on every OOD set (1 = best), for AUROC and FPR95: the paper's claim that
    MME "consistently ranks among the top three" is a claim about these numbers."""
    out = {}
    for metric, higher in (("auroc", True), ("fpr95", False)):
        wide = wide_table(per_set(main), metric)
        out[f"{metric}_rank"] = {d: rank(wide[d], method, higher) for d in wide.columns}
    return pd.DataFrame(out)
