"""Result records of the MME notebooks, named like the transcribed tables (``ood_utils/tables/mme.csv``),
and the paper's published numbers read back for display and comparison."""
from __future__ import annotations

import pandas as pd

from .. import results
from .benchmark import DATASET_NAMES, PAPER, PAPER_NAMES, average_table, per_set
from .ensemble import TRUNCATION_TITLES
from .factors import factor_label

#: table ids as the transcribed tables (``ood_utils/tables/mme.csv``) spell them; fig3 and prop1 are the
#: kit's own (figure or proof, no published numbers)
TABLE_IDS = {"Table 1": "1", "Table 2": "2", "Table 3": "3", "Table 4": "4", "Table 5": "5", "Table 6": "6",
             "Fig. 1": "fig1", "Fig. 2": "fig2", "Fig. 3": "fig3", "Fig. 5": "fig5", "Proposition 1": "prop1"}


ID_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet1k": "ImageNet-1K"}


ARCH_NAMES = {"densenet100": "DenseNet-100", "vit_b16": "ViT-B-16", "bit_s_r101x1": "BiT-S-R101x1"}


def setting_name(cfg) -> str:
    """The setting as the transcribed tables name it ("CIFAR-10/DenseNet-100", "ImageNet-1K/ViT-B-16",
    "ImageNet-1K/BiT-S-R101x1"); otherwise "<id dataset>/<arch>" (``mini``: no published counterpart)."""
    arch = ARCH_NAMES.get(cfg.arch, cfg.arch)
    return f"{ID_NAMES.get(cfg.id_dataset, cfg.id_dataset)}/{arch}"


def main_table(cfg) -> str:
    """The paper's table for the main comparison: Table 2 on ImageNet-1K, Table 1 (CIFAR) otherwise."""
    return "Table 2" if str(cfg.id_dataset).startswith("imagenet") else "Table 1"


def _record(table, setting, method, dataset, metric, value, cfg):
    return results.Record(paper=PAPER, table=TABLE_IDS.get(table, table), setting=setting, method=method,
                          dataset=DATASET_NAMES.get(dataset, dataset), metric=metric, value=float(value),
                          seed=int(cfg.seed), profile=cfg.profile)


def to_records(rows: pd.DataFrame, table: str, cfg, setting: str | None = None,
               metrics_=("auroc", "fpr95")) -> list:
    """``results.Record`` s (paper "MME") from tidy rows: one per (row, metric). ``table`` as the paper
    prints it ("Table 1", "Fig. 5"; stored under the transcribed tables' ids, ``TABLE_IDS``); method names
    in the paper's spelling (``PAPER_NAMES``), dataset names in the kit's (``DATASET_NAMES``); values are
    fractions, as ``metrics`` returns them."""
    setting = setting or setting_name(cfg)
    rows = rows[~rows["dataset"].isin(("near", "far"))]  # the near / far means are Fig. 1's records
    return [_record(table, setting, PAPER_NAMES.get(r["method"], r["method"]), r["dataset"], metric, r[metric], cfg)
            for r in rows.to_dict("records") for metric in metrics_]


def _pair_name(a: str, b: str) -> str:
    return f"{PAPER_NAMES.get(a, a)} & {PAPER_NAMES.get(b, b)}"


def grid_method_name(method: str, truncation: str, fit_on: str = "raw") -> str:
    """Fig. 3 record names: "ViM (ReAct)" (fitted on raw z), "ViM (ReAct, fitted on g(z))"."""
    title = f"{PAPER_NAMES.get(method, method)} ({TRUNCATION_TITLES.get(truncation, truncation)}"
    return title + (", fitted on g(z))" if fit_on == "truncated" and truncation != "none" else ")")


def assumption_records(ratios: pd.DataFrame, cov: pd.DataFrame, grid: pd.DataFrame, check: pd.DataFrame,
                       cfg) -> list:
    """Records of notebook 20: Fig. 2 (CO ratio per set, dataset "id" for ID), Table 4 (covariance on "id"
    and averaged over the OOD sets, "average", plus each set), Fig. 3 (AUROC of "<score> (<truncation>)",
    see :func:`grid_method_name`) and Proposition 1 (1.0 where V(product) >= max V(factor), metric
    "v_holds"; "auroc_holds" likewise)."""
    setting = setting_name(cfg)
    out = []
    for i, r in enumerate(ratios.to_dict("records")):
        out.append(_record("Fig. 2", setting, "CO", "id" if i == 0 else r["dataset"], "co_consistency",
                           r["co_scale"], cfg))
    for (a, b), sub in per_set(cov).groupby(["score_a", "score_b"], sort=False):
        out.append(_record("Table 4", setting, _pair_name(a, b), "id", "covariance", sub["cov_id"].iloc[0], cfg))
        out.append(_record("Table 4", setting, _pair_name(a, b), "average", "covariance", sub["cov_ood"].mean(), cfg))
        for r in sub.to_dict("records"):
            out.append(_record("Table 4", setting, _pair_name(a, b), r["dataset"], "covariance", r["cov_ood"], cfg))
    seen = set()
    for r in grid.to_dict("records"):
        method = grid_method_name(r["method"], r["truncation"], r.get("fit_on", "raw"))
        if (method, r["dataset"]) not in seen:  # the raw-feature row is shared by both protocols
            seen.add((method, r["dataset"]))
            out.append(_record("Fig. 3", setting, method, r["dataset"], "auroc", r["auroc"], cfg))
    for r in check.to_dict("records"):
        for metric in ("holds", "auroc_holds"):
            out.append(_record("Proposition 1", setting, factor_label(r["factors"]), r["dataset"],
                               "v_holds" if metric == "holds" else metric, float(bool(r[metric])), cfg))
    return out


def ensemble_records(main, ablation, variants, extras, sens, near_far, cfg) -> list:
    """Records of notebook 21. The main comparison goes to Table 2 on ImageNet-1K and to Table 1 otherwise
    (per OOD set and "average"); Tables 3, 5, 6 as the paper names their rows; Fig. 5 as
    "MME (lambda=<v>)" / "MME (T=<v>)"; Fig. 1 as near/far mean AUROC and FPR95 per method."""
    out = to_records(main, main_table(cfg), cfg)
    out += to_records(ablation, "Table 3", cfg)
    out += to_records(variants, "Table 5", cfg)
    out += to_records(extras, "Table 6", cfg)
    sens = sens.assign(method=[f"MME ({'lambda' if p == 'lambda' else 'T'}={v:g})"
                               for p, v in zip(sens["param"], sens["value"])])
    out += to_records(sens, "Fig. 5", cfg)
    setting = setting_name(cfg)
    for r in near_far.to_dict("records"):
        for group in ("near", "far"):
            for metric in ("auroc", "fpr95"):
                if pd.notna(r.get(f"{group}_{metric}")):
                    out.append(_record("Fig. 1", setting, r["title"], group, metric, r[f"{group}_{metric}"], cfg))
    return out


# ------------------------------------------------------------------------------------ the paper's numbers
def paper_values(table: str, setting: str | None = None) -> pd.DataFrame:
    """The transcribed numbers of one of the paper's tables (``results.paper_table``), AUROC / FPR95 as
    fractions like the kit's metrics; empty when the table was not transcribed."""
    try:
        df = results.paper_table(PAPER, TABLE_IDS.get(table, table)).copy()
    except (KeyError, ValueError, FileNotFoundError):
        return pd.DataFrame(columns=["setting", "method", "dataset", "metric", "value"])
    rate = df["metric"].isin(results.PERCENT_METRICS)
    df.loc[rate, "value"] = df.loc[rate, "value"] / 100.0  # printed in percent
    if setting is not None:
        df = df[df["setting"] == setting]
    return df


def paper_pivot(table: str, dataset=None, metric=None, setting=None, index: str = "method") -> pd.DataFrame:
    """One of the paper's transcribed tables for display (fractions, like the kit's numbers): rows ``index``
    ("method" or "setting"), columns the other of (setting, method), dataset and metric where they vary;
    ``dataset`` / ``metric`` / ``setting`` filter."""
    df = paper_values(table, setting)
    for col, keep in (("dataset", dataset), ("metric", metric)):
        if keep is not None:
            df = df[df[col].isin([keep] if isinstance(keep, str) else list(keep))]
    if df.empty:
        return pd.DataFrame()
    cols = [c for c in ("setting", "method", "dataset", "metric") if c != index and df[c].nunique() > 1] or ["metric"]
    return df.pivot_table(index=index, columns=cols, values="value", sort=False)


def reference_settings(cfg, table: str = "Table 1") -> list[str]:
    """The published settings to compare a run with: the same setting when the paper has it, otherwise
    (``mini``, ``quick`` with another network) every setting of that table, as a reference for the
    *pattern* only."""
    settings = list(dict.fromkeys(paper_values(table)["setting"]))
    own = setting_name(cfg)
    return [own] if own in settings else settings


def compare_main(main: pd.DataFrame, cfg) -> pd.DataFrame:
    """Average AUROC / FPR95 per method: reproduced next to the paper's (Table 1 or 2), methods the paper
    lists, in its order."""
    table = main_table(cfg)
    ours = average_table(main).rename(index=lambda m: PAPER_NAMES.get(m, m))
    ours.columns = [f"{c} (here)" for c in ours.columns]
    frames = [ours]
    for setting in reference_settings(cfg, table):
        p = paper_values(table, setting)
        p = p[p["dataset"] == "average"].pivot_table(index="method", columns="metric", values="value", sort=False)
        p.columns = [f"{c} ({setting})" for c in p.columns]
        frames.append(p)
    out = pd.concat(frames, axis=1)
    return out.loc[[m for m in out.index if m in ours.index]]


#: the ``mini`` OOD sets and the published sets they stand in for: an analogue (what kind of shift), not
#: the same data, so a mini number is never set beside a paper number without this label
MINI_ANALOGUES = {
    "animal_mnist": "NINCO / SSB-hard (near: new object classes drawn in the same style)",
    "letters": "NINCO / SSB-hard (near: strokes like the ID classes, other classes)",
    "unseen_digits": "SSB-hard (near: unseen classes of the very same domain, semantic shift only)",
    "textures": "Textures (DTD)",
    "photos": "Places / SUN / LSUN (scenes)",
    "faces": "iNaturalist / OpenImage-O (photos of other objects)",
    "uniform_noise": "none: a sanity check",
    "gaussian_noise": "none: a sanity check",
}


def analogue_table(groups: dict[str, str]) -> pd.DataFrame:
    """The OOD sets of this run, their group and the published set each is an analogue of (real sets
    stand for themselves)."""
    return pd.DataFrame([{"OOD set here": n, "group": g, "analogue in the paper": MINI_ANALOGUES.get(n, "itself")}
                         for n, g in groups.items()]).set_index("OOD set here")
