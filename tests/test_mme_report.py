"""The MME verdicts and claim rows on constructed numbers: every outcome of every verdict helper, and the
claim builders on the synthetic benchmark of test_mme.py."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ood_utils import mme, profiles, results
from test_mme import synthetic_bench  # the same small benchmark (pytest puts tests/ on sys.path)


@pytest.fixture(scope="module")
def bench():
    return synthetic_bench()


@pytest.fixture(scope="module")
def cfg():
    return profiles.resolve("mini", track="mme", seed_now=False)


def test_all_verdict_every_outcome():
    assert mme.all_verdict(["agrees", "agrees"]) == "agrees"
    assert mme.all_verdict(["agrees", "tie within noise"]) == "tie within noise"
    assert mme.all_verdict(["agrees", "tie within noise", "disagrees"]) == "disagrees"
    assert mme.all_verdict([]) == "undetermined"


def test_binomial_noise_is_two_standard_errors():
    assert mme.binomial_noise(0.5, 100, 0.5, 100) == pytest.approx(2 * np.sqrt(0.005))
    assert mme.binomial_noise(1.0, 10, 0.0, 10) == 0.0
    with pytest.raises(ValueError, match="at least one"):
        mme.binomial_noise(0.5, 0, 0.5, 10)


def _scores(shift_a: float, shift_b: float, n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    base_id, base_ood = rng.normal(size=n), rng.normal(size=n)
    a = {"id": base_id + shift_a, "s": base_ood}
    b = {"id": base_id + shift_b, "s": base_ood + 0.01 * rng.normal(size=n)}
    return a, b


@pytest.mark.parametrize("shift_a, shift_b, expected", [(2.0, 0.5, "agrees"), (1.0, 1.0, "tie within noise"),
                                                        (0.5, 2.0, "disagrees")])
def test_paired_effect_every_outcome(shift_a, shift_b, expected):
    a, b = _scores(shift_a, shift_b)
    for metric in ("auroc", "fpr95"):
        e = mme.paired_effect(a, b, ["s"], metric, n_boot=100)
        assert e["lo"] <= e["hi"] and e["verdict"] == expected, (metric, e)
        assert (e["delta"] > 0) == (expected == "agrees") or expected == "tie within noise"


def test_claim_sets_lead_with_near_ood(bench):
    assert mme.claim_sets(bench) == ("near", ["near_set"])
    assert mme.claim_sets(bench, "far") == ("far", ["far_set"])
    far_only = mme.Benchmark(train=bench.train, test=bench.test, ood={"far_set": bench.ood["far_set"]},
                             groups={"far_set": "far"}, W=bench.W, b=bench.b)
    assert mme.claim_sets(far_only) == ("average", ["far_set"])
    with pytest.raises(ValueError, match="valid"):
        mme.claim_sets(bench, "middle")


def test_consistency_claims_on_constructed_ratios(cfg):
    ratios = pd.DataFrame([{"dataset": "toy", "group": "ID", "n": 1000, "co_scale": 0.9},
                           {"dataset": "a", "group": "near", "n": 1000, "co_scale": 0.5},
                           {"dataset": "b", "group": "near", "n": 1000, "co_scale": 0.89},
                           {"dataset": "c", "group": "far", "n": 1000, "co_scale": 0.99}])
    every, near, far = mme.consistency_claims(ratios, cfg)
    assert [r["role"] for r in (every, near, far)] == ["primary", "supporting", "supporting"]
    assert every["verdict"] == "disagrees" and every["ours"] == pytest.approx(-0.09) and every["kind"] == "property"
    assert "c disagrees (ratio 0.990 vs ID 0.900" in every["diagnosis"]
    assert near["verdict"] == "tie within noise" and near["ours"] == pytest.approx(0.01)
    assert "smallest gap on b" in near["note"]
    assert far["verdict"] == "disagrees" and far["ours"] == pytest.approx(-0.09)
    assert near["setting"] == results.setting_label(cfg)


def test_consistency_claim_sets_noise_apart_as_a_sanity_check(cfg):
    ratios = pd.DataFrame([{"dataset": "mnist5k", "group": "ID", "n": 1000, "co_scale": 0.9},
                           {"dataset": "animal_mnist", "group": "near", "n": 1000, "co_scale": 0.5},
                           {"dataset": "textures", "group": "far", "n": 1000, "co_scale": 0.6},
                           {"dataset": "uniform_noise", "group": "far", "n": 1000, "co_scale": 1.0}])
    rows = mme.consistency_claims(ratios, cfg)
    assert rows[0]["verdict"] == "agrees" and "with a counterpart in the paper" in rows[0]["claim"]
    noise = rows[-1]
    assert noise["role"] == "supporting" and noise["verdict"] == "disagrees"
    assert noise["diagnosis"].startswith("no counterpart in the paper")


def test_covariance_claims_on_constructed_rows(cfg):
    rows = []
    for (a, b), (lo, hi) in {("x", "y"): (0.1, 0.3), ("x", "z"): (-0.2, 0.4), ("y", "z"): (-0.5, -0.1)}.items():
        rows.append({"score_a": a, "score_b": b, "dataset": "n", "group": "near", "cov_id": 1.0, "cov_ood": 0.8,
                     "gap_lo": lo, "gap_hi": hi})
    claim, near = mme.covariance_claims(pd.DataFrame(rows), cfg)
    assert (claim["role"], near["role"]) == ("primary", "supporting") and "averaged over" in claim["claim"]
    assert claim["verdict"] == "disagrees" and claim["ours"] == pytest.approx(1 / 3)
    assert "y·z" in claim["diagnosis"]
    rows[2].update(gap_lo=0.1, gap_hi=0.2)
    rows[1].update(gap_lo=0.1, gap_hi=0.2)
    assert mme.covariance_claims(pd.DataFrame(rows), cfg)[0]["verdict"] == "agrees"


def test_claim_builders_give_rows_that_save(bench, cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_KIT_RUNS", str(tmp_path))
    parts = mme.MMEParts(bench)
    grid = mme.truncation_grid(bench, scores=("energy", "mahalanobis", "vim"), truncations=(None, "react", "dice"),
                               fit_on=("raw", "truncated"), progress=False)
    values, logs = mme.mme_factor_values(parts), mme.mme_factor_values(parts, logs=True)
    check = mme.proposition1_check(values, bench.groups, logs)
    cov = mme.score_covariances(bench, scores=("mls", "energy"), n_boot=20, progress=False)
    premise = mme.truncation_premise(bench, (None, "react", "dice"))
    rows = (mme.consistency_claims(mme.consistency_ratios(bench), cfg) + mme.covariance_claims(cov, cfg)
            + mme.hypothesis1_claims(bench, grid, cfg, n_boot=20, premise=premise)
            + mme.proposition1_claims(bench, check, logs, cfg, n_boot=20))
    main = mme.evaluate_detectors(bench, names=("msp", "vim", "mme"), n_boot=20, progress=False)
    rows += mme.ensemble_claims(bench, main, mme.mme_ablation(bench, parts=parts),
                                mme.truncation_variants(bench, parts=parts),
                                mme.extra_scores(bench, parts=parts, extras=("gen",)),
                                mme.sensitivity(bench, parts=parts, lambdas=(1.0, 2.0), temperatures=(0.1, 1.0),
                                                progress=False), cfg, n_boot=20)
    assert all(r["verdict"] in results.VERDICTS for r in rows)
    claims = [r["claim"] for r in rows]
    for needle in ("Fig. 2", "Table 4", "Fig. 3 (raw", "Fig. 3 (truncated", "Mahalanobis gains nothing",
                   "Proposition 1", "near-OOD AUROC", "far-OOD FPR95", "Table 3: CO+", "Table 5", "Table 6", "Fig. 5"):
        assert any(needle in c for c in claims), needle
    for r in rows:
        if r["ours_lo"] is not None:
            assert r["ours_lo"] <= r["ours_hi"]
    path = results.save_claims(rows, "21_mme_ensemble", "mini")
    assert len(results.claims("mini")) == len(rows) and all(p.exists() for p in path)
    table = mme.claims_table(rows)
    assert list(table.columns[:2]) == ["claim", "ours (95% interval)"] and len(table) == len(rows)
    assert mme.verdict_counts(rows)
    # one primary row per claim of the paper; its other metrics and scopes support it
    best = [r for r in rows if "MME beats every other detector" in r["claim"]]
    assert [r["role"] for r in best].count("primary") == 1
    assert next(r for r in best if r["role"] == "primary")["claim"].endswith("(near-OOD AUROC)")
    h1 = [r for r in rows if "every scoring function" in r["claim"]]
    assert [r["role"] for r in h1] == ["primary", "supporting"] and "(raw-fitted" in h1[0]["claim"]
    assert {r["kind"] for r in rows} <= set(results.CLAIM_KINDS)


def test_proposition1_premises_have_one_definition(bench):
    parts = mme.MMEParts(bench)
    check = mme.proposition1_check(mme.mme_factor_values(parts), bench.groups)
    expected = check["finite"] & check["eq2"] & check["eout_ge1"] & check["assumption1"].eq(True)
    assert (check["premises"] == expected).all()
    assert not check.loc[check["n_factors"] == 5, "premises"].any()  # Assumption 1 is not checked for five
    fake = check.assign(holds=False, finite=True, premises=[True] + [False] * (len(check) - 1))
    assert mme.broken_premise_share(fake) == pytest.approx((len(check) - 1) / len(check))
    assert len(mme.proposition1_counterexamples(fake)) == 1


def test_factor_table_recombines_to_the_package_scores(bench):
    parts = mme.MMEParts(bench)
    table = mme.factor_table(parts, (0.1, 1.0))
    full = mme.recombine(table)
    assert np.allclose(full["near_set"], parts.scores()["near_set"])
    no_co = mme.recombine(table, keep=[k for k in mme.MME_FACTORS if k != "co"])
    assert np.allclose(no_co["id"], parts.scores(drop=("co",))["id"])
    tuned = mme.recombine(table, temperature=1.0, co_weight=3.0)
    assert np.allclose(tuned["far_set"], parts.retuned(temperature=1.0, co_weight=3.0).scores()["far_set"])


@pytest.mark.parametrize("ood_ratio, expected", [(0.5, "agrees"), (0.89, "tie within noise"), (0.99, "disagrees")])
def test_consistency_claim_every_outcome(cfg, ood_ratio, expected):
    ratios = pd.DataFrame([{"dataset": "toy", "group": "ID", "n": 1000, "co_scale": 0.9},
                           {"dataset": "a", "group": "near", "n": 1000, "co_scale": ood_ratio}])
    (claim,) = mme.consistency_claims(ratios, cfg)
    assert claim["verdict"] == expected and claim["ours_lo"] <= claim["ours"] <= claim["ours_hi"]


@pytest.mark.parametrize("bounds, expected", [((0.1, 0.2), "agrees"), ((-0.1, 0.2), "tie within noise"),
                                              ((-0.3, -0.1), "disagrees")])
def test_covariance_claim_every_outcome(cfg, bounds, expected):
    rows = pd.DataFrame([{"score_a": "x", "score_b": "y", "dataset": "n", "group": "far", "cov_id": 1.0,
                          "cov_ood": 0.9, "gap_lo": bounds[0], "gap_hi": bounds[1]}])
    claim, far = mme.covariance_claims(rows, cfg)
    assert claim["verdict"] == far["verdict"] == expected and "far-OOD" in far["claim"]


def test_mechanism_names_the_swap_and_the_factor_that_help_most():
    def rows(values):
        return pd.DataFrame([{"method": m, "dataset": "near", "auroc": v, "fpr95": 0.5} for m, v in values.items()])

    ablation = rows({"NME+": 0.8, "MME": 0.90, "MME w/o ViM": 0.85, "MME w/o PCA": 0.91})
    variants = rows({"Energy (Base)": 0.94, "ViM (SCALE)": 0.89, "MME": 0.90})
    text = mme.mechanism(ablation, variants, "near")
    assert text == ("near-OOD AUROC +0.040 with Energy (Base) in place of the published truncation (Table 5); "
                    "best leave-one-out: MME w/o PCA +0.010")
