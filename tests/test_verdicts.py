"""The verdict statistics beyond one comparison: claims about every member of a set, pre-declared sweeps,
the papers' average over OOD sets (per seed, and over test images), and what a claim comes to."""
from __future__ import annotations

import numpy as np
import pytest

from ood_utils import metrics, results, verdicts


@pytest.mark.parametrize("members, expected", [
    (["agrees", "agrees"], "agrees"), (["agrees", "tie within noise"], "tie within noise"),
    (["agrees", "disagrees", "undetermined"], "disagrees"), (["agrees", "undetermined"], "undetermined"),
    ([], "undetermined"),
])
def test_all_verdict(members, expected):
    assert verdicts.all_verdict(members) == expected


def test_all_verdict_rejects_unknown_words():
    with pytest.raises(ValueError, match="unknown verdict"):
        verdicts.all_verdict(["agrees", "maybe"])


# ------------------------------------------------------------------------------------------- sweeps

SEEDS = 5


def _sweep(means: dict, common_sd: float = 0.0, own_sd: float = 0.002, seed: int = 0) -> dict:
    """value -> AUROC over 5 seeds; ``common_sd``: a seed effect shared by every value (paired seeds)."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, common_sd, SEEDS)
    return {v: m + shared + rng.normal(0, own_sd, SEEDS) for v, m in means.items()}


def test_sweep_agrees_only_when_the_papers_value_beats_every_other():
    best = verdicts.sweep_verdict(_sweep({0.5: 0.80, 1.0: 0.90, 2.0: 0.85}), 1.0)
    assert best["verdict"] == "agrees" and best["closest"] == 2.0
    assert best["delta"] == pytest.approx(0.05, abs=0.005)
    assert list(best["comparisons"]["value"]) == [0.5, 2.0] and (best["comparisons"]["n"] == SEEDS).all()
    beaten = verdicts.sweep_verdict(_sweep({0.5: 0.80, 1.0: 0.85, 2.0: 0.90}), 1.0)
    assert beaten["verdict"] == "disagrees" and beaten["closest"] == 2.0 and beaten["hi"] < 0
    flat = verdicts.sweep_verdict(_sweep({0.5: 0.85, 1.0: 0.85, 2.0: 0.85}), 1.0)
    assert flat["verdict"] == "tie within noise"


def test_sweep_comparisons_are_paired_over_seeds():
    # a seed effect of sd 0.05 shared by every value swamps a 0.01 gain unless seeds are paired
    runs = _sweep({1: 0.85, 2: 0.86}, common_sd=0.05, own_sd=0.001, seed=3)
    assert verdicts.sweep_verdict(runs, 2)["verdict"] == "agrees"
    unpaired = verdicts.seed_verdict(runs[2], runs[1][:-1])        # unequal counts: Welch, not paired
    assert unpaired["verdict"] == "tie within noise"


def test_sweep_level_is_bonferroni_over_the_comparisons():
    runs = _sweep({v: 0.8 for v in range(5)})
    v = verdicts.sweep_verdict(runs, 0)
    assert v["level"] == pytest.approx(1 - 0.05 / 4)
    # each comparison's interval is the seed_verdict interval at that level, wider than at 95%
    row = v["comparisons"].iloc[0]
    at_95 = verdicts.seed_verdict(runs[0], runs[row["value"]])
    assert row["hi"] - row["lo"] > at_95["hi"] - at_95["lo"]
    # a gain that clears the 95% interval of one comparison need not clear the family's
    diffs = np.array([0.010, 0.016, 0.004, 0.012, 0.008])
    base = np.full(SEEDS, 0.8)
    assert verdicts.seed_verdict(base + diffs, base)["verdict"] == "agrees"
    family = {0: base + diffs, 1: base, **{k: base - 0.2 for k in (2, 3, 4, 5, 6, 7, 8, 9)}}
    assert verdicts.sweep_verdict(family, 0)["comparisons"].set_index("value").loc[1, "verdict"] == \
        "tie within noise"


def test_sweep_lower_is_better_and_bad_input():
    fpr = _sweep({"a": 0.30, "b": 0.20})
    assert verdicts.sweep_verdict(fpr, "b", higher_is_better=False)["verdict"] == "agrees"
    with pytest.raises(ValueError, match="not among"):
        verdicts.sweep_verdict(fpr, "c")
    with pytest.raises(ValueError, match="at least one value"):
        verdicts.sweep_verdict({"a": [0.1, 0.2]}, "a")


def test_sweep_claim_one_primary_row_and_supporting_rows():
    rows = results.sweep_claim("bood", "alpha = 0.015 is the best step size", _sweep({0.01: 0.8, 0.015: 0.9,
                                                                                    0.02: 0.85}),
                               0.015, name="alpha", setting="mini · MNIST-6 · mnist_cnn", unit="AUROC",
                               diagnosis="ok")
    assert [r["role"] for r in rows] == ["primary", "supporting", "supporting"]
    assert rows[0]["verdict"] == "agrees" and "closest: alpha=0.02" in rows[0]["note"]
    assert rows[1]["claim"].endswith("alpha=0.015 vs alpha=0.01") and rows[1]["diagnosis"] == "ok"
    only = results.sweep_claim("bood", "x", _sweep({1: 0.8, 2: 0.9}), 2, setting="s", supporting=False)
    assert len(only) == 1


# ------------------------------------------------------------------------------------------- averages

def test_set_average_is_the_mean_of_per_set_metrics_not_a_pooled_auroc():
    rng = np.random.default_rng(0)
    s_id = rng.normal(0, 1, 500)
    # a small easy set and a large hard set: the pooled AUROC is mostly the large set's
    m1 = {"small": rng.normal(-4.0, 1, 50), "large": rng.normal(-0.3, 1, 5000)}
    m2 = {"small": rng.normal(-1.2, 1, 50), "large": rng.normal(-0.6, 1, 5000)}
    per_set = {name: {k: metrics.auroc(s_id, v) for k, v in m.items()} for name, m in (("m1", m1), ("m2", m2))}
    avg = {name: verdicts.set_average({k: [v] for k, v in d.items()})[0] for name, d in per_set.items()}
    assert avg["m1"] == pytest.approx(np.mean(list(per_set["m1"].values())))
    pooled = {"m1": verdicts.pooled_auroc(s_id, m1), "m2": verdicts.pooled_auroc(s_id, m2)}
    assert avg["m1"] > avg["m2"] and pooled["m1"] < pooled["m2"]      # the two orderings disagree
    assert pooled["m1"] == pytest.approx(metrics.auroc(s_id, np.concatenate(list(m1.values()))))


def test_average_verdict_over_seeds_is_paired_and_keeps_each_set():
    better = {"a": [0.90, 0.92, 0.91], "b": [0.70, 0.75, 0.72]}
    worse = {"a": [0.88, 0.90, 0.89], "b": [0.69, 0.73, 0.71]}
    v = verdicts.average_verdict(better, worse)
    same = verdicts.seed_verdict(verdicts.set_average(better), verdicts.set_average(worse))
    assert (v["delta"], v["lo"], v["hi"], v["verdict"]) == (same["delta"], same["lo"], same["hi"], same["verdict"])
    assert v["delta"] == pytest.approx((0.015 + 0.02 + 0.015) / 3)
    assert list(v["per_set"]["dataset"]) == ["a", "b"] and v["per_set"].loc[0, "verdict"] == "agrees"
    with pytest.raises(ValueError, match="one value per seed"):
        verdicts.set_average({"a": [0.1, 0.2], "b": [0.3]})
    with pytest.raises(ValueError, match="missing"):
        verdicts.set_average({"a": [0.1]}, sets=["a", "b"])


def test_bootstrap_effect_of_the_mean_over_sets():
    rng = np.random.default_rng(1)
    base = {"id": rng.normal(0, 1, 400), "near": rng.normal(-0.5, 1, 300), "far": rng.normal(-1.0, 1, 300)}
    jitter = {k: rng.normal(0, 0.3, len(v)) for k, v in base.items()}
    worse = {k: v + jitter[k] for k, v in base.items()}                    # the same detector, noisier
    same = verdicts.bootstrap_effect(base, base, ["near", "far"], n_boot=100)
    assert same["delta"] == 0 and same["verdict"] == "tie within noise"
    e = verdicts.bootstrap_effect(base, worse, ["near", "far"], n_boot=300)
    assert e["verdict"] == "agrees" and e["lo"] <= e["delta"] <= e["hi"]
    assert e["delta"] == pytest.approx(np.mean([metrics.auroc(base["id"], base[s]) - metrics.auroc(worse["id"], worse[s])
                                                for s in ("near", "far")]))
    # the interval of the mean is no wider than the mean of the per-set paired intervals
    widths = [np.subtract(*metrics.paired_bootstrap_ci(base["id"], base[s], worse["id"], worse[s], n_boot=300)[::-1])
              for s in ("near", "far")]
    assert e["hi"] - e["lo"] <= np.mean(widths)
    fpr = verdicts.bootstrap_effect(base, worse, ["near"], metric="fpr95", n_boot=100)
    assert fpr["per_set"]["near"] == pytest.approx(metrics.fpr_at_tpr(worse["id"], worse["near"])
                                                   - metrics.fpr_at_tpr(base["id"], base["near"]))


def test_bootstrap_effect_needs_the_same_images():
    a = {"id": np.zeros(10), "x": np.ones(5)}
    with pytest.raises(ValueError, match="same images"):
        verdicts.bootstrap_effect(a, {"id": np.zeros(10), "x": np.ones(6)}, ["x"])
    with pytest.raises(ValueError, match="no scores"):
        verdicts.bootstrap_effect(a, a, ["y"])


# ------------------------------------------------------------------------------------------- outcomes

@pytest.mark.parametrize("verdict, kind, diagnosis, expected", [
    ("agrees", "improvement", "", "reproduced"),
    ("tie within noise", "improvement", "", "not reproduced: tie within noise"),
    ("disagrees", "property", "", "not reproduced: opposite effect"),
    ("tie within noise", "no harm", "", "reproduced"),
    ("disagrees", "no harm", "", "not reproduced: opposite effect"),
    ("undetermined", "improvement", "training failed: run 0: ID accuracy 0.6", "undetermined: training failed"),
    ("tie within noise", "improvement", "untestable here: far-OOD at ceiling", "untestable here"),
    ("undetermined", "improvement", "", "untestable here"),
])
def test_outcome(verdict, kind, diagnosis, expected):
    assert results.outcome(verdict, kind, diagnosis) == expected


def test_claims_table_carries_the_outcome(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_KIT_RUNS", str(tmp_path))
    rows = [results.claim("mme", "MME keeps ID accuracy", ours=0.0, ours_lo=-0.01, ours_hi=0.01,
                          verdict="tie within noise", kind="no harm", setting="s"),
            results.claim("mme", "MME beats Energy", ours=0.0, ours_lo=-0.01, ours_hi=0.01,
                          verdict="tie within noise", setting="s")]
    results.save_claims(rows, "21_mme_ensemble", "mini")
    assert list(results.claims("mini")["outcome"]) == ["reproduced", "not reproduced: tie within noise"]
    assert set(results.OUTCOME_COLORS) == set(results.OUTCOMES)
    assert set(results.VERDICT_COLORS) == set(results.VERDICTS)


def test_bootstrap_family_is_bonferroni_and_refuted_by_one_better_detector():
    rng = np.random.default_rng(2)
    n = 500
    ref = {"id": rng.normal(1.0, 1, n), "a": rng.normal(0, 1, n), "b": rng.normal(0, 1, n)}

    def noisier(sd, seed):
        r = np.random.default_rng(seed)
        return {k: v + r.normal(0, sd, n) for k, v in ref.items()}

    fam = verdicts.bootstrap_family(ref, {"x": noisier(1.0, 3), "y": noisier(0.8, 4)}, ["a", "b"], n_boot=200)
    assert fam["verdict"] == "agrees" and fam["level"] == pytest.approx(0.975)
    assert fam["closest"] == "y" and list(fam["comparisons"]["name"]) == ["x", "y"]
    # the closest comparison's interval is the single comparison's at the Bonferroni level
    alone = verdicts.bootstrap_effect(ref, noisier(0.8, 4), ["a", "b"], n_boot=200, level=0.975)
    assert (fam["delta"], fam["lo"], fam["hi"]) == pytest.approx((alone["delta"], alone["lo"], alone["hi"]))
    better = {k: v.copy() for k, v in ref.items()}
    better["a"] = better["a"] - 1.0                                    # a detector that separates set a better
    refuted = verdicts.bootstrap_family(ref, {"x": noisier(1.0, 3), "better": better}, ["a", "b"], n_boot=200)
    assert refuted["verdict"] == "disagrees" and refuted["closest"] == "better"
