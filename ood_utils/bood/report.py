"""BOOD's records and claims: tidy rows -> result records named like ``ood_utils/tables/bood.csv``, and the
paper's claims tested with the run's uncertainty.

- seeds: ``results.seed_verdict`` (two standard errors of the paired difference over seeds);
- one seed (ablations, sweeps): a paired bootstrap interval of the AUROC difference on the same images,
  pooled over the OOD sets (``metrics.paired_bootstrap_ci``), then ``results.interval_verdict``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import metrics, results

PAPER = "bood"
#: the table each mini/real ID dataset's main comparison fills
MAIN_TABLE = {"cifar100": 1, "imagenet100": 2}


def rows_frame(rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def records(frame: pd.DataFrame, cfg, table=None, arch: str | None = None) -> list:
    """One record per (method, set, metric, seed). ``table``: the paper table these rows stand for; by
    default the row's own table (1, 2 or 7 for the real benchmarks) or 1 for mini's analogue."""
    out = []
    for _, r in frame.iterrows():
        t = table if table is not None else (r.get("table") if pd.notna(r.get("table")) else 1)
        setting = f"{r['id_dataset']}/{arch or cfg.arch}"
        for metric in ("auroc", "fpr95", "id_accuracy"):
            value = r.get(metric)
            if value is None or (isinstance(value, float) and np.isnan(value)):
                continue
            out.append(results.record(PAPER, int(t), r["method"], r["dataset"], metric, float(value), cfg=cfg,
                                      setting=setting, seed=int(r["seed"])))
    return out


def summary(frame: pd.DataFrame, sets=("average",)) -> pd.DataFrame:
    """Mean +- std over seeds of AUROC / FPR95 per method and set (percent), and ID accuracy."""
    ood = frame[frame["dataset"].isin(sets)]
    agg = ood.groupby(["id_dataset", "method", "dataset"])[["auroc", "fpr95"]].agg(["mean", "std"]) * 100
    agg.columns = [f"{m}_{s}" for m, s in agg.columns]
    acc = frame[frame["dataset"] == "id"].groupby(["id_dataset", "method"])["id_accuracy"].mean() * 100
    return agg.reset_index().merge(acc.rename("id_accuracy").reset_index(), on=["id_dataset", "method"])


def per_seed(frame: pd.DataFrame, method: str, dataset: str, metric: str, id_dataset: str) -> list[float]:
    rows = frame[(frame["method"] == method) & (frame["dataset"] == dataset) & (frame["id_dataset"] == id_dataset)]
    return [float(v) for v in rows.sort_values("seed")[metric]]


def seed_claim(frame, cfg, id_dataset: str, claim: str, better: str, worse: str, metric: str,
               dataset: str = "average", paper_value=None, note: str = "", arch: str | None = None) -> dict:
    """A claim "``better`` beats ``worse`` on ``metric``" tested over seeds."""
    higher = metric != "fpr95"
    a = per_seed(frame, better, dataset, metric, id_dataset)
    b = per_seed(frame, worse, dataset, metric, id_dataset)
    v = results.seed_verdict(a, b, higher_is_better=higher)
    d = v["delta"] * (1 if higher else -1)           # better - worse, in the metric's own direction
    lo, hi = (d - v["noise"], d + v["noise"]) if np.isfinite(v["noise"]) else (None, None)
    return results.claim(PAPER, claim, ours=d, ours_lo=lo, ours_hi=hi, verdict=v["verdict"], cfg=cfg,
                         paper_value=paper_value, unit=f"{metric} difference (fraction), {v['n']} seeds",
                         note=note, setting=results.setting_label(cfg, id_dataset=id_dataset, arch=arch))


def pooled(scores: dict) -> tuple[np.ndarray, np.ndarray]:
    """(ID scores, every OOD set's scores concatenated)."""
    return np.asarray(scores["id"]), np.concatenate([np.asarray(v) for k, v in scores.items() if k != "id"])


def bootstrap_claim(run_better, run_worse, cfg, claim: str, *, paper_value=None, note: str = "", n_boot: int = 200,
                    arch: str | None = None) -> dict:
    """"``run_better`` beats ``run_worse``" from one seed: paired bootstrap of the pooled-OOD AUROC."""
    ia, oa = pooled(run_better.scores)
    ib, ob = pooled(run_worse.scores)
    lo, hi = metrics.paired_bootstrap_ci(ia, oa, ib, ob, "auroc", n_boot=n_boot, seed=cfg.seed)
    ours = metrics.auroc(ia, oa) - metrics.auroc(ib, ob)
    return results.claim(PAPER, claim, ours=ours, ours_lo=lo, ours_hi=hi, verdict=results.interval_verdict(lo, hi),
                         cfg=cfg, paper_value=paper_value, unit="pooled-OOD AUROC difference, 1 seed, paired bootstrap",
                         note=note, setting=results.setting_label(cfg, id_dataset=run_better.dataset, arch=arch))


def best_value_claim(runs, cfg, key: str, paper_best, *, n_boot: int = 200, arch: str | None = None) -> dict:
    """"``key`` = ``paper_best`` works best" (Figs. 5-6): the paper's value against our best other value,
    paired bootstrap of the pooled-OOD AUROC. A tie means the sweep cannot separate them."""
    by_value = {r.params["value"]: r for r in runs}
    if paper_best not in by_value:
        raise ValueError(f"the sweep over {key} has no run at the paper's value {paper_best}: {sorted(by_value)}")
    aurocs = {v: metrics.auroc(*pooled(r.scores)) for v, r in by_value.items()}
    rival = max((v for v in aurocs if v != paper_best), key=aurocs.get)
    claim = f"{key} = {paper_best:g} gives the best OOD detection among the values tried"
    row = bootstrap_claim(by_value[paper_best], by_value[rival], cfg, claim, paper_value=f"best at {paper_best:g}",
                          note=f"compared with the best other value, {key} = {rival:g}", n_boot=n_boot, arch=arch)
    return row


def largest_gain_claim(frame, cfg, id_dataset: str, target: str, arch: str | None = None) -> dict:
    """Does BOOD help most on ``target`` (mini: unseen_digits, the pure semantic shift)? The AUROC gain of
    BOOD over Energy on ``target`` against the largest gain on any other set, paired over seeds."""
    sub = frame[(frame["id_dataset"] == id_dataset) & ~frame["dataset"].isin(["id", "average", "near", "far"])]
    sets = sorted(set(sub["dataset"]))
    if target not in sets:
        raise ValueError(f"{target!r} was not evaluated on {id_dataset}; sets: {sets}")
    gain = {s: np.subtract(per_seed(frame, "BOOD", s, "auroc", id_dataset), per_seed(frame, "Energy", s, "auroc", id_dataset))
            for s in sets}
    others = np.max(np.stack([gain[s] for s in sets if s != target]), axis=0)
    v = results.seed_verdict(gain[target], others)
    return results.claim(PAPER, f"BOOD's AUROC gain over Energy is largest on {target}", ours=v["delta"],
                         ours_lo=v["delta"] - v["noise"] if np.isfinite(v["noise"]) else None,
                         ours_hi=v["delta"] + v["noise"] if np.isfinite(v["noise"]) else None,
                         verdict=v["verdict"], cfg=cfg, paper_value="question of this kit (near-OOD, Table 7 analogue)",
                         unit=f"gain on {target} minus the largest other gain, {v['n']} seeds",
                         setting=results.setting_label(cfg, id_dataset=id_dataset, arch=arch))


def paper_number(table, method: str, dataset: str, metric: str):
    """The published value (percent) or None."""
    t = results.paper_table(PAPER, table)
    hit = t[(t["method"] == method) & (t["dataset"] == dataset) & (t["metric"] == metric)]
    return None if hit.empty else float(hit["value"].iloc[0])
