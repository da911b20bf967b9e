"""BOOD's records and claims: tidy rows -> result records named like ``ood_utils/tables/bood.csv``, and the
paper's claims tested with the run's uncertainty.

Every claim compares runs paired over seeds (seed i of both arms shares the data order):
``results.seed_verdict``, the 95% t interval of the mean paired difference (df = n - 1). The metric is the
paper's: the *average over OOD sets* is the plain mean of the per-set AUROCs, as the paper's tables average.
One primary metric per claim (the others ``role="supporting"``); ID accuracy is a "no harm" claim; a claim
resting on a run that failed its health checks is "undetermined (training failed: ...)"; every claim carries
a diagnosis. Sweep claims are declared before the run: the paper's value against each other value tried.
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


NO_HARM_TOLERANCE = 0.01    # "keeps the ID accuracy": at most one point lost (the paper's own tables lose ~1)
CEILING = 0.995             # a baseline AUROC above this leaves no room to improve


def per_seed(frame: pd.DataFrame, method: str, dataset: str, metric: str, id_dataset: str) -> list[float]:
    rows = frame[(frame["method"] == method) & (frame["dataset"] == dataset) & (frame["id_dataset"] == id_dataset)]
    return [float(v) for v in rows.sort_values("seed")[metric]]


def _rows_of(run, dataset: str) -> list[dict]:
    from .experiments import run_rows

    return [r for r in run_rows(run) if r["dataset"] == dataset and r.get("table") in (None, _main_table(run))]


def has_row(run, dataset: str) -> bool:
    """Whether the run was scored on ``dataset`` (e.g. "near": CIFAR-100's Table 1 has no near-OOD set)."""
    return bool(_rows_of(run, dataset))


def run_metric(run, metric: str = "auroc", dataset: str = "average") -> float:
    """One run's ``metric`` on ``dataset`` (an OOD set, "average" = mean over sets, "near", "far", or
    "id" for ``id_accuracy``)."""
    hit = _rows_of(run, dataset)
    if not hit:
        raise ValueError(f"{run.method} on {run.dataset} has no row {dataset!r}")
    return float(hit[0][metric])


def _main_table(run):
    from .experiments import TABLE_SETS
    return next(iter(TABLE_SETS.get(run.dataset, {None: ()})))


def _paired(better, worse):
    """Runs of the two arms matched by seed (the seeds both have)."""
    a, b = {r.seed: r for r in better}, {r.seed: r for r in worse}
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two arms share no seed")
    return [a[s] for s in common], [b[s] for s in common]


def _healths(*arms):
    return [r.health for runs in arms for r in runs if r.health is not None]


def outcome_diagnosis(v: dict, runs, unit: str = "") -> str:
    """Why the verdict came out as it did, from the numbers (the health failures are added by
    ``results.claim``)."""
    n = v["n"]
    if n < 2:
        return "one seed: no estimate of the seed noise"
    checked = "runs healthy (ID accuracy, energy spread, phi's separation, loss)" if all(
        r.health is not None and r.health.ok for r in runs) else ""
    if v["verdict"] == "tie within noise":
        return f"difference {v['delta']:+.3f}{unit} within the seed noise ±{v['noise']:.3f} ({n} seeds)" + (
            f"; {checked}" if checked else "")
    if v["verdict"] == "disagrees":
        return f"the analogue shows the opposite ({v['delta']:+.3f}{unit}, {n} seeds)" + (f"; {checked}" if checked else "")
    return f"effect {v['delta']:+.3f}{unit} clears the seed noise ±{v['noise']:.3f} ({n} seeds)"


def ceiling_note(worse_runs, dataset: str = "average") -> str:
    """"far-OOD at ceiling" etc. when the baseline leaves no room to improve."""
    base = float(np.mean([run_metric(r, "auroc", dataset) for r in worse_runs]))
    return f"{dataset} AUROC of the baseline at ceiling ({base:.3f})" if base > CEILING else ""


def compare_runs(better, worse, cfg, claim: str, *, metric: str = "auroc", dataset: str = "average",
                 role: str = "primary", paper_value=None, note: str = "", arch: str | None = None) -> dict:
    """"``better`` beats ``worse``" on ``metric`` of ``dataset``, paired over seeds (95% t interval)."""
    better, worse = _paired(better, worse)
    higher = metric != "fpr95"
    v = results.seed_verdict([run_metric(r, metric, dataset) for r in better],
                             [run_metric(r, metric, dataset) for r in worse], higher_is_better=higher)
    d, lo, hi = _in_metric_direction(v, higher)
    diagnosis = "; ".join(x for x in (outcome_diagnosis(v, better + worse),
                                      ceiling_note(worse, dataset) if metric == "auroc" else "") if x)
    what = "mean of the per-set AUROCs" if dataset == "average" and metric == "auroc" else f"{dataset} {metric}"
    return results.claim(PAPER, claim, ours=d, ours_lo=lo, ours_hi=hi, verdict=v["verdict"], cfg=cfg,
                         paper_value=paper_value, unit=f"{what} difference (fraction), {v['n']} paired seeds",
                         note=note, setting=results.setting_label(cfg, id_dataset=better[0].dataset, arch=arch),
                         role=role, diagnosis=diagnosis, health=_healths(better, worse))


def _in_metric_direction(v: dict, higher: bool):
    """(better - worse, lo, hi) in the metric's own direction (an FPR95 gain is negative)."""
    sign = 1 if higher else -1
    d = v["delta"] * sign
    if not np.isfinite(v["noise"]):
        return d, None, None
    return d, min(d - v["noise"], d + v["noise"]), max(d - v["noise"], d + v["noise"])


def no_harm_claim(method_runs, base_runs, cfg, claim: str, *, tolerance: float = NO_HARM_TOLERANCE,
                  paper_value=None, arch: str | None = None) -> dict:
    """"``method`` keeps the ID accuracy of ``base``": agrees when the whole 95% interval of the paired
    accuracy difference lies above ``-tolerance``, disagrees when it lies below, a tie otherwise."""
    method_runs, base_runs = _paired(method_runs, base_runs)
    v = results.seed_verdict([r.id_accuracy for r in method_runs], [r.id_accuracy for r in base_runs])
    if not np.isfinite(v["noise"]):
        verdict = "undetermined"
    else:
        verdict = results.interval_verdict(v["lo"] + tolerance, v["hi"] + tolerance)
    diagnosis = (f"accuracy change {v['delta']:+.3f}, interval {v['lo']:+.3f} to {v['hi']:+.3f}, "
                 f"against a tolerance of -{tolerance:g}" if np.isfinite(v["noise"]) else "one seed")
    return results.claim(PAPER, claim, ours=v["delta"], ours_lo=v["lo"] if np.isfinite(v["noise"]) else None,
                         ours_hi=v["hi"] if np.isfinite(v["noise"]) else None, verdict=verdict, cfg=cfg,
                         paper_value=paper_value, kind="no harm", diagnosis=diagnosis,
                         unit=f"ID accuracy difference (fraction), {v['n']} paired seeds; no harm = above -{tolerance:g}",
                         setting=results.setting_label(cfg, id_dataset=method_runs[0].dataset, arch=arch),
                         health=_healths(method_runs, base_runs))


def sweep_claims(runs, cfg, key: str, paper_value, *, arch: str | None = None) -> list[dict]:
    """Figs. 5-6, declared before the run: "``key`` = the paper's value detects OOD better than ``key`` =
    v", one claim per other value v tried, paired over seeds (mean of the per-set AUROCs)."""
    by_value: dict = {}
    for r in runs:
        by_value.setdefault(r.params["value"], []).append(r)
    if paper_value not in by_value:
        raise ValueError(f"the sweep over {key} has no run at the paper's value {paper_value}: {sorted(by_value)}")
    return [compare_runs(by_value[paper_value], by_value[v], cfg,
                         f"{key} = {paper_value:g} detects OOD better than {key} = {v:g}",
                         paper_value=f"best at {paper_value:g} (Figs. 5-6)", arch=arch)
            for v in sorted(by_value) if v != paper_value]


def largest_gain_claim(runs, cfg, target: str, arch: str | None = None) -> dict:
    """A question of this kit, shown as supporting: is BOOD's AUROC gain over Energy largest on ``target``
    (mini: unseen_digits, the pure semantic shift)? The gain on ``target`` against the largest gain on any
    other set, paired over seeds."""
    bood, energy = _paired([r for r in runs if r.method == "BOOD"], [r for r in runs if r.method == "Energy"])
    sets = [k for k in bood[0].scores if k != "id"]
    if target not in sets:
        raise ValueError(f"{target!r} was not evaluated on {bood[0].dataset}; sets: {sets}")
    gain = {s: np.array([run_metric(b, "auroc", s) - run_metric(e, "auroc", s) for b, e in zip(bood, energy)])
            for s in sets}
    others = np.max(np.stack([gain[s] for s in sets if s != target]), axis=0)
    v = results.seed_verdict(gain[target], others)
    d, lo, hi = _in_metric_direction(v, True)
    return results.claim(PAPER, f"BOOD's AUROC gain over Energy is largest on {target}", ours=d, ours_lo=lo,
                         ours_hi=hi, verdict=v["verdict"], cfg=cfg, kind="property", role="supporting",
                         paper_value="question of this kit (near-OOD, Table 7 analogue)",
                         diagnosis=outcome_diagnosis(v, bood + energy),
                         unit=f"gain on {target} minus the largest other gain, {v['n']} seeds",
                         setting=results.setting_label(cfg, id_dataset=bood[0].dataset, arch=arch),
                         health=_healths(bood, energy))


def health_table(runs) -> pd.DataFrame:
    """One row per run: its health checks side by side (values) and whether it passed."""
    rows = []
    for r in runs:
        if r.health is None:
            continue
        row = {"run": r.health.run, "healthy": r.health.ok}
        row |= {c.name: c.value for c in r.health.checks}
        row["failed because"] = r.health.reason
        rows.append(row)
    return pd.DataFrame(rows)


def paper_number(table, method: str, dataset: str, metric: str):
    """The published value (percent) or None."""
    t = results.paper_table(PAPER, table)
    hit = t[(t["method"] == method) & (t["dataset"] == dataset) & (t["metric"] == metric)]
    return None if hit.empty else float(hit["value"].iloc[0])
