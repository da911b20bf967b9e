"""The MME notebooks' comparison with the paper: each claim tested becomes a claim row with a verdict.

A verdict is computed from the run's uncertainty, never from a fixed margin: the effect is measured in the
direction the paper claims (positive = the paper's way) with a 95% interval, and ``results.interval_verdict``
calls it "agrees" (the interval is above 0), "disagrees" (below 0) or "tie within noise". Intervals come
from the test samples: a paired bootstrap (``metrics.paired_bootstrap_ci``) when two detectors are compared
on the same images, binomial errors for ratios. Near-OOD leads, since far-OOD saturates: each claim is
measured on the near-OOD sets where the benchmark has any (:func:`claim_sets`).

A claim "for every X" (every OOD set, every pair, every scoring function) is decided by :func:`all_verdict`:
it disagrees as soon as one X does, agrees only when all do.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import metrics, results
from .assumptions import _ranked, broken_premise_share, grid_scores, hypothesis1_summary, proposition1_counterexamples
from .benchmark import PAPER_NAMES, average_table
from .bootstrap import paired_bounds
from .factors import factor_label
from .records import main_table, paper_values, reference_settings

#: the order verdicts are reported in
VERDICT_ORDER = ("agrees", "tie within noise", "disagrees", "undetermined")


# ------------------------------------------------------------------------------------- verdict helpers
def all_verdict(verdicts) -> str:
    """A claim about every member of a set: "disagrees" if any member disagrees, "agrees" if every member
    agrees, otherwise "tie within noise" ("undetermined" for an empty set)."""
    verdicts = list(verdicts)
    if not verdicts:
        return "undetermined"
    if "disagrees" in verdicts:
        return "disagrees"
    return "agrees" if all(v == "agrees" for v in verdicts) else "tie within noise"


def binomial_noise(p_a: float, n_a: int, p_b: float, n_b: int) -> float:
    """Two standard errors of the difference of two independent proportions (a 95% half-width)."""
    if n_a < 1 or n_b < 1:
        raise ValueError(f"need at least one sample on each side, got n = {n_a}, {n_b}")
    return 2.0 * math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)


def claim_sets(bench, scope: str | None = None) -> tuple[str, list[str]]:
    """(scope, sets) a claim is measured on: the near-OOD sets when there are any, else the sets the
    paper's tables average over; ``scope`` ("near", "far", "average") forces one."""
    sets = {"near": bench.near(), "far": bench.far(), "average": bench.average_sets()}
    if scope is None:
        scope = "near" if sets["near"] else "average"
    if scope not in sets:
        raise ValueError(f"unknown scope {scope!r}; valid: {', '.join(sets)}")
    return scope, sets[scope]


def paired_effect(better: dict, worse: dict, sets, metric: str = "auroc", n_boot: int = 200,
                  seed: int = 0) -> dict:
    """How much ``better`` beats ``worse`` (score dicts ``{"id": ..., set: ...}`` on the same images), in
    the claimed direction (AUROC: better - worse; FPR95: worse - better), averaged over ``sets`` with a
    95% interval averaged from each set's paired bootstrap interval (``metrics.paired_bootstrap_ci``'s,
    computed by ``paired_bounds``; cautious: wider than the mean's own)."""
    sign = 1.0 if metric == "auroc" else -1.0
    fn = metrics.auroc if metric == "auroc" else metrics.fpr_at_tpr
    deltas, los, his = [], [], []
    for name in sets:
        deltas.append(sign * (fn(better["id"], better[name]) - fn(worse["id"], worse[name])))
        lo, hi = paired_bounds(better["id"], better[name], worse["id"], worse[name], metric, n_boot, seed=seed)
        los.append(lo if sign > 0 else -hi)
        his.append(hi if sign > 0 else -lo)
    lo, hi = float(np.mean(los)), float(np.mean(his))
    return {"delta": float(np.mean(deltas)), "lo": lo, "hi": hi, "verdict": results.interval_verdict(lo, hi)}


def _claim(claim: str, effect: dict, cfg, paper_value=None, unit="AUROC", note="") -> dict:
    return results.claim("mme", claim, ours=effect["delta"], ours_lo=effect.get("lo"), ours_hi=effect.get("hi"),
                         verdict=effect["verdict"], paper_value=paper_value, cfg=cfg, unit=unit, note=note)


def claims_table(rows) -> pd.DataFrame:
    """Claim rows for display: the claim, ours with its interval, the paper's value, the verdict."""
    out = []
    for r in rows:  # counts and shares have no interval and no sign
        ours = f"{r['ours']:.3g}" if r["ours_lo"] is None else \
            f"{r['ours']:+.3f} [{r['ours_lo']:+.3f}, {r['ours_hi']:+.3f}]"
        out.append({"claim": r["claim"], "ours (95% interval)": ours, "unit": r["unit"],
                    "paper": r["paper_value"], "verdict": r["verdict"], "note": r["note"]})
    return pd.DataFrame(out)


#: verdict -> background of its cell in :func:`claims_view` (light Okabe-Ito tints)
VERDICT_COLORS = {"agrees": "#cdeee3", "tie within noise": "#eeeeee", "disagrees": "#f7d9c4", "undetermined": "#ffffff"}


def claims_view(rows):
    """:func:`claims_table` styled for a notebook: full text, left-aligned, no index, verdicts tinted."""
    table = claims_table(rows)
    return (table.style.hide(axis="index").set_properties(**{"text-align": "left"})
            .map(lambda v: f"background-color: {VERDICT_COLORS[v]}", subset=["verdict"]))


def verdict_counts(rows) -> str:
    """"3 agree, 1 tie within noise, 2 disagree" for a list of claim rows."""
    counts = pd.Series([r["verdict"] for r in rows]).value_counts()
    words = {"agrees": "agree", "tie within noise": "tie within noise", "disagrees": "disagree",
             "undetermined": "undetermined"}
    return ", ".join(f"{counts[v]} {words[v]}" for v in VERDICT_ORDER if v in counts)


# ------------------------------------------------------------------------------------------ notebook 20
def _fig2_paper() -> str:
    fig2 = paper_values("Fig. 2")
    parts = []
    for setting, sub in fig2.groupby("setting", sort=False):
        id_v = float(sub[sub["dataset"] == "id"]["value"].iloc[0])
        ood = sub[sub["dataset"] != "id"]["value"]
        parts.append(f"{setting}: ID {id_v:.2f}, OOD {ood.min():.2f}-{ood.max():.2f}")
    return "; ".join(parts)


def consistency_claims(ratios: pd.DataFrame, cfg) -> list[dict]:
    """Fig. 2: the CO ratio is higher on ID than on each OOD set, per group (near first); each set's gap
    gets a binomial 95% half-width; the group's row reports its smallest gap."""
    id_row, rows = ratios.iloc[0], []
    for group in ("near", "far"):
        sub = ratios.iloc[1:][ratios.iloc[1:]["group"] == group]
        if sub.empty:
            continue
        gaps = id_row["co_scale"] - sub["co_scale"]
        noise = [binomial_noise(id_row["co_scale"], id_row["n"], p, n) for p, n in zip(sub["co_scale"], sub["n"])]
        verdicts = [results.verdict(g, e) for g, e in zip(gaps, noise)]
        k = int(np.argmin(gaps.to_numpy()))
        effect = {"delta": float(gaps.iloc[k]), "lo": float(gaps.iloc[k] - noise[k]),
                  "hi": float(gaps.iloc[k] + noise[k]), "verdict": all_verdict(verdicts)}
        rows.append(_claim(f"Fig. 2: the CO consistency ratio is higher on ID than on every {group}-OOD set",
                           effect, cfg, _fig2_paper(), "ratio gap (ID - OOD)",
                           f"smallest gap on {sub['dataset'].iloc[k]}; sets: " + ", ".join(
                               f"{d} {v}" for d, v in zip(sub["dataset"], verdicts))))
    return rows


def covariance_claims(cov: pd.DataFrame, cfg) -> list[dict]:
    """Table 4: Cov_in >= Cov_out for every pair, with Cov_out averaged over each group's sets (near
    first); a pair's verdict comes from its bootstrap interval of Cov_in - Cov_out (``gap_lo`` / ``gap_hi``)."""
    t4 = paper_values("Table 4").pivot_table(index="method", columns="dataset", values="value", sort=False)
    paper = f"holds for {int((t4['id'] >= t4['average']).sum())} of {len(t4)} pairs" if len(t4) else None
    rows = []
    for group in ("near", "far"):
        sub = cov[cov["group"] == group]
        if sub.empty:
            continue
        pairs = sub.groupby(["score_a", "score_b"], sort=False)[["cov_id", "cov_ood", "gap_lo", "gap_hi"]].mean()
        verdicts = [results.interval_verdict(lo, hi) for lo, hi in zip(pairs["gap_lo"], pairs["gap_hi"])]
        share = sum(v == "agrees" for v in verdicts) / len(verdicts)
        failing = [f"{PAPER_NAMES.get(a, a)}·{PAPER_NAMES.get(b, b)}" for (a, b), v in zip(pairs.index, verdicts)
                   if v == "disagrees"]
        rows.append(_claim(f"Table 4: Cov_in >= Cov_out for every pair of scores ({group}-OOD sets)",
                           {"delta": share, "verdict": all_verdict(verdicts)}, cfg, paper,
                           "share of pairs that agree",
                           f"{len(verdicts)} pairs; significantly reversed: {', '.join(failing) or 'none'}"))
    return rows


def hypothesis1_claims(bench, grid: pd.DataFrame, cfg, n_boot: int = 200, seed: int = 0) -> list[dict]:
    """Fig. 3: every scoring function but Mahalanobis gains from some truncation; Mahalanobis does not.
    Per protocol and scoring function, its best truncation (by the mean gain on the claim's sets, no-op
    cells left out) is tested against the raw feature with a paired bootstrap."""
    scope, sets = claim_sets(bench)
    rows = []
    for protocol in dict.fromkeys(grid["fit_on"]):
        h = hypothesis1_summary(grid, protocol)
        sub = grid[(grid["fit_on"] == protocol) & grid["dataset"].isin(sets) & (grid["truncation"] != "none")]
        mean_gain = sub.groupby(["method", "truncation"], sort=False)["gain"].mean()
        effects = {}
        for method in h["best"].index:
            active = [t for t in mean_gain[method].index if t in h["active"].get(method, ())]
            if not active:
                continue
            best = max(active, key=lambda t: mean_gain[(method, t)])
            effects[method] = (best, paired_effect(grid_scores(bench, method, best, protocol),
                                                   grid_scores(bench, method, "none"), sets, n_boot=n_boot,
                                                   seed=seed))
        others = {m: e for m, e in effects.items() if m != "mahalanobis"}
        verdicts = [e["verdict"] for _, e in others.values()]
        helped = [PAPER_NAMES.get(m, m) for m, (_, e) in others.items() if e["verdict"] == "agrees"]
        rows.append(_claim(
            f"Fig. 3 ({protocol}-fitted S): every scoring function but Mahalanobis gains from some truncation",
            {"delta": sum(v == "agrees" for v in verdicts), "verdict": all_verdict(verdicts)}, cfg,
            "every function but Mahalanobis gains (ImageNet, a figure)", f"functions helped ({scope}-OOD)",
            f"of {len(verdicts)}: {', '.join(helped) or 'none'} gain beyond noise"))
        if "mahalanobis" in effects:
            best, e = effects["mahalanobis"]
            flipped = {"delta": -e["delta"], "lo": -e["hi"], "hi": -e["lo"],
                       "verdict": results.interval_verdict(-e["hi"], -e["lo"])}
            rows.append(_claim(f"Fig. 3 ({protocol}-fitted S): Mahalanobis gains nothing from truncation",
                               flipped, cfg, "the only function that does not gain",
                               f"AUROC loss of its best truncation ({scope}-OOD)", f"best truncation: {best}"))
    return rows


def proposition1_claims(bench, check: pd.DataFrame, logs: dict, cfg, n_boot: int = 200, seed: int = 0) -> list[dict]:
    """Proposition 1, twice: as proved (no cell whose premises hold may fail: exact arithmetic, no noise)
    and as the tables read it (the product of all five factors ranks, by AUROC, at least as well as its
    best single factor; paired bootstrap on the claim's sets)."""
    counter = proposition1_counterexamples(check)
    applies = int(check["premises"].sum())
    proof = {"delta": float(len(counter)), "verdict": "agrees" if counter.empty else "disagrees"}
    rows = [_claim("Proposition 1: V(S1 S2) >= max V(Si) wherever its premises hold", proof, cfg,
                   "proved (eqs. 8-11)", "counterexamples",
                   f"premises hold in {applies} of {len(check)} cells; {broken_premise_share(check):.0%} of the "
                   "finite failures have a broken premise")]
    scope, sets = claim_sets(bench)
    factors = list(logs["id"])
    ranked = {f: {k: _ranked(v, (f,)) for k, v in logs.items()} for f in factors}
    product = {k: _ranked(v, tuple(factors)) for k, v in logs.items()}
    best = max(factors, key=lambda f: np.mean([metrics.auroc(ranked[f]["id"], ranked[f][s]) for s in sets]))
    effect = paired_effect(product, ranked[best], sets, n_boot=n_boot, seed=seed)
    rows.append(_claim("Proposition 1 read as ranking: the product of MME's factors beats its best factor",
                       effect, cfg, "implied by Tables 1-3", f"AUROC gain over {factor_label(best)} ({scope}-OOD)"))
    return rows


# ------------------------------------------------------------------------------------------ notebook 21
def _paper_rank(cfg, metric: str) -> str:
    """MME's rank in the paper's main table, per published setting, as text."""
    table, out = main_table(cfg), []
    for setting in reference_settings(cfg, table):
        p = paper_values(table, setting)
        col = p[(p["dataset"] == "average") & (p["metric"] == metric)].set_index("method")["value"]
        if "MME" in col:
            better = (col > col["MME"]) if metric == "auroc" else (col < col["MME"])
            out.append(f"rank {int(better.sum()) + 1} of {len(col)} ({setting})")
    return "; ".join(out) or None


def ensemble_claims(bench, main: pd.DataFrame, ablation, variants, extras, sens, cfg, n_boot: int = 200,
                    seed: int = 0) -> list[dict]:
    """Notebook 21's claims: MME beats the best other detector (near, far, average; AUROC and FPR95), CO+
    helps NME+ and MME beats NME+ + CO+ (Table 3), the published truncations are the best (Table 5), extra
    scores add nothing (Table 6) and MME is robust to lambda and T (Fig. 5)."""
    rows = []
    mme = bench.scores_of("mme")
    for scope in ("near", "far", "average"):
        _, sets = claim_sets(bench, scope)
        if not sets:
            continue
        for metric in ("auroc", "fpr95"):
            col = average_table(main, scope=scope)[metric].drop("mme")
            best = col.idxmax() if metric == "auroc" else col.idxmin()
            e = paired_effect(mme, bench.scores_of(best), sets, metric, n_boot, seed)
            where = "averaged over the OOD sets" if scope == "average" else f"{scope}-OOD"
            rows.append(_claim(f"{main_table(cfg)} / Fig. 1: MME beats every other detector ({where} "
                               f"{metric.upper()})", e, cfg, _paper_rank(cfg, metric), metric.upper(),
                               f"best other: {PAPER_NAMES.get(best, best)}"))
    scope, sets = claim_sets(bench)
    pairs = [("Table 3: CO+ improves NME+", ablation, "NME+ + CO+", "NME+"),
             ("Table 3: the full MME improves NME+ + CO+", ablation, "MME", "NME+ + CO+")]
    swaps = average_table(variants, scope=scope)["auroc"].drop("MME")
    pairs.append(("Table 5: no truncation swap beats the published choice", variants, "MME", swaps.idxmax()))
    added = average_table(extras, scope=scope)["auroc"].drop("MME")
    pairs.append(("Table 6: multiplying MME by another score brings no gain", extras, "MME", added.idxmax()))
    for claim, frame, better, worse in pairs:
        table = claim.split(":")[0]
        extra = {c: frame.loc[frame["method"] == better, c].iloc[0] for c in ("component", "truncation", "added")
                 if c in frame}
        extra_w = {c: frame.loc[frame["method"] == worse, c].iloc[0] for c in extra}
        e = paired_effect(bench.scores_of(better, **extra), bench.scores_of(worse, **extra_w), sets, "auroc",
                          n_boot, seed)
        rows.append(_claim(claim, e, cfg, _paper_gap(table, better, None if table == "Table 3" else worse),
                           f"AUROC, {scope}-OOD", f"{better} vs {worse}"))
    rows.append(sensitivity_claim(bench, sens, sets, scope, cfg, n_boot, seed))
    return rows


def _paper_gap(table: str, better: str, worse: str | None) -> str | None:
    """The paper's average AUROC of ``better`` minus ``worse`` (``None``: its best other row) in one of its
    transcribed tables, as text with the setting; None when not transcribed."""
    p = paper_values(table)
    p = p[(p["dataset"] == "average") & (p["metric"] == "auroc")]
    if p.empty or better not in set(p["method"]):
        return None
    col = p.set_index("method")["value"]
    worse = worse if worse in col.index else col.drop(better).idxmax()
    return f"{col[better] - col[worse]:+.3f} vs {worse} ({p['setting'].iloc[0]}, average)"


def sensitivity_claim(bench, sens: pd.DataFrame, sets, scope: str, cfg, n_boot: int = 200, seed: int = 0) -> dict:
    """Fig. 5: best and worst (lambda, T) settings differ by less than 0.02 AUROC. Effect: 0.02 minus the
    paired difference between the best and the worst setting on the claim's sets."""
    curve = sens[sens["dataset"].isin(sets)].groupby(["param", "value"], sort=False)["auroc"].mean()
    (p_hi, v_hi), (p_lo, v_lo) = curve.idxmax(), curve.idxmin()
    d = paired_effect(bench.scores_of("MME", param=p_hi, value=v_hi), bench.scores_of("MME", param=p_lo, value=v_lo),
                      sets, "auroc", n_boot, seed)
    lo, hi = 0.02 - d["hi"], 0.02 - d["lo"]
    return _claim("Fig. 5: MME's AUROC varies by less than 0.02 over lambda and T",
                  {"delta": 0.02 - d["delta"], "lo": lo, "hi": hi, "verdict": results.interval_verdict(lo, hi)},
                  cfg, "spread < 0.02 (ImageNet, a figure)", f"0.02 - spread, {scope}-OOD",
                  f"best {p_hi}={v_hi:g}, worst {p_lo}={v_lo:g}")
