"""GReg's results as records, tables over seeds and claims with verdicts.

Records are named like the transcribed tables (``ood_utils/tables/greg.csv``): table numbers, the paper's
method spellings per table, the kit's dataset names, fractions as :mod:`ood_utils.metrics` returns them.
Claims compare two methods over seeds with :func:`ood_utils.results.seed_verdict`; the paper's own
difference for the same comparison is read from the transcribed tables, never typed in.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import results

#: which printed table holds each ID dataset's main results; mini's datasets stand in for the CIFAR tables
MAIN_TABLE = {"cifar10": "1", "cifar100": "2", "imagenet10": "3", "mnist5k": "1", "mnist6": "2"}
#: the paper's row label of each kit method, per table (a method a table does not print keeps a kit label)
TITLES = {
    "main": {"energy": "Energy Loss", "greg": "GReg", "oe": "OE", "poem": "POEM", "dos": "DOS",
             "greg_plus": "GReg+", "msp": "MSP", "odin": "ODIN", "energy_score": "Energy Score",
             "react": "ReAct", "dice": "DICE"},
    "4": {"energy": "Energy", "greg": "Energy + Grad", "oe": "OE", "oe_grad": "OE + Grad", "poem": "POEM",
          "poem_grad": "POEM + Grad"},
    "5": {"random": "Random sampling", "poem": "POEM", "dos": "DOS", "energy_clustering": "Energy only clustering",
          "greg_plus": "GReg+"},
    "6": {"base": "Clean", "energy": "Energy Loss", "greg": "GReg", "dos": "DOS", "greg_plus": "GReg+"},
}
#: where the paper's own number for a comparison comes from: table -> the setting each ID dataset stands for
#: (mini's MNIST-5k for CIFAR-10, its harder open-set MNIST-6 for CIFAR-100; Tables 5 and 6 print one each)
PAPER_REFERENCE = {
    "4": {"cifar10": "CIFAR-10/DenseNet-100", "mnist5k": "CIFAR-10/DenseNet-100",
          "cifar100": "CIFAR-100/DenseNet-100", "mnist6": "CIFAR-100/DenseNet-100"},
    "5": {None: "CIFAR-100/DenseNet-100"},
    "6": {None: "CIFAR-10/DenseNet-100"},
}


def paper_setting(table: str, id_dataset: str | None = None) -> str | None:
    """The paper's setting a comparison on ``id_dataset`` is set beside (None: the table has none)."""
    ref = PAPER_REFERENCE.get(table, {})
    return ref.get(id_dataset, ref.get(None, next(iter(ref.values()), None)))
METRICS = ("auroc", "fpr95")
HIGHER_IS_BETTER = {"auroc": True, "fpr95": False, "id_accuracy": True}


def title(method: str, table: str = "main") -> str:
    return TITLES.get(table, {}).get(method, method)


# ------------------------------------------------------------------------------------------------ tables

def summarise(rows: pd.DataFrame, datasets=None) -> pd.DataFrame:
    """Mean and std over seeds per (id_dataset, arch, method, dataset): columns ``auroc``, ``auroc_std``,
    ``fpr95``, ``fpr95_std`` (and ``id_accuracy`` on the ``"id"`` rows), ``n_seeds``."""
    frame = rows if datasets is None else rows[rows["dataset"].isin(datasets)]
    keys = ["id_dataset", "arch", "method", "dataset"]
    cols = [c for c in ("auroc", "fpr95", "id_accuracy") if c in frame.columns]
    grouped = frame.groupby(keys, sort=False)
    out = grouped[cols].mean()
    std = grouped[cols].std(ddof=0).add_suffix("_std")
    out = out.join(std).join(grouped["seed"].nunique().rename("n_seeds")).reset_index()
    return out.dropna(axis=1, how="all")


def mean_pm_std(summary: pd.DataFrame, metric: str = "auroc", datasets=None, percent: bool = True) -> pd.DataFrame:
    """A display table: methods x datasets, cells "mean ± std" (percent like the paper)."""
    frame = summary if datasets is None else summary[summary["dataset"].isin(datasets)]
    scale = 100.0 if percent else 1.0
    cell = frame.apply(lambda r: f"{scale * r[metric]:.1f} ± {scale * r.get(metric + '_std', 0.0):.1f}"
                       if pd.notna(r[metric]) else "", axis=1)
    wide = frame.assign(cell=cell).pivot_table(index=["id_dataset", "method"], columns="dataset", values="cell",
                                               aggfunc="first", sort=False)
    order = [d for d in (datasets or dict.fromkeys(frame["dataset"])) if d in wide.columns]
    return wide[order]


def per_seed(rows: pd.DataFrame, id_dataset: str, method: str, dataset: str, metric: str) -> np.ndarray:
    """The values over seeds (in seed order) of one cell."""
    sel = rows[(rows["id_dataset"] == id_dataset) & (rows["method"] == method) & (rows["dataset"] == dataset)]
    return sel.sort_values("seed")[metric].to_numpy(dtype=float)


# ------------------------------------------------------------------------------------------------ records

def _rows_to_records(rows: pd.DataFrame, table_of, method_names, datasets, metrics_, cfg) -> list:
    recs = []
    for r in rows.itertuples(index=False):
        r = r._asdict()
        table = table_of(r["id_dataset"])
        if table is None or r["method"] not in method_names or r["dataset"] not in datasets:
            continue
        name = title(r["method"], table if table in TITLES else "main")
        for metric in metrics_:
            value = r.get(metric)
            if value is not None and np.isfinite(value):
                recs.append(results.record("greg", table, name, r["dataset"], metric, float(value),
                                           setting=f"{r['id_dataset']}/{r['arch']}", seed=int(r["seed"]),
                                           profile=cfg.profile))
    return recs


def finetune_records(rows: pd.DataFrame, posthoc: pd.DataFrame, cfg) -> list:
    """Notebook 11: Tables 1-3 (per set and average), Table 4 (average, near, far), Table 6 (ID accuracy)."""
    sets = set(rows["dataset"]) - {"id"}
    main = list(TITLES["main"])
    recs = _rows_to_records(rows, MAIN_TABLE.get, main, sets, METRICS, cfg)
    recs += _rows_to_records(posthoc, MAIN_TABLE.get, main, sets, METRICS, cfg)
    recs += _rows_to_records(rows, lambda _: "4", list(TITLES["4"]), {"average", "near", "far"}, METRICS, cfg)
    recs += _rows_to_records(rows, lambda _: "6", ["base", "energy", "greg"], {"id"}, ("id_accuracy",), cfg)
    return recs


def sampling_records(rows: pd.DataFrame, cfg) -> list:
    """Notebook 12: Table 5 (average, near, far), DOS and GReg+ in Tables 2-3, Table 6 (ID accuracy)."""
    sets = set(rows["dataset"]) - {"id"}
    recs = _rows_to_records(rows, lambda _: "5", list(TITLES["5"]), {"average", "near", "far"}, METRICS, cfg)
    recs += _rows_to_records(rows, MAIN_TABLE.get, ["dos", "greg_plus"], sets, METRICS, cfg)
    recs += _rows_to_records(rows, lambda _: "6", ["dos", "greg_plus"], {"id"}, ("id_accuracy",), cfg)
    return recs


# ------------------------------------------------------------------------------------------------ claims

def paper_difference(table: str, better: str, worse: str, metric: str, setting: str | None = None):
    """The paper's own ``better - worse`` (in its direction, percent points) for a comparison, or None when
    the table does not print both cells. ``setting`` defaults to :func:`paper_setting` of the table."""
    setting = setting or paper_setting(table)
    tab = results.paper_table("greg", table)
    dataset = "id" if metric == "id_accuracy" else "average"
    sel = tab[(tab["setting"] == setting) & (tab["dataset"] == dataset) & (tab["metric"] == metric)]
    values = dict(zip(sel["method"], sel["value"]))
    b, w = title(better, table), title(worse, table)
    if b not in values or w not in values:
        return None
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    return round(sign * (values[b] - values[w]), 2)


#: a "no harm" claim (Table 6) agrees when its 95% interval excludes a drop of more than this (accuracy, fraction)
NO_HARM_TOLERANCE = 0.01
#: AUROC above which a set is at ceiling: no method can show an improvement there
CEILING = 0.995
#: below this share of the loss the gradient term can hardly move a short fine-tune
GRAD_SHARE_SMALL = 0.05


def no_harm_verdict(v: dict, tolerance: float = NO_HARM_TOLERANCE) -> str:
    """"agrees" when the interval of ``better - worse`` excludes a loss larger than ``tolerance``,
    "disagrees" when it lies wholly below zero, "tie within noise" (undecided) otherwise."""
    if not np.isfinite(v["noise"]):
        return "undetermined"
    if v["lo"] > -tolerance:
        return "agrees"
    return "disagrees" if v["hi"] < 0 else "tie within noise"


def premise(rows: pd.DataFrame, id_dataset: str, methods) -> dict:
    """What the runs' first epoch saw, averaged over the runs of ``methods``: shares of ID / auxiliary rows
    inside the margins and kept by eq. (3)'s masks (see ``experiments.epoch_shares``)."""
    import json

    sel = rows[(rows["id_dataset"] == id_dataset) & rows["method"].isin(list(methods)) & (rows["dataset"] == "id")]
    firsts = [json.loads(s)[0] for s in sel.get("shares", pd.Series(dtype=object)).dropna() if json.loads(s)]
    keys = ("in_inside", "aux_inside", "mask_in", "mask_aux")
    out = {k: float(np.mean([f[k] for f in firsts])) for k in keys} if firsts else {}
    grads = [f["grad_share"] for f in firsts if "grad_share" in f]
    if grads:
        out["grad_share"] = float(np.mean(grads))
    return out


def diagnose(rows: pd.DataFrame, id_dataset: str, better: str, worse: str, dataset: str, metric: str,
             grad_term: bool) -> str:
    """Why a comparison came out as it did, from the premise: a set at ceiling, an idle auxiliary pool or
    idle masks of eq. (3); else the shares the training saw."""
    sel = rows[(rows["id_dataset"] == id_dataset) & (rows["dataset"] == dataset) & rows["method"].isin([better, worse])]
    if dataset != "id" and "auroc" in sel and sel["auroc"].min() >= CEILING:
        return f"{dataset} at ceiling: AUROC >= {sel['auroc'].min():.3f}"
    p = premise(rows, id_dataset, (better, worse))
    if not p:
        return ""
    if p["aux_inside"] < 0.1:
        return f"aux inactive: {p['aux_inside']:.0%} inside margins"
    if grad_term and p["mask_in"] + p["mask_aux"] < 0.1:
        return f"gradient term idle: masks keep {p['mask_in']:.0%} ID / {p['mask_aux']:.0%} aux rows"
    if grad_term and p.get("grad_share", 1.0) < GRAD_SHARE_SMALL:
        return (f"gradient term weak: {p['grad_share']:.1%} of the loss in the first epoch (masks keep "
                f"{p['mask_in']:.0%} ID / {p['mask_aux']:.0%} aux rows)")
    return (f"premise holds: {p['aux_inside']:.0%} of aux and {p['in_inside']:.0%} of ID rows inside the margins; "
            f"masks keep {p['mask_in']:.0%} ID / {p['mask_aux']:.0%} aux rows (first epoch)")


def compare_claim(rows: pd.DataFrame, cfg, *, better: str, worse: str, id_dataset: str, arch: str, dataset: str,
                  metric: str, text: str, table: str, note: str = "", role: str = "primary",
                  kind: str = "improvement", grad_term: bool = False) -> dict:
    """One claim "``better`` beats ``worse``" (or, ``kind="no harm"``, "is not worse than") tested over seeds
    on one cell; ours = the mean effect in the paper's direction (points) with its 95% t interval, the
    paper's value from its table, the diagnosis from the premise and the runs' health checks."""
    from .experiments import healths

    sel = rows[rows["arch"] == arch]
    a = per_seed(sel, id_dataset, better, dataset, metric)
    b = per_seed(sel, id_dataset, worse, dataset, metric)
    if a.size == 0 or b.size == 0:
        raise ValueError(f"no {metric} values for {better!r} and {worse!r} on {id_dataset}/{dataset}")
    if a.size == b.size:   # a diverged run has NaN metrics (and a failed health check): keep the finite pairs
        keep = np.isfinite(a) & np.isfinite(b)
        a, b = (a[keep], b[keep]) if keep.any() else (np.zeros(1), np.zeros(1))
    note = note or (f"{a.size} seeds; {title(better, table)} {100 * a.mean():.2f} vs {title(worse, table)} "
                    f"{100 * b.mean():.2f}")
    reference = paper_setting(table, id_dataset)
    paper = paper_difference(table, better, worse, metric, reference)
    if kind == "improvement" and paper is not None and paper < 0:
        # the paper's own table goes the other way in this cell: test what the table shows
        a, b, paper = b, a, -paper
        text += f" [the paper's Table {table} shows the opposite here: tested in its direction]"
    v = results.seed_verdict(a, b, higher_is_better=HIGHER_IS_BETTER[metric])
    verdict = no_harm_verdict(v) if kind == "no harm" else v["verdict"]
    delta, noise = 100.0 * v["delta"], 100.0 * v["noise"]
    paper_text = None if paper is None else (f"{paper:+.2f} ({reference}, Table {table}, "
                                             f"{'ID test set' if metric == 'id_accuracy' else 'average'})")
    bounds = {} if not np.isfinite(noise) else {"ours_lo": delta - noise, "ours_hi": delta + noise}
    return results.claim("greg", text, ours=delta, verdict=verdict, paper_value=paper_text,
                         setting=results.setting_label(profile=cfg.profile, id_dataset=id_dataset, arch=arch),
                         profile=cfg.profile, unit=f"{metric} points on {dataset}, + = the paper's direction",
                         note=note,
                         kind=kind, role=role, health=healths(sel, id_dataset, (better, worse)),
                         diagnosis=diagnose(sel, id_dataset, better, worse, dataset, metric, grad_term), **bounds)


#: the cells a detection claim is tested on: near-OOD AUROC decides (primary), the rest is shown (supporting)
DETECTION_CELLS = (("near", "auroc", "primary"), ("near", "fpr95", "supporting"), ("average", "fpr95", "supporting"))
#: ... and where a benchmark has no near-OOD set (the CIFAR tables): the average AUROC decides
AVERAGE_CELLS = (("average", "auroc", "primary"), ("average", "fpr95", "supporting"))


def detection_cells(rows: pd.DataFrame, id_dataset: str, methods) -> tuple:
    """The cells that test a detection claim on ``id_dataset``: near-OOD AUROC decides where the benchmark
    has near-OOD sets, the average AUROC otherwise; so every claim has exactly one primary row."""
    near = rows[(rows["id_dataset"] == id_dataset) & (rows["dataset"] == "near")]
    return DETECTION_CELLS if all(m in set(near["method"]) for m in methods) else AVERAGE_CELLS


def grad_claims(rows: pd.DataFrame, cfg, pairs=None) -> list[dict]:
    """Table 4: "+Grad improves Energy, OE and POEM", per ID dataset: near-OOD AUROC decides (primary);
    near-OOD FPR95 and the average FPR95 the paper leads with are shown beside it (supporting)."""
    from .experiments import GRAD_PAIRS

    out = []
    for plain, grad in (pairs or GRAD_PAIRS).items():
        for id_dataset, arch in _settings(rows):
            for dataset, metric, role in detection_cells(rows, id_dataset, (plain, grad)):
                if not _has(rows, id_dataset, dataset, (plain, grad), metric):
                    continue
                out.append(compare_claim(rows, cfg, better=grad, worse=plain, id_dataset=id_dataset, arch=arch,
                                         dataset=dataset, metric=metric, table="4", role=role, grad_term=True,
                                         text=f"adding the gradient term improves {title(plain, '4')} ({metric}, "
                                              f"{dataset})"))
    return out


def accuracy_claims(rows: pd.DataFrame, cfg, pairs=(("greg", "energy"),)) -> list[dict]:
    """Table 6: GReg does not hurt ID accuracy (a "no harm" claim against Energy Loss); GReg+ vs DOS in
    notebook 12."""
    out = []
    for better, worse in pairs:
        for id_dataset, arch in _settings(rows):
            if _has(rows, id_dataset, "id", (better, worse), "id_accuracy"):
                out.append(compare_claim(rows, cfg, better=better, worse=worse, id_dataset=id_dataset, arch=arch,
                                         dataset="id", metric="id_accuracy", table="6", kind="no harm",
                                         text=f"{title(better, '6')} keeps ID accuracy at least that of "
                                              f"{title(worse, '6')}"))
    return out


def sampling_claims(rows: pd.DataFrame, cfg) -> list[dict]:
    """Table 5: energy-based clustering beats random, POEM and DOS sampling (all trained with the energy
    loss alone), and GReg+ (the same sampler with the gradient term) beats energy-only clustering."""
    comparisons = [("energy_clustering", other) for other in ("random", "poem", "dos")]
    comparisons.append(("greg_plus", "energy_clustering"))
    out = []
    for better, worse in comparisons:
        for id_dataset, arch in _settings(rows):
            for dataset, metric, role in detection_cells(rows, id_dataset, (better, worse)):
                if _has(rows, id_dataset, dataset, (better, worse), metric):
                    # the paper has no random-sampling row: the kit's baseline is shown, never counted
                    out.append(compare_claim(rows, cfg, better=better, worse=worse, id_dataset=id_dataset,
                                             arch=arch, dataset=dataset, metric=metric, table="5",
                                             role="supporting" if worse == "random" else role,
                                             grad_term=better == "greg_plus",
                                             text=f"{title(better, '5')} beats {title(worse, '5')} ({metric}, "
                                                  f"{dataset})"))
    return out


def _settings(rows: pd.DataFrame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(rows["id_dataset"], rows["arch"])))


def _has(rows: pd.DataFrame, id_dataset: str, dataset: str, methods, metric: str) -> bool:
    """Whether every method has values of ``metric`` on that cell."""
    if metric not in rows.columns:
        return False
    sel = rows[(rows["id_dataset"] == id_dataset) & (rows["dataset"] == dataset)].dropna(subset=[metric])
    return all(m in set(sel["method"]) for m in methods)


def claims_table(claims: list[dict]) -> pd.DataFrame:
    """The claims as a display table."""
    cols = ["claim", "setting", "role", "kind", "ours", "ours_lo", "ours_hi", "paper_value", "verdict", "diagnosis"]
    return pd.DataFrame(claims)[cols]


def verdict_counts(claims: list[dict], role: str | None = "primary") -> dict[str, int]:
    """How many claims got each verdict (by default the primary ones: those that count)."""
    counts = {v: 0 for v in results.VERDICTS}
    for c in claims:
        if role is None or c.get("role", "primary") == role:
            counts[c["verdict"]] += 1
    return {k: v for k, v in counts.items() if v}
