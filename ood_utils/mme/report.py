"""The MME notebooks' comparison with the paper: each claim tested becomes claim rows with a verdict.

A verdict is computed from the run's uncertainty, never from a fixed margin: the effect is measured in the
direction the paper claims (positive = the paper's way) with a 95% interval, and ``results.interval_verdict``
calls it "agrees" (the interval is above 0), "disagrees" (below 0) or "tie within noise". Intervals come
from the test samples: a paired bootstrap of the mean over the claim's sets (``results.bootstrap_effect``)
when two detectors are compared on the same images, binomial errors for ratios. Near-OOD leads, since
far-OOD saturates: each claim is measured on the near-OOD sets where the benchmark has any (:func:`claim_sets`).

Each claim of the paper has one *primary* row (counted by notebook 90) and may have *supporting* rows (the
same comparison in another metric or OOD group, shown, not counted); its ``kind`` says whether it claims an
improvement, "no harm" (no gain or loss in one direction, where a tie is what the paper predicts) or a
property; its ``diagnosis`` says why the verdict came out so, from the premise checks of the run.

A claim "for every X" (every OOD set, every pair, every other detector) is decided by :func:`all_verdict`:
it disagrees as soon as one X does, agrees only when all do; comparisons with several others hold at 95%
together (Bonferroni, ``results.bootstrap_family``).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import metrics, results
from ..verdicts import all_verdict  # noqa: F401 (re-exported: mme.all_verdict)
from .assumptions import (_ranked, broken_premise_share, grid_scores, hypothesis1_summary, premise_truncations,
                          proposition1_counterexamples)
from .benchmark import PAPER_NAMES, per_set
from .ensemble import TRUNCATION_TITLES
from .factors import FACTOR_TITLES, factor_label
from .records import MINI_ANALOGUES, paper_values

#: the order verdicts are reported in
VERDICT_ORDER = results.VERDICTS


# ------------------------------------------------------------------------------------- verdict helpers
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
    the claimed direction (AUROC: better - worse; FPR95: worse - better), averaged over ``sets``, with the
    paired bootstrap 95% interval of that mean (``results.bootstrap_effect``)."""
    return results.bootstrap_effect(better, worse, list(sets), metric, n_boot, seed=seed)


def has_counterpart(dataset: str) -> bool:
    """Whether an OOD set stands for one of the paper's (``mini``'s noise sets are sanity checks only)."""
    return not MINI_ANALOGUES.get(dataset, "itself").startswith("none")


def _claim(claim: str, effect: dict, cfg, paper_value=None, unit="AUROC", note="", kind="improvement",
           role="primary", diagnosis="") -> dict:
    return results.claim("mme", claim, ours=effect["delta"], ours_lo=effect.get("lo"), ours_hi=effect.get("hi"),
                         verdict=effect["verdict"], paper_value=paper_value, cfg=cfg, unit=unit, note=note,
                         kind=kind, role=role, diagnosis=diagnosis)


def claims_table(rows) -> pd.DataFrame:
    """Claim rows for display: the claim, ours with its interval, the paper's value, the verdict, whether the
    row counts (primary) or supports, and the reason (diagnosis)."""
    out = []
    for r in rows:  # counts and shares have no interval and no sign
        ours = f"{r['ours']:.3g}" if r["ours_lo"] is None else \
            f"{r['ours']:+.3f} [{r['ours_lo']:+.3f}, {r['ours_hi']:+.3f}]"
        out.append({"claim": r["claim"], "ours (95% interval)": ours, "unit": r["unit"],
                    "paper": r["paper_value"], "verdict": r["verdict"], "role": r.get("role", "primary"),
                    "diagnosis": r.get("diagnosis", ""), "note": r["note"]})
    return pd.DataFrame(out)


def _tint(color: str, weight: float = 0.3) -> str:
    """A light tint of a verdict's colour for a table cell (the same hue as in every figure)."""
    rgb = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(255 - weight * (255 - c)):02x}" for c in rgb)


#: verdict -> background of its cell in :func:`claims_view`: tints of ``results.VERDICT_COLORS``
VERDICT_COLORS = {v: _tint(c) for v, c in results.VERDICT_COLORS.items()}


def claims_view(rows):
    """:func:`claims_table` styled for a notebook: full text, left-aligned, no index, verdicts tinted."""
    table = claims_table(rows)
    return (table.style.hide(axis="index").set_properties(**{"text-align": "left"})
            .map(lambda v: f"background-color: {VERDICT_COLORS[v]}", subset=["verdict"]))


def verdict_counts(rows) -> str:
    """"3 agree, 1 tie within noise, 2 disagree" over the primary rows (supporting rows are not counted)."""
    counts = pd.Series([r["verdict"] for r in rows if r.get("role", "primary") == "primary"]).value_counts()
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
    """Fig. 2: the CO ratio is higher on ID than on every OOD set. Each set's gap gets a binomial 95%
    half-width; a row reports its smallest gap. Primary: every OOD set that stands for one of the paper's
    (``mini``'s noise sets have no counterpart); supporting: near, far, and the sanity-check sets."""
    id_row, ood = ratios.iloc[0], ratios.iloc[1:].reset_index(drop=True)
    gaps = (id_row["co_scale"] - ood["co_scale"]).to_numpy()
    noise = np.array([binomial_noise(id_row["co_scale"], id_row["n"], p, n)
                      for p, n in zip(ood["co_scale"], ood["n"])])
    verdicts = [results.verdict(g, e) for g, e in zip(gaps, noise)]
    counterpart = ood["dataset"].map(has_counterpart).to_numpy(dtype=bool)

    def row(mask, text, role, diagnosis=None):
        k = int(np.flatnonzero(mask)[np.argmin(gaps[mask])])
        effect = {"delta": float(gaps[k]), "lo": float(gaps[k] - noise[k]), "hi": float(gaps[k] + noise[k]),
                  "verdict": all_verdict([verdicts[i] for i in np.flatnonzero(mask)])}
        odd = [f"{ood['dataset'][i]} {verdicts[i]} (ratio {ood['co_scale'][i]:.3f} vs ID {id_row['co_scale']:.3f}, "
               f"{ood['n'][i]} images)" for i in np.flatnonzero(mask) if verdicts[i] != "agrees"]
        return _claim(f"Fig. 2: the CO consistency ratio is higher on ID than on {text}", effect, cfg, _fig2_paper(),
                      "ratio gap (ID - OOD)", f"smallest gap on {ood['dataset'][k]}", kind="property", role=role,
                      diagnosis=diagnosis if diagnosis is not None else "; ".join(odd))

    main = counterpart if counterpart.any() else np.ones(len(ood), bool)
    rows = [row(main, "every OOD set" + (" with a counterpart in the paper" if not counterpart.all() else ""),
                "primary")]
    for group in ("near", "far"):
        mask = main & (ood["group"] == group).to_numpy()
        if mask.any() and not mask.all():
            rows.append(row(mask, f"every {group}-OOD set", "supporting"))
    if not counterpart.all():
        noise_ratio = ood["co_scale"][~counterpart]
        rows.append(row(~counterpart, "the sanity-check sets (noise)", "supporting",
                        f"no counterpart in the paper, a sanity check (ratio {noise_ratio.min():.3f}-"
                        f"{noise_ratio.max():.3f} vs ID {id_row['co_scale']:.3f})"))
    return rows


def _summary_rows(cov: pd.DataFrame, scope: str) -> pd.DataFrame:
    """One row per pair for a summary scope ("average", "near", "far"): the summary rows of
    ``score_covariances`` when present, else the per-set rows averaged (a cautious interval)."""
    rows = cov[cov["dataset"] == scope]
    if len(rows):
        return rows.set_index(["score_a", "score_b"])
    sets = per_set(cov)
    sets = sets if scope == "average" else sets[sets["group"] == scope]
    return sets.groupby(["score_a", "score_b"], sort=False)[["cov_id", "cov_ood", "gap_lo", "gap_hi"]].mean()


def covariance_claims(cov: pd.DataFrame, cfg) -> list[dict]:
    """Table 4: Cov_in >= Cov_out for every pair of scores. Primary: Cov_out averaged over the OOD sets, as the
    paper's table averages; supporting: averaged over the near and over the far sets. A pair's verdict comes
    from its bootstrap interval of Cov_in - Cov_out."""
    t4 = paper_values("Table 4").pivot_table(index="method", columns="dataset", values="value", sort=False)
    paper = f"holds for {int((t4['id'] >= t4['average']).sum())} of {len(t4)} pairs" if len(t4) else None
    rows = []
    for scope in ("average", "near", "far"):
        if scope != "average" and not (per_set(cov)["group"] == scope).any():
            continue
        pairs = _summary_rows(cov, scope)
        verdicts = [results.interval_verdict(lo, hi) for lo, hi in zip(pairs["gap_lo"], pairs["gap_hi"])]
        share = sum(v == "agrees" for v in verdicts) / len(verdicts)
        failing = [f"{PAPER_NAMES.get(a, a)}·{PAPER_NAMES.get(b, b)}" for (a, b), v in zip(pairs.index, verdicts)
                   if v == "disagrees"]
        where = "averaged over the OOD sets" if scope == "average" else f"{scope}-OOD sets"
        rows.append(_claim(f"Table 4: Cov_in >= Cov_out for every pair of scores ({where})",
                           {"delta": share, "verdict": all_verdict(verdicts)}, cfg, paper,
                           "share of pairs that agree", f"{len(verdicts)} pairs", kind="property",
                           role="primary" if scope == "average" else "supporting",
                           diagnosis=f"significantly reversed: {', '.join(failing)}" if failing else ""))
    return rows


#: Hypothesis 1's family: every scoring function of Fig. 3 but the two distances. Mahalanobis is the
#: paper's named exception; NME+ the paper itself leaves untruncated "as it is a distance-based method, as
#: suggested by Figure 3" (Sec. 3.4)
H1_EXCLUDED = ("mahalanobis", "nme")
#: Hypothesis 1's primary protocol: S fitted on raw features, as the author's code feeds ViM, PCA and fDBD
#: truncated features inside MME (ViM's alpha, PCA's subspace and fDBD's mean from raw training features)
H1_PRIMARY = "raw"


def _best_effects(bench, grid, protocol, sets, allowed, n_boot, seed) -> dict:
    """Per scoring function: (its best truncation among ``allowed`` that change its score, paired effect of
    that truncation against the raw feature on ``sets``)."""
    h = hypothesis1_summary(grid, protocol)
    sub = grid[(grid["fit_on"] == protocol) & grid["dataset"].isin(sets) & (grid["truncation"] != "none")]
    mean_gain = sub.groupby(["method", "truncation"], sort=False)["gain"].mean()
    out = {}
    for method in h["best"].index:
        active = [t for t in mean_gain[method].index if t in h["active"].get(method, ()) and t in allowed]
        if active:
            best = max(active, key=lambda t: mean_gain[(method, t)])
            out[method] = (best, paired_effect(grid_scores(bench, method, best, protocol),
                                               grid_scores(bench, method, "none"), sets, n_boot=n_boot, seed=seed))
    return out


def _titles(truncations) -> str:
    return ", ".join(TRUNCATION_TITLES.get(t, t) for t in truncations) or "none"


def hypothesis1_claims(bench, grid: pd.DataFrame, cfg, n_boot: int = 200, seed: int = 0,
                       premise: pd.DataFrame | None = None) -> list[dict]:
    """Fig. 3: every scoring function but the distances gains from some truncation; Mahalanobis does not.
    Hypothesis 1 is conditional: it speaks of truncations g that widen the ID-OOD feature gap. With
    ``premise`` (``truncation_premise``) only the truncations whose premise holds on the claim's sets are
    tried; per scoring function, its best such truncation (by mean gain, no-op cells left out) is tested
    against the raw feature with a paired bootstrap. The protocol of :data:`H1_PRIMARY` gives the primary
    rows, the other protocol supporting ones."""
    scope, sets = claim_sets(bench)
    tried = [t for t in dict.fromkeys(grid["truncation"]) if t != "none"]
    allowed = premise_truncations(premise, sets) if premise is not None else tried
    failed = [t for t in tried if t not in allowed]
    why = (f"premise (g widens the ID-OOD feature gap) holds on {scope}-OOD for {_titles(allowed)}; "
           f"fails for {_titles(failed)}" if premise is not None else "")
    rows = []
    for protocol in sorted(dict.fromkeys(grid["fit_on"]), key=lambda p: p != H1_PRIMARY):
        role = "primary" if protocol == H1_PRIMARY else "supporting"
        effects = _best_effects(bench, grid, protocol, sets, allowed, n_boot, seed)
        family = {m: e for m, e in effects.items() if m not in H1_EXCLUDED}
        verdicts = [e["verdict"] for _, e in family.values()]
        helped = [PAPER_NAMES.get(m, m) for m, (_, e) in family.items() if e["verdict"] == "agrees"]
        hurt = [f"{PAPER_NAMES.get(m, m)} {e['delta']:+.3f} ({TRUNCATION_TITLES.get(t, t)})"
                for m, (t, e) in family.items() if e["verdict"] == "disagrees"]
        diagnosis = "; ".join(x for x in (why, f"best qualifying truncation loses for {', '.join(hurt)}" if hurt
                                          else "") if x)
        if not family:
            diagnosis = f"untestable here: no qualifying truncation changes any scoring function ({why})"
        rows.append(_claim(
            f"Fig. 3 ({protocol}-fitted S): every scoring function but the distances gains from some truncation",
            {"delta": len(helped), "verdict": all_verdict(verdicts)}, cfg,
            "every function but Mahalanobis gains (ImageNet, a figure)", f"functions helped ({scope}-OOD)",
            f"of {len(family)} ({', '.join(PAPER_NAMES.get(m, m) for m in family)}): {', '.join(helped) or 'none'} "
            "gain beyond noise; NME+ left out (the paper leaves it untruncated, Sec. 3.4)",
            kind="improvement", role=role, diagnosis=diagnosis))
        if "mahalanobis" in set(grid["method"]):
            text = f"Fig. 3 ({protocol}-fitted S): Mahalanobis gains nothing from truncation"
            unit = f"AUROC loss of its best truncation ({scope}-OOD)"
            if "mahalanobis" not in effects:
                rows.append(_claim(text, {"delta": 0.0, "verdict": "undetermined"}, cfg,
                                   "the only function that does not gain", unit, kind="no harm", role=role,
                                   diagnosis=f"untestable here: no qualifying truncation changes it ({why})"))
                continue
            best, e = effects["mahalanobis"]
            flipped = {"delta": -e["delta"], "lo": -e["hi"], "hi": -e["lo"],
                       "verdict": results.interval_verdict(-e["hi"], -e["lo"])}
            rows.append(_claim(text, flipped, cfg, "the only function that does not gain", unit,
                               f"best qualifying truncation: {TRUNCATION_TITLES.get(best, best)}", kind="no harm",
                               role=role, diagnosis=why))
    return rows


def proposition1_claims(bench, check: pd.DataFrame, logs: dict, cfg, n_boot: int = 200, seed: int = 0) -> list[dict]:
    """Proposition 1, twice: as proved (no cell whose premises hold may fail: exact arithmetic, no noise)
    and as the tables read it (the product of all five factors ranks, by AUROC, at least as well as its
    best single factor; paired bootstrap on the claim's sets). The second row's diagnosis measures the
    proof's premise on the claim's sets: Assumption 1 for the pairs of factors."""
    counter = proposition1_counterexamples(check)
    applies = int(check["premises"].sum())
    proof = {"delta": float(len(counter)), "verdict": "agrees" if counter.empty else "disagrees"}
    rows = [_claim("Proposition 1: V(S1 S2) >= max V(Si) wherever its premises hold", proof, cfg,
                   "proved (eqs. 8-11)", "counterexamples",
                   f"premises hold in {applies} of {len(check)} cells; {broken_premise_share(check):.0%} of the "
                   "finite failures have a broken premise", kind="property")]
    scope, sets = claim_sets(bench)
    factors = list(logs["id"])
    ranked = {f: {k: _ranked(v, (f,)) for k, v in logs.items()} for f in factors}
    product = {k: _ranked(v, tuple(factors)) for k, v in logs.items()}
    best = max(factors, key=lambda f: np.mean([metrics.auroc(ranked[f]["id"], ranked[f][s]) for s in sets]))
    effect = paired_effect(product, ranked[best], sets, n_boot=n_boot, seed=seed)
    pairs = check[(check["n_factors"] == 2) & check["dataset"].isin(sets)]
    a1 = pairs.groupby("factors", sort=False)["assumption1"].apply(lambda s: bool(s.eq(True).all()))
    diagnosis = "" if effect["verdict"] == "agrees" else (
        f"premise on {scope}-OOD: Assumption 1 (Cov_in >= Cov_out) holds for {int(a1.sum())} of {len(a1)} pairs "
        f"of MME's factors on every {scope}-OOD set")
    rows.append(_claim("Proposition 1 read as ranking: the product of MME's factors beats its best factor",
                       effect, cfg, "implied by Tables 1-3", f"AUROC gain over {factor_label(best)} ({scope}-OOD)",
                       diagnosis=diagnosis))
    return rows
