"""The results summary of notebook 90: what ran, the papers' claims and their verdicts, reproduced numbers
next to published ones, and how well the ranking of methods carries over.

Every reproduced number is labelled with the setting that produced it (``results.setting_label``: "mini ·
MNIST-5k · mnist_cnn"), never with the paper setting it stands in for. A ``mini`` set meets a paper's set
only through :data:`ANALOGUES`, an explicit table of which embedded set plays which benchmark's role.

    summary.run_status(profile)            # per notebook: last run, records, claims, settings
    summary.verdict_counts(claims)         # paper x verdict
    summary.side_by_side(profile, "mme", 1)  # (published, ours), each labelled with its own setting
    summary.rank_agreement(profile)        # Spearman rho of the method ranking, ours vs the paper's
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import paths, results


@dataclass(frozen=True)
class Analogue:
    """A ``mini`` set and the role it plays: the benchmark set(s) of the papers it stands in for, and why."""

    role: str
    stands_for: str
    because: str


#: mini set -> the papers' set(s) it is an analogue of. Shown as such; never merged with the paper's rows.
ANALOGUES: dict[str, Analogue] = {
    "mnist5k": Analogue("ID", "CIFAR-10 / CIFAR-100 / ImageNet (the ID training set)",
                        "a 10-class image classification task a small CNN learns in seconds"),
    "mnist6": Analogue("ID", "the ID half of an open-set split (seen classes)",
                       "its unseen classes are held out as OOD, as in semantic-shift benchmarks"),
    "unseen_digits": Analogue("near", "SSB-hard / NINCO (semantic shift, same domain)",
                              "same writers and preprocessing, only the classes are new"),
    "animal_mnist": Analogue("near", "near-OOD sets (CIFAR-100 vs CIFAR-10, SSB-hard)",
                             "silhouettes in MNIST's style: close in low-level statistics"),
    "letters": Analogue("near", "SVHN (characters of another source)", "strokes like digits, other symbols"),
    "textures": Analogue("far", "Textures (DTD)", "texture photographs (brick, grass, gravel)"),
    "photos": Analogue("far", "Places365 / LSUN / iSUN / SUN (scene photos)", "natural photographs"),
    "faces": Analogue("far", "no counterpart in the papers", "a far set of another kind"),
    "uniform_noise": Analogue("far", "no counterpart (a sanity check)", "noise images"),
    "gaussian_noise": Analogue("far", "no counterpart (a sanity check)", "noise images"),
    "aux_patches": Analogue("aux", "GReg's 300K random images (auxiliary outliers)",
                            "patches of other photographs, disjoint from every test set"),
}
#: rows of a table that average several sets (the kit's and the paper's averages cover different sets)
SUMMARY_ROWS = {"average": "average of the run's OOD sets", "near": "mean of the near-OOD sets",
                "far": "mean of the far-OOD sets"}


def analogue_table() -> pd.DataFrame:
    """The explicit analogue table: mini set, role, what it is (from the data registry), what it stands for."""
    from .data import embedded

    rows = [{"mini set": name, "role": a.role, "what it is": embedded.SETS[name].description if name in
             embedded.SETS else "", "analogue of": a.stands_for, "why": a.because} for name, a in ANALOGUES.items()]
    return pd.DataFrame(rows)


def dataset_label(dataset: str, profile: str) -> str:
    """A dataset as a reproduced row shows it: in ``mini``, with the set it is an analogue of."""
    if dataset in SUMMARY_ROWS:
        return f"{dataset} ({SUMMARY_ROWS[dataset]})"
    if profile == "mini" and dataset in ANALOGUES:
        return f"{dataset} (analogue of {ANALOGUES[dataset].stands_for})"
    return dataset


def setting_of_record(setting: str, profile: str) -> str:
    """``"mnist5k/mnist_cnn"`` (a record's setting) -> ``"mini · MNIST-5k · mnist_cnn"``."""
    id_dataset, sep, arch = str(setting).partition("/")
    if not sep:
        return f"{profile} · {setting}"
    return results.setting_label(profile=profile, id_dataset=id_dataset, arch=arch)


# ------------------------------------------------------------------------------------------- what ran

STATUS_COLUMNS = ["notebook", "last run", "seconds", "still current?", "records", "claims", "settings"]


def run_status(profile: str, notebooks_dir=None) -> pd.DataFrame:
    """One row per notebook of the kit: its last run by the runner (from the manifest), whether that run is
    still current (the runner's own decision: "finished, nothing changed", or what changed since, e.g.
    "ood_utils changed"), how many records and claims it saved for ``profile`` and their settings."""
    from . import run

    out = paths.runs_dir(profile)
    entries = run.load_manifest(out)["notebooks"] if (out / run.MANIFEST).exists() else {}
    current = {s.name: s.decision.reason for s in run.plan(profile, notebooks_dir=notebooks_dir, entries=entries)}
    recs, cl = results.load_all(profile), results.claims(profile)
    rows = []
    for nb in run.find_notebooks(notebooks_dir):
        entry = entries.get(nb.stem, {})
        mine = recs[recs["notebook"] == nb.stem]
        settings = sorted({setting_of_record(s, profile) for s in mine["setting"]}
                          | set(cl.loc[cl["notebook"] == nb.stem, "setting"]))
        ran = entry.get("status") == "ok"
        rows.append({"notebook": nb.stem, "last run": entry.get("status", "not run (by the runner)"),
                     "seconds": entry.get("seconds"), "still current?": current[nb.stem] if ran else "",
                     "records": len(mine), "claims": int((cl["notebook"] == nb.stem).sum()),
                     "settings": "; ".join(settings)})
    return pd.DataFrame(rows, columns=STATUS_COLUMNS)


# ---------------------------------------------------------------------------------------------- claims

def verdict_counts(claims: pd.DataFrame) -> pd.DataFrame:
    """Papers x verdicts: how many claims came to each verdict (every paper and verdict, zeros included)."""
    papers = [results.PAPERS[p] for p in results.PAPERS]
    counts = pd.DataFrame(0, index=pd.Index(papers, name="paper"), columns=list(results.VERDICTS))
    for (paper, verdict), n in claims.groupby(["paper", "verdict"]).size().items():
        counts.loc[results.PAPERS.get(str(paper).lower(), paper), verdict] = int(n)
    return counts


def narrative(counts: pd.DataFrame) -> str:
    """One sentence per paper, from the counts (papers without tested claims say so)."""
    lines = []
    for paper, row in counts.iterrows():
        total = int(row.sum())
        if total == 0:
            lines.append(f"- **{paper}**: no claim tested yet in this profile.")
            continue
        parts = [f"{int(row[v])} {v}" for v in results.VERDICTS if row[v]]
        lines.append(f"- **{paper}**: {total} claim{'s' if total > 1 else ''} tested: {', '.join(parts)}.")
    return "\n".join(lines)


def _interval(ours, lo, hi, unit) -> str:
    if pd.isna(ours):
        return ""
    text = f"{ours:.3g}"
    if not (pd.isna(lo) or pd.isna(hi)):
        text += f" [{lo:.3g}, {hi:.3g}]"
    return f"{text} {unit}".strip()


def claims_display(claims: pd.DataFrame) -> pd.DataFrame:
    """The claims for reading: paper, claim, setting that ran, the paper's value, ours [95% interval], verdict."""
    return pd.DataFrame({
        "paper": [results.PAPERS.get(str(p).lower(), p) for p in claims["paper"]],
        "claim": claims["claim"].to_numpy(),
        "setting (ran)": claims["setting"].to_numpy(),
        "paper's value": claims["paper_value"].fillna("").to_numpy(),
        "ours [95% interval]": [_interval(*r) for r in claims[["ours", "ours_lo", "ours_hi", "unit"]].itertuples(
            index=False)],
        "verdict": claims["verdict"].to_numpy(),
        "notebook": claims["notebook"].to_numpy(),
    })


# ------------------------------------------------------------------------------------- per table views

def _matches(frame: pd.DataFrame, paper: str, table) -> pd.Series:
    key = results._table_key(table)
    return (frame["paper"].str.lower() == paper.lower()) & (frame["table"].map(results._table_key) == key)


def side_by_side(profile: str, paper: str, table, metric: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(published, ours) for one table (and one ``metric``, if given). ``published`` is the paper's table as
    printed, index (paper setting, method); ``ours`` the run's means over seeds in the paper's units, index
    (setting that ran, method), its datasets labelled with what they are an analogue of. Methods the run
    did not reproduce are left out of ``published`` (all are kept when none match)."""
    cmp = results.compare(profile)
    ours = cmp[_matches(cmp, paper, table)] if not cmp.empty else cmp
    try:
        published = results.paper_table(paper, table)
    except ValueError:
        published = pd.DataFrame(columns=list(results.PAPER_COLUMNS))
    if metric is not None:
        ours = ours[ours["metric"].str.lower() == metric.lower()]
        published = published[published["metric"].str.lower() == metric.lower()]
    if not ours.empty and not published.empty:
        reproduced = {results._method_key(m) for m in ours["method"]}
        kept = published[published["method"].map(results._method_key).isin(reproduced)]
        published = kept if not kept.empty else published
    pub = (published.pivot_table(index=["setting", "method"], columns=["dataset", "metric"], values="value",
                                 sort=False) if not published.empty else pd.DataFrame())
    if ours.empty:
        return pub, pd.DataFrame()
    mine = ours.assign(setting=[setting_of_record(s, profile) for s in ours["setting"]],
                       dataset=[dataset_label(d, profile) for d in ours["dataset"]])
    wide = mine.pivot_table(index=["setting", "method"], columns=["dataset", "metric"], values="reproduced",
                            sort=False)
    return pub, wide


def rank_agreement(profile: str, min_methods: int = 3) -> pd.DataFrame:
    """How well the run orders methods like the paper does: for each (table, dataset, metric) with at least
    ``min_methods`` methods that have both a reproduced and a published value, Spearman's rho between the
    two orderings (1 = same order). In ``mini`` the datasets are analogues and the averages cover other
    sets: the ranking, not the numbers, is what can carry over."""
    cmp = results.compare(profile)
    columns = ["paper", "table", "setting (ran)", "paper setting", "dataset", "metric", "methods", "rho"]
    if cmp.empty:
        return pd.DataFrame(columns=columns)
    both = cmp.dropna(subset=["paper_value"])
    both = both[both["metric"].map(results.is_percent)]  # detection metrics; not MME's covariance pairs
    rows = []
    for (paper, table, setting, dataset, metric), g in both.groupby(
            ["paper", "table", "setting", "dataset", "metric"], sort=False):
        g = g.drop_duplicates("method")
        if len(g) < min_methods or g["reproduced"].nunique() < 2 or g["paper_value"].nunique() < 2:
            continue
        rows.append({"paper": results.PAPERS.get(str(paper).lower(), paper), "table": table,
                     "setting (ran)": setting_of_record(setting, profile), "paper setting": g["paper_setting"].iloc[0],
                     "dataset": dataset_label(dataset, profile), "metric": metric, "methods": len(g),
                     "rho": spearman(g["reproduced"].to_numpy(), g["paper_value"].to_numpy())})
    return pd.DataFrame(rows, columns=columns)


def spearman(a, b) -> float:
    """Spearman's rank correlation: Pearson's correlation of the (average) ranks, so ties are handled."""
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    return float(np.corrcoef(ra, rb)[0, 1])
