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

def _paper_name(paper) -> str:
    return results.PAPERS.get(str(paper).lower(), str(paper))


def primary(claims: pd.DataFrame) -> pd.DataFrame:
    """The claims that count: one primary row per claim (supporting rows repeat a comparison in another
    metric or average and are shown, not counted)."""
    return claims[claims["role"].fillna("primary") == "primary"]


def verdict_counts(claims: pd.DataFrame) -> pd.DataFrame:
    """Papers x verdicts: how many of the given claim rows came to each verdict (every paper and verdict,
    zeros included). Pass :func:`primary` rows to count each claim once."""
    papers = [results.PAPERS[p] for p in results.PAPERS]
    counts = pd.DataFrame(0, index=pd.Index(papers, name="paper"), columns=list(results.VERDICTS))
    for (paper, verdict), n in claims.groupby(["paper", "verdict"]).size().items():
        counts.loc[_paper_name(paper), verdict] = int(n)
    return counts


def outcome_counts(claims: pd.DataFrame) -> pd.DataFrame:
    """(paper, kind) x outcome (``results.OUTCOMES``) over the primary rows: improvements, "no harm" claims
    and properties counted apart; every paper appears (a paper with no tested claim as one row of zeros)."""
    rows = primary(claims)
    index = []
    for key, name in results.PAPERS.items():
        kinds = [k for k in results.CLAIM_KINDS if ((rows["paper"] == key) & (rows["kind"] == k)).any()]
        index += [(name, k) for k in kinds] or [(name, "(none tested)")]
    counts = pd.DataFrame(0, index=pd.MultiIndex.from_tuples(index, names=["paper", "kind"]),
                          columns=list(results.OUTCOMES))
    for (paper, kind, outcome), n in rows.groupby(["paper", "kind", "outcome"]).size().items():
        counts.loc[(_paper_name(paper), kind), outcome] = int(n)
    return counts


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _reasons(rows: pd.DataFrame, limit: int = 3) -> str:
    """The most frequent reasons among ``rows``: each diagnosis's first clause (before ";"), the kind of
    reason for "training failed: ..." / "untestable ...", e.g. "aux inactive: 5% inside margins; far-OOD at
    ceiling (x2)"."""
    def first(d: str) -> str:
        d = str(d).strip()
        return d.split(":")[0].strip() if d.lower().startswith(("training failed", "untestable")) else \
            d.split(";")[0].strip()

    counts = rows["diagnosis"].fillna("").map(first)
    counts = counts[counts != ""].value_counts()
    if counts.empty:
        return "no diagnosis given"
    text = "; ".join(r + (f" (x{n})" if n > 1 else "") for r, n in counts.head(limit).items())
    return text + ("; ..." if len(counts) > limit else "")


def paper_narrative(claims: pd.DataFrame, paper: str) -> str:
    """A short paragraph on one paper, computed from its claim rows: how many claims of each kind, how many
    reproduced, how many not (and why), how many untestable here or resting on a failed training."""
    name = _paper_name(paper)
    mine = claims[claims["paper"].str.lower() == str(paper).lower()]
    rows = primary(mine)
    if rows.empty:
        return f"**{name}**: no claim tested yet in this profile."
    kinds = rows["kind"].value_counts()
    words = {"improvement": "improvement", "no harm": "no-harm claim", "property": "property claim"}
    kinds_text = ", ".join(_plural(int(kinds[k]), words[k]) for k in results.CLAIM_KINDS if k in kinds)
    extra = len(mine) - len(rows)
    text = [f"**{name}**: {_plural(len(rows), 'claim')} counted ({kinds_text})"
            + (f", {_plural(extra, 'supporting row')} shown beside them" if extra else "")
            + f", in {'; '.join(sorted(set(rows['setting'])))}."]
    for kind in results.CLAIM_KINDS:
        sub = rows[rows["kind"] == kind]
        if sub.empty:
            continue
        tested = sub[~sub["outcome"].isin(results.OUTCOMES[3:])]
        got = (tested["outcome"] == "reproduced").sum()
        label = {"improvement": "improvements", "no harm": "no-harm claims", "property": "properties"}[kind]
        if len(tested):
            ties = (tested["outcome"] == results.OUTCOMES[1]).sum()
            opposite = (tested["outcome"] == results.OUTCOMES[2]).sum()
            sentence = f"Of the {len(tested)} {label} tested, {got} reproduced"
            if ties:
                sentence += f", {ties} a tie within noise"
            if opposite:
                why = _reasons(tested[tested["outcome"] == results.OUTCOMES[2]])
                sentence += f", {opposite} the opposite way ({why})"
            text.append(sentence + ".")
    for out, says in ((results.OUTCOMES[3], "untestable here"), (results.OUTCOMES[4], "on a failed training")):
        sub = rows[rows["outcome"] == out]
        if len(sub):
            text.append(f"{_plural(len(sub), 'claim')} {says} ({_reasons(sub)}).")
    return " ".join(text)


def narrative(claims_or_counts: pd.DataFrame) -> str:
    """One paragraph per paper. Given the claims table: :func:`paper_narrative` for each paper. Given a
    :func:`verdict_counts` table (the older form): one sentence per paper from the counts."""
    if "claim" in claims_or_counts.columns:
        return "\n\n".join(paper_narrative(claims_or_counts, p) for p in results.PAPERS)
    lines = []
    for paper, row in claims_or_counts.iterrows():
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
    """The claims for reading, in the order given: paper, claim, setting that ran, the paper's value,
    ours [95% interval], verdict, kind, role, outcome, the reason (diagnosis) and the notebook."""
    def get(col, default=""):
        return claims[col].fillna(default).to_numpy() if col in claims else default

    return pd.DataFrame({
        "paper": [_paper_name(p) for p in claims["paper"]],
        "claim": claims["claim"].to_numpy(),
        "setting (ran)": claims["setting"].to_numpy(),
        "paper's value": claims["paper_value"].fillna("").to_numpy(),
        "ours [95% interval]": [_interval(*r) for r in claims[["ours", "ours_lo", "ours_hi", "unit"]].itertuples(
            index=False)],
        "verdict": claims["verdict"].to_numpy(),
        "kind": get("kind", "improvement"),
        "role": get("role", "primary"),
        "outcome": get("outcome"),
        "diagnosis": get("diagnosis"),
        "notebook": claims["notebook"].to_numpy(),
    })


def claims_by_outcome(claims: pd.DataFrame) -> pd.DataFrame:
    """Every claim row, grouped for reading: by paper (the papers' order), then outcome (``results.OUTCOMES``
    order), primary rows before the supporting rows of the same paper, then notebook order."""
    if claims.empty:
        return claims_display(claims)
    paper_rank = {p: i for i, p in enumerate(results.PAPERS)}
    order = claims.assign(
        _paper=claims["paper"].str.lower().map(paper_rank).fillna(len(paper_rank)),
        _role=(claims["role"].fillna("primary") != "primary").astype(int),
        _outcome=claims["outcome"].map({o: i for i, o in enumerate(results.OUTCOMES)}),
        _row=range(len(claims)))
    order = order.sort_values(["_paper", "_role", "_outcome", "notebook", "_row"], kind="stable")
    return claims_display(order).reset_index(drop=True)


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
    sets: the ranking, not the numbers, is what can carry over. ``over`` says what a row compares: a
    table's average of OOD sets, one OOD set, or the ID test set (ID accuracy)."""
    cmp = results.compare(profile)
    columns = ["paper", "table", "setting (ran)", "paper setting", "dataset", "over", "metric", "methods", "rho"]
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
                     "dataset": dataset_label(dataset, profile), "over": _over(dataset, setting),
                     "metric": metric, "methods": len(g),
                     "rho": spearman(g["reproduced"].to_numpy(), g["paper_value"].to_numpy())})
    return pd.DataFrame(rows, columns=columns)


#: what one rank comparison is taken over (:func:`rank_agreement`'s ``over`` column)
OVER = ("average of OOD sets", "one OOD set", "ID test set")


def _over(dataset: str, setting: str) -> str:
    if results._dataset_key(dataset, setting) == "id":
        return OVER[2]
    return OVER[0] if dataset in SUMMARY_ROWS else OVER[1]


def spearman(a, b) -> float:
    """Spearman's rank correlation: Pearson's correlation of the (average) ranks, so ties are handled."""
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    return float(np.corrcoef(ra, rb)[0, 1])
