"""Notebook 20's experiments: the three ideas behind MME, each tested on real features.

- Assumption 1 (Cov_in(S1, S2) >= Cov_out(S1, S2)): :func:`score_covariances` (Table 4) and
  :func:`consistency_ratios` (the CO ratio table of Fig. 2).
- Hypothesis 1 (a truncation g helps a scoring function S): :func:`truncation_grid` (Fig. 3), with S fitted
  on the raw or on the truncated training features, :func:`hypothesis1_summary`.
- Proposition 1 (V(S1 ... Sn) >= max_i V(S_i)): :func:`separability`, :func:`mme_factor_values`,
  :func:`proposition1_check`, :func:`proposition1_counterexamples`.
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from .. import metrics
from ..detectors import DETECTORS
from ..detectors._numerics import signed_log1p_from_log
from .benchmark import (FIG3_SCORES, FIG3_TRUNCATIONS, PAPER_NAMES, TABLE4_SCORES, Benchmark, _progress,
                        detector_scores, fit_detector, fitted_truncation, per_set)
from .factors import MMEParts, _log_abs


# --------------------------------------------------------------------------------------- Assumption 1
def score_covariances(bench: Benchmark, scores=TABLE4_SCORES, preset: str | None = None, n_boot: int = 0,
                      seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """Assumption 1: Cov_in(S1, S2) >= Cov_out(S1, S2) for every pair of ``scores`` (Table 4).

    One row per (pair, OOD set): ``cov_id`` on the ID test set, ``cov_ood`` on that OOD set (sample
    covariance of the raw scores), ``holds`` = cov_id >= cov_ood, and ``rel_gap`` = (cov_id - cov_ood) /
    |cov_id| (a unit-free size of the gap for plots); then, per pair, summary rows as ``metrics.evaluate_sets``
    has them: dataset "average" (group "all": Cov_out averaged over the table's sets, the paper's Table 4),
    "near" and "far" (averaged over each group). ``n_boot`` > 0 adds ``gap_lo`` / ``gap_hi``, a 95% bootstrap
    interval of cov_id - cov_ood (ID and each OOD set resampled independently; a summary row's interval is
    that of the averaged gap). ``per_set(cov)`` keeps the per-set rows."""
    values = {s: detector_scores(bench, s, preset=preset) for s in _progress(scores, "scores", progress)}
    return covariance_rows(values, bench.groups, n_boot=n_boot, seed=seed, average_over=bench.average_sets())


def covariance_rows(values: dict[str, dict[str, np.ndarray]], groups: dict[str, str], n_boot: int = 0,
                    seed: int = 0, average_over=None) -> pd.DataFrame:
    """The rows of :func:`score_covariances` from precomputed scores ``{score: {"id": ..., set: ...}}``."""
    rng = np.random.default_rng(seed)
    draws = {k: rng.integers(0, len(v), size=(n_boot, len(v))) for k, v in next(iter(values.values())).items()}
    summaries = {"average": ("all", list(average_over or groups)),
                 "near": ("near", [n for n, g in groups.items() if g == "near"]),
                 "far": ("far", [n for n, g in groups.items() if g == "far"])}
    rows = []
    for a, b in itertools.combinations(values, 2):
        cov_id = float(np.cov(values[a]["id"], values[b]["id"])[0, 1])
        boot_id = _boot_cov(values[a]["id"], values[b]["id"], draws["id"]) if n_boot else None
        cov_ood, boot_ood = {}, {}
        for name in groups:
            cov_ood[name] = float(np.cov(values[a][name], values[b][name])[0, 1])
            if n_boot:
                boot_ood[name] = _boot_cov(values[a][name], values[b][name], draws[name])
        for name, group in [(n, (g, [n])) for n, g in groups.items()] + list(summaries.items()):
            group, sets = group
            if not sets:
                continue
            mean_ood = float(np.mean([cov_ood[s] for s in sets]))
            row = {"score_a": a, "score_b": b, "dataset": name, "group": group, "cov_id": cov_id,
                   "cov_ood": mean_ood, "holds": cov_id >= mean_ood,
                   "rel_gap": (cov_id - mean_ood) / max(abs(cov_id), 1e-12)}
            if n_boot:
                gaps = boot_id - np.mean([boot_ood[s] for s in sets], axis=0)
                row["gap_lo"], row["gap_hi"] = (float(q) for q in np.percentile(gaps, [2.5, 97.5]))
            rows.append(row)
    return pd.DataFrame(rows)


def _boot_cov(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Sample covariance of (x, y) on each row of resampled indices ``idx`` (n_boot, n)."""
    xs, ys = x[idx], y[idx]
    xs = xs - xs.mean(axis=1, keepdims=True)
    ys = ys - ys.mean(axis=1, keepdims=True)
    return (xs * ys).sum(axis=1) / (idx.shape[1] - 1)


def covariance_table(cov: pd.DataFrame) -> pd.DataFrame:
    """Table 4 layout: a symmetric score x score table whose cells read "Cov_in / mean Cov_out"."""
    mean = per_set(cov).groupby(["score_a", "score_b"], sort=False)[["cov_id", "cov_ood"]].mean()
    names = list(dict.fromkeys(list(cov["score_a"]) + list(cov["score_b"])))
    titles = [PAPER_NAMES.get(n, n) for n in names]
    table = pd.DataFrame("", index=titles, columns=titles)
    for (a, b), r in mean.iterrows():
        cell = f"{r.cov_id:.3g} / {r.cov_ood:.3g}"
        table.loc[PAPER_NAMES.get(a, a), PAPER_NAMES.get(b, b)] = cell
        table.loc[PAPER_NAMES.get(b, b), PAPER_NAMES.get(a, a)] = cell
    return table


def consistency_ratios(bench: Benchmark, preset: str | None = None) -> pd.DataFrame:
    """The CO consistency ratio (eq. 4, Fig. 2 table): the fraction of samples whose predicted class agrees
    between the logits and the nearest class mean of the normalised features (NME). ``co_scale`` uses the
    SCALE logits' argmax, as CO+ inside MME does; ``co_mls`` the raw logits' argmax (MLS), as eq. (4) reads.
    Assumption 1 predicts a higher ratio on ID than on OOD data."""
    co = fit_detector(bench, "co", preset)
    scale = fitted_truncation(bench, "scale", percentile=DETECTORS["mme"].defaults["scale_percentile"])
    sets = {"id": (bench.id_dataset or "ID", "ID", bench.test), **{n: (n, g, bench.ood[n]) for n, g in bench.groups.items()}}
    rows = []
    for name, group, f in sets.values():
        agree_scale = co.agreement(f.feats, scale.logits_from_raw(f.feats, f.logits))
        agree_mls = co.agreement(f.feats, f.logits)
        rows.append({"dataset": name, "group": group, "n": len(f.labels),
                     "co_scale": float(agree_scale.mean()), "co_mls": float(agree_mls.mean())})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------- Hypothesis 1
def truncation_grid(bench: Benchmark, scores=FIG3_SCORES, truncations=FIG3_TRUNCATIONS,
                    preset: str | None = None, fit_on=("raw",), progress: bool = True) -> pd.DataFrame:
    """Hypothesis 1 (Fig. 3): AUROC of every scoring function S on truncated features g(z), per OOD set and
    averaged (dataset "average"), for each protocol in ``fit_on`` (see :func:`detector_scores`; column
    ``fit_on``). ``truncation`` "none" is the raw feature (the same for both protocols). ``gain`` =
    AUROC(S(g(z))) - AUROC(S(z)) on the same set: Hypothesis 1 predicts gain >= 0. Every score is kept in
    ``bench.scores`` (``bench.scores_of(S, truncation=t, fit_on=protocol)``; raw: ``fit_on="raw"``)."""
    fit_on = (fit_on,) if isinstance(fit_on, str) else tuple(fit_on)
    rows = []
    for s in _progress(scores, "scoring functions", progress):
        raw_fit = fit_detector(bench, s, preset)  # shared by every truncation of the raw protocol
        base_rows = bench.evaluate(s, detector_scores(bench, s, None, preset, fitted=raw_fit), truncation="none",
                                   fit_on="raw")
        base = {x["dataset"]: x["auroc"] for x in base_rows}
        for protocol in fit_on:
            for t in truncations:
                r = ([{**x, "fit_on": protocol} for x in base_rows] if t is None else
                     bench.evaluate(s, detector_scores(bench, s, t, preset, fit_on=protocol,
                                                       fitted=raw_fit if protocol == "raw" else None),
                                    truncation=t, fit_on=protocol))
                rows += [{**x, "gain": x["auroc"] - base[x["dataset"]]} for x in r]
    return pd.DataFrame(rows)


def truncation_premise(bench: Benchmark, truncations=FIG3_TRUNCATIONS, preset: str | None = None) -> pd.DataFrame:
    """The premise of Hypothesis 1, measured: a truncation g qualifies when it widens the gap between ID and
    OOD features, E_in[g(z)] - E_out[g(z)] >= E_in[z] - E_out[z] (the paper's condition, from VRA's eq. 3).
    The features are vectors; the gap is taken on their total activation (the sum over dimensions, the
    quantity ReAct and VRA argue about). One row per (truncation, OOD set): ``gap_raw``, ``gap_truncated``
    and ``holds``. DICE leaves z unchanged (it edits W), so it meets the condition with equality."""
    rows = []
    for t in [t for t in truncations if t is not None]:
        trunc = fitted_truncation(bench, t, preset or bench.preset)
        id_raw, id_g = bench.test.feats.sum(axis=1).mean(), trunc.transform(bench.test.feats).sum(axis=1).mean()
        for name, group in bench.groups.items():
            feats = bench.ood[name].feats
            gap_raw = float(id_raw - feats.sum(axis=1).mean())
            gap_g = float(id_g - trunc.transform(feats).sum(axis=1).mean())
            rows.append({"truncation": t, "dataset": name, "group": group, "gap_raw": gap_raw,
                         "gap_truncated": gap_g, "holds": gap_g >= gap_raw - 1e-9 * max(1.0, abs(gap_raw))})
    return pd.DataFrame(rows)


def premise_truncations(premise: pd.DataFrame, sets) -> list[str]:
    """The truncations whose premise (:func:`truncation_premise`) holds on every one of ``sets``."""
    sub = premise[premise["dataset"].isin(list(sets))]
    ok = sub.groupby("truncation", sort=False)["holds"].all()
    return [t for t, holds in ok.items() if holds]


def grid_scores(bench: Benchmark, method: str, truncation: str, fit_on: str = "raw") -> dict[str, np.ndarray]:
    """The scores behind one cell of :func:`truncation_grid` (``truncation`` "none" = raw features)."""
    return bench.scores_of(method, truncation=truncation, fit_on="raw" if truncation == "none" else fit_on)


def grid_matrix(grid: pd.DataFrame, value: str = "auroc", dataset: str = "average",
                fit_on: str = "raw") -> pd.DataFrame:
    """Scoring function x truncation matrix of ``value`` on one dataset (default: the average) and one
    protocol, for heatmaps."""
    sub = grid[grid["dataset"] == dataset]
    if "fit_on" in sub:
        sub = sub[sub["fit_on"] == fit_on]
    return sub.pivot_table(index="method", columns="truncation", values=value, sort=False)


def noop_cells(grid: pd.DataFrame, fit_on: str = "raw", tol: float = 1e-12) -> pd.DataFrame:
    """(score, truncation) cells where the truncation does not change the score's AUROC on any set: it
    touches nothing the score reads (DICE only edits W, Mahalanobis never reads W; PCA already clips like
    ReAct). Such a cell is neither evidence for nor against Hypothesis 1."""
    sub = grid[(grid["truncation"] != "none") & (grid["dataset"] != "average")]
    if "fit_on" in sub:
        sub = sub[sub["fit_on"] == fit_on]
    same = sub.assign(zero=sub["gain"].abs() <= tol).groupby(["method", "truncation"], sort=False)["zero"].all()
    return same.unstack("truncation")


def hypothesis1_summary(grid: pd.DataFrame, fit_on: str = "raw", tol: float = 0.001) -> dict:
    """Counts behind the Hypothesis 1 verdict for one protocol: pairs that gain / lose more than ``tol``
    average AUROC (no-op pairs left out), the scoring functions helped by at least one truncation, and
    each score's best gain; ``active``: per score, the truncations that change anything."""
    gain = grid_matrix(grid, "gain", fit_on=fit_on).drop(columns="none", errors="ignore")
    noop = noop_cells(grid, fit_on).reindex(index=gain.index, columns=gain.columns).fillna(False).astype(bool)
    active = gain.mask(noop)
    best = active.max(axis=1)
    n = int(active.notna().to_numpy().sum())
    return {"fit_on": fit_on, "pairs": n, "noop": int(noop.to_numpy().sum()),
            "gain": int((active > tol).to_numpy().sum()), "loss": int((active < -tol).to_numpy().sum()),
            "helped": [m for m in best.index if best[m] > tol], "best": best, "scores": len(best),
            "active": {m: [t for t in gain.columns if not noop.loc[m, t]] for m in gain.index}}


# ----------------------------------------------------------------------------------------- Proposition 1
def separability(s_in: np.ndarray, s_out: np.ndarray) -> float:
    """V(S) = E_in[S(x)] - E_out[S(x)] (Section 3.1, after eq. 2): the paper's separability measure.
    Not scale-free: V(c S) = c V(S)."""
    return float(np.mean(s_in) - np.mean(s_out))


def mme_factor_values(parts: MMEParts, logs: bool = False) -> dict[str, dict]:
    """The five factors of eq. (7) on every set: ``{set: {factor: values}}`` with factors "exp" =
    exp(SCALE - ViM), "fdbd", "pca" = 1 - r, "co" = CO+, "nme" = NME+ (see FACTOR_TITLES), as plain float64
    numbers; exp() of a very large argument is inf, which :func:`proposition1_check` reports, not hides.
    ``logs=True`` gives ``(log|factor|, sign)`` pairs instead, exact however large the factor."""
    def factors(feats, logits):
        f = parts.log_factors(feats, logits)
        pairs = {"exp": (f["energy"][0] + f["vim"][0], f["energy"][1]), "fdbd": f["fdbd"], "pca": f["pca"],
                 "co": f["co"], "nme": f["nme"]}
        if logs:
            return pairs
        with np.errstate(over="ignore"):
            return {k: sign * np.exp(log_abs) for k, (log_abs, sign) in pairs.items()}

    out = {"id": factors(parts.bench.test.feats, parts.bench.test.logits)}
    for name, f in parts.bench.ood.items():
        out[name] = factors(f.feats, f.logits)
    return out


def proposition1_check(values: dict[str, dict[str, np.ndarray]], groups: dict[str, str],
                       logs: dict | None = None) -> pd.DataFrame:
    """Proposition 1, checked numerically: for every pair of factors (and for the product of all of them)
    on every OOD set, is V(S1 S2) >= max(V(S1), V(S2))?

    Columns: ``v_product``, ``v_max``, ``holds``; the premises of the proof, each True/False:
    ``eq2`` (V(S_i) >= 0 for each factor, eq. 2), ``assumption1`` (Cov_in >= Cov_out, pairs only),
    ``eout_ge1`` (E_out[S_i] >= 1, the proof's scaling step); and ``auroc_product`` vs ``auroc_max``
    (``auroc_holds``), the scale-free version of the same claim, computed from ``logs`` (the
    ``mme_factor_values(parts, logs=True)`` pairs; derived from ``values`` when not given). ``finite`` is
    False where a factor or product overflowed float64: then V cannot be computed and ``holds`` is False.

    ``premises`` is the one definition of "the proof applies": finite, ``eq2``, ``eout_ge1`` and
    ``assumption1`` all True (so never for the product of all five, whose induction needs Assumption 1 for
    partial products that are not checked). Where it is True the proof says ``holds`` must be True:
    :func:`proposition1_counterexamples` lists the cells where it is not."""
    if logs is None:
        big = np.finfo(np.float64).max
        logs = {k: {f: (_log_abs(np.nan_to_num(v, posinf=big, neginf=-big)), np.sign(v)) for f, v in d.items()}
                for k, d in values.items()}
    names = list(values["id"])
    combos = [tuple(c) for c in itertools.combinations(names, 2)] + [tuple(names)]
    rows = []
    for ood, group in groups.items():
        for combo in combos:
            rows.append(_proposition_row(values, logs, ood, group, combo, metrics))
    check = pd.DataFrame(rows)
    check["premises"] = (check["finite"] & check["eq2"] & check["eout_ge1"]
                         & check["assumption1"].eq(True)).astype(bool)
    return check


def proposition1_counterexamples(check: pd.DataFrame) -> pd.DataFrame:
    """Cells whose premises all hold but whose V(product) < max V(S_i): none may exist if the proof is right."""
    return check[check["premises"] & ~check["holds"].astype(bool)]


def broken_premise_share(check: pd.DataFrame) -> float:
    """Of the finite cells where V(product) < max V(factor), the share with a broken premise (``premises``
    False); 1.0 when there is no such failure (every failure, none, is explained)."""
    fails = check[check["finite"].astype(bool) & ~check["holds"].astype(bool)]
    return float((~fails["premises"]).mean()) if len(fails) else 1.0


def _ranked(logs: dict, combo) -> np.ndarray:
    """A finite score that orders samples exactly as the product of the factors in ``combo`` does."""
    log_abs = sum(logs[k][0] for k in combo)
    sign = np.prod([logs[k][1] for k in combo], axis=0)
    return signed_log1p_from_log(log_abs, sign)


def _proposition_row(values, logs, ood, group, combo, metrics) -> dict:
    s_in = [values["id"][k] for k in combo]
    s_out = [values[ood][k] for k in combo]
    with np.errstate(over="ignore", invalid="ignore"):
        p_in, p_out = np.prod(s_in, axis=0), np.prod(s_out, axis=0)
        v_each = [separability(a, b) for a, b in zip(s_in, s_out)]
        v_prod = separability(p_in, p_out)
    finite = bool(np.isfinite(v_prod) and np.all(np.isfinite(v_each)))
    auroc_each = [metrics.auroc(_ranked(logs["id"], (k,)), _ranked(logs[ood], (k,))) for k in combo]
    auroc_prod = metrics.auroc(_ranked(logs["id"], combo), _ranked(logs[ood], combo))
    pair = len(combo) == 2
    # population covariances: the proof's identity E[S1 S2] = E[S1] E[S2] + Cov(S1, S2) (eq. 8) uses them
    cov_ok = np.nan
    if pair and finite:
        with np.errstate(over="ignore", invalid="ignore"):
            c_in, c_out = float(np.cov(*s_in, bias=True)[0, 1]), float(np.cov(*s_out, bias=True)[0, 1])
        cov_ok = c_in >= c_out if np.isfinite(c_in) and np.isfinite(c_out) else np.nan
    return {"dataset": ood, "group": group, "factors": " x ".join(combo), "n_factors": len(combo),
            "v_product": v_prod, "v_max": max(v_each), "holds": finite and v_prod >= max(v_each),
            "eq2": all(v >= 0 for v in v_each), "assumption1": cov_ok,
            "eout_ge1": all(float(np.mean(s)) >= 1 for s in s_out), "finite": finite,
            "auroc_product": auroc_prod, "auroc_max": max(auroc_each),
            "auroc_holds": bool(auroc_prod >= max(auroc_each))}
