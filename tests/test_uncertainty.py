"""Bootstrap intervals, per-set evaluation, verdicts and claims: the shared tools every track's verdicts use."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from ood_utils import metrics, results

CFG = SimpleNamespace(profile="mini", id_dataset="mnist6", arch="mnist_cnn")


def _gauss(n, mean, seed):
    return np.random.default_rng(seed).normal(mean, 1.0, n)


# ------------------------------------------------------------------------------------------- bootstrap

def test_bootstrap_interval_holds_the_estimate_and_shrinks_with_more_samples():
    small = metrics.bootstrap_ci(_gauss(100, 1, 0), _gauss(100, 0, 1), "auroc", n_boot=300)
    large = metrics.bootstrap_ci(_gauss(3000, 1, 0), _gauss(3000, 0, 1), "auroc", n_boot=300)
    assert small[0] < metrics.auroc(_gauss(100, 1, 0), _gauss(100, 0, 1)) < small[1]
    assert large[1] - large[0] < (small[1] - small[0]) / 3
    # the true AUROC of N(1,1) vs N(0,1) is Phi(1/sqrt 2) = 0.760
    assert large[0] < 0.760 < large[1]


def test_bootstrap_is_reproducible_and_checks_its_arguments():
    a, b = _gauss(200, 1, 0), _gauss(200, 0, 1)
    assert metrics.bootstrap_ci(a, b, "fpr95", seed=3) == metrics.bootstrap_ci(a, b, "fpr95", seed=3)
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.bootstrap_ci(a, b, "accuracy")
    with pytest.raises(ValueError, match="n_boot"):
        metrics.bootstrap_ci(a, b, n_boot=1)
    with pytest.raises(ValueError, match="level"):
        metrics.bootstrap_ci(a, b, level=1.0)


def test_paired_bootstrap_cancels_shared_noise():
    a_in, a_out = _gauss(300, 1, 0), _gauss(300, 0, 1)
    assert metrics.paired_bootstrap_ci(a_in, a_out, 2 * a_in, 2 * a_out) == (0.0, 0.0)  # same ranking
    lo, hi = metrics.paired_bootstrap_ci(a_in, a_out, a_in - 1.0 + 0 * a_in, a_out)     # b is clearly worse
    assert 0 < lo <= hi
    with pytest.raises(ValueError, match="same images"):
        metrics.paired_bootstrap_ci(a_in, a_out, a_in[:10], a_out)


# ------------------------------------------------------------------------------------------- evaluate_sets

def test_evaluate_sets_rows_and_summaries():
    scores = {"id": _gauss(300, 2, 0), "n1": _gauss(200, 1, 1), "n2": _gauss(200, 0.5, 2), "f": _gauss(200, -2, 3)}
    groups = {"n1": "near", "n2": "near", "f": "far"}
    rows = {r["dataset"]: r for r in metrics.evaluate_sets("m", scores, groups, n_boot=50, seed_run=1)}
    assert list(rows) == ["n1", "n2", "f", "average", "near", "far"]
    assert rows["n1"]["auroc"] == pytest.approx(metrics.auroc(scores["id"], scores["n1"]))
    assert rows["near"]["auroc"] == pytest.approx((rows["n1"]["auroc"] + rows["n2"]["auroc"]) / 2)
    assert rows["average"]["fpr95"] == pytest.approx(np.mean([rows[k]["fpr95"] for k in ("n1", "n2", "f")]))
    assert rows["average"]["group"] == "all" and rows["f"]["seed_run"] == 1
    assert all(r["auroc_lo"] <= r["auroc"] <= r["auroc_hi"] for r in rows.values())
    only = metrics.evaluate_sets("m", scores, groups, average_over=["f"], summaries=("average",))
    assert [r["dataset"] for r in only] == ["n1", "n2", "f", "average"]
    assert only[-1]["auroc"] == pytest.approx(rows["f"]["auroc"])
    far_only = metrics.evaluate_sets("m", scores, {"f": "far"})
    assert [r["dataset"] for r in far_only] == ["f", "average", "far"]      # no near sets: no near row


@pytest.mark.parametrize("scores, groups, match", [
    ({"a": [1.0]}, {"a": "near"}, "'id' entry"),
    ({"id": [1.0]}, {"a": "near"}, "no scores"),
    ({"id": [1.0], "a": [0.0]}, {"a": "middle"}, "near' or 'far"),
])
def test_evaluate_sets_rejects_bad_input(scores, groups, match):
    with pytest.raises(ValueError, match=match):
        metrics.evaluate_sets("m", scores, groups)


# ------------------------------------------------------------------------------------------- verdicts

@pytest.mark.parametrize("delta, noise, expected", [
    (0.05, 0.01, "agrees"), (-0.05, 0.01, "disagrees"), (0.005, 0.01, "tie within noise"),
    (-0.01, 0.01, "tie within noise"), (0.02, float("nan"), "undetermined"), (0.0, 0.0, "tie within noise"),
])
def test_verdict_every_outcome(delta, noise, expected):
    assert results.verdict(delta, noise) == expected


def test_verdict_rejects_nonsense():
    with pytest.raises(ValueError):
        results.verdict(float("inf"), 0.1)
    with pytest.raises(ValueError):
        results.verdict(0.1, -0.1)


@pytest.mark.parametrize("lo, hi, expected", [(0.01, 0.03, "agrees"), (-0.03, -0.01, "disagrees"),
                                              (-0.01, 0.03, "tie within noise")])
def test_interval_verdict(lo, hi, expected):
    assert results.interval_verdict(lo, hi) == expected


def test_seed_verdict_paired_unpaired_and_direction():
    v = results.seed_verdict([0.90, 0.91, 0.92], [0.80, 0.82, 0.81])
    assert v["verdict"] == "agrees" and v["delta"] == pytest.approx(0.1) and v["n"] == 3
    assert v["better"][0] == pytest.approx(0.91)
    # lower is better (FPR95): the paper's method has the lower values
    assert results.seed_verdict([0.2, 0.21], [0.3, 0.31], higher_is_better=False)["verdict"] == "agrees"
    assert results.seed_verdict([0.3, 0.31], [0.2, 0.21], higher_is_better=False)["verdict"] == "disagrees"
    noisy = results.seed_verdict([0.9, 0.7, 0.95], [0.8, 0.85, 0.75])
    assert noisy["verdict"] == "tie within noise"
    unpaired = results.seed_verdict([0.9, 0.92], [0.5, 0.52, 0.51])
    assert unpaired["verdict"] == "agrees" and math.isfinite(unpaired["noise"])
    assert results.seed_verdict([0.9], [0.8])["verdict"] == "undetermined"
    with pytest.raises(ValueError):
        results.seed_verdict([], [0.1])


# ------------------------------------------------------------------------------------------- claims

def test_setting_label_names_what_ran():
    assert results.setting_label(CFG) == "mini · MNIST-6 (digits 0-5) · mnist_cnn"
    assert results.setting_label(profile="paper", id_dataset="cifar10", arch="densenet100") \
        == "paper · CIFAR-10 · densenet100"
    with pytest.raises(ValueError):
        results.setting_label()


def test_claims_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_KIT_RUNS", str(tmp_path))
    assert results.claims("mini").empty
    rows = [results.claim("GReg", "GReg lowers the input-gradient norm", ours=0.3, ours_lo=0.1, ours_hi=0.5,
                          verdict="agrees", paper_value="lower (Fig. 3)", cfg=CFG),
            results.claim("bood", "BOOD improves FPR95", ours=-0.01, verdict="undetermined", cfg=CFG)]
    results.save_claims(rows, "10_greg_2d_toy.ipynb", "mini")
    table = results.claims("mini")
    assert list(table["notebook"]) == ["10_greg_2d_toy"] * 2
    assert table.loc[0, "paper"] == "greg" and table.loc[0, "ours_hi"] == pytest.approx(0.5)
    assert math.isnan(table.loc[1, "ours_lo"]) and table.loc[1, "paper_value"] == ""
    results.save_claims(rows[:1], "10_greg_2d_toy", "mini")          # a re-run replaces the notebook's claims
    assert len(results.claims("mini")) == 1
    with pytest.raises(ValueError, match="profile"):
        results.save_claims(rows, "10_greg_2d_toy", "quick")


@pytest.mark.parametrize("kwargs, match", [
    ({"verdict": "maybe"}, "verdict"), ({"ours": float("nan")}, "finite"), ({"ours_lo": 0.1}, "both"),
    ({"ours_lo": 0.5, "ours_hi": 0.1}, "both"), ({"paper": "nope"}, "unknown paper"),
])
def test_claim_rejects_bad_rows(kwargs, match):
    base = {"paper": "mme", "claim": "MME is best", "ours": 0.9, "verdict": "agrees", "cfg": CFG}
    with pytest.raises(ValueError, match=match):
        results.claim(**{**base, **kwargs})


@pytest.mark.parametrize("rounded", [False, True])
def test_the_all_at_once_bootstrap_equals_recomputing_each_resample(rounded):
    """bootstrap_ci evaluates every resample at once from counts; it must give exactly what sorting each
    resample and calling auroc / fpr_at_tpr gives, ties included."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=120) + 0.7, rng.normal(size=90)
    if rounded:                                          # ties inside and across the two sets
        a, b = np.round(a, 1), np.round(b, 1)
    draws = metrics._draws(a.size, b.size, 60, seed=5)
    fast = metrics._resampled_metrics(a, b, draws)
    slow_auroc = [metrics.auroc(a[i], b[o]) for i, o in draws]
    slow_fpr = [metrics.fpr_at_tpr(a[i], b[o]) for i, o in draws]
    assert np.allclose(fast["auroc"], slow_auroc, atol=1e-12)
    assert np.allclose(fast["fpr95"], slow_fpr, atol=1e-12)
    bounds = metrics.bootstrap_bounds(a, b, n_boot=60, seed=5)
    assert bounds["auroc"] == metrics.bootstrap_ci(a, b, "auroc", n_boot=60, seed=5)
    # aupr has no shortcut: it is recomputed per resample from the same draws
    lo, hi = metrics.bootstrap_ci(a, b, "aupr_in", n_boot=60, seed=5)
    assert lo <= metrics.aupr_in(a, b) <= hi


def test_seed_verdict_uses_the_t_quantile_not_two_standard_errors():
    # paired differences 0.02, 0.05, 0.08: mean 0.05, sd 0.03, n 3 -> half-width t(0.975, 2) * 0.03 / sqrt(3)
    v = results.seed_verdict([0.82, 0.85, 0.88], [0.80, 0.80, 0.80])
    assert v["noise"] == pytest.approx(4.302653 * 0.03 / math.sqrt(3), rel=1e-5)
    assert (v["lo"], v["hi"]) == pytest.approx((0.05 - v["noise"], 0.05 + v["noise"]))
    # two standard errors (0.035) would call this effect of 0.04 an agreement; the 95% t interval does not
    v = results.seed_verdict([0.81, 0.84, 0.87], [0.80, 0.80, 0.80])
    assert v["delta"] == pytest.approx(0.04) and 2 * 0.03 / math.sqrt(3) < 0.04 < v["noise"]
    assert v["verdict"] == "tie within noise"
    assert results.t_halfwidth(1.0, 1) != results.t_halfwidth(1.0, 1)  # NaN: one value has no interval
    assert results.t_halfwidth(1.0, 5) == pytest.approx(2.776445 / math.sqrt(5), rel=1e-5)


def test_claim_on_a_failed_run_is_undetermined_with_the_reason():
    from ood_utils import health
    bad = health.assess("beta=2.5 seed 0", [health.accuracy_check(0.653, 0.982)])
    good = health.assess("energy seed 0", [health.accuracy_check(0.98, 0.982)])
    row = results.claim("bood", "BOOD beats Energy", ours=0.1, verdict="agrees", setting="s",
                        health=[good, bad], diagnosis="near-OOD")
    assert row["verdict"] == "undetermined"
    assert row["diagnosis"].startswith("training failed: beta=2.5 seed 0: ID accuracy 0.653 vs base 0.982")
    assert row["diagnosis"].endswith("; near-OOD")
    kept = results.claim("bood", "BOOD beats Energy", ours=0.1, verdict="agrees", setting="s", health=good)
    assert kept["verdict"] == "agrees" and kept["diagnosis"] == ""
    assert (kept["kind"], kept["role"]) == ("improvement", "primary")
    with pytest.raises(ValueError, match="kind"):
        results.claim("bood", "x", ours=0.1, verdict="agrees", setting="s", kind="better")
    with pytest.raises(ValueError, match="role"):
        results.claim("bood", "x", ours=0.1, verdict="agrees", setting="s", role="main")
