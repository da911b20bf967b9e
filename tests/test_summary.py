"""The results summary (notebook 90): labels say what ran, analogues are explicit, counts and rho are right."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from ood_utils import results, summary


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_KIT_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def _mme_records(values):
    """Records of MME Table 1 (average AUROC) for the given {method: fraction}, two seeds."""
    return [results.record("mme", 1, method, "average", "auroc", v + 0.001 * seed, setting="mnist5k/mnist_cnn",
                           seed=seed, profile="mini") for method, v in values.items() for seed in (0, 1)] + [
        results.record("mme", 1, "MSP", "textures", "auroc", 0.99, setting="mnist5k/mnist_cnn", seed=0, profile="mini")]


def test_empty_profile_gives_empty_tables(runs):
    assert summary.verdict_counts(results.claims("mini")).to_numpy().sum() == 0
    assert "no claim tested yet" in summary.narrative(summary.verdict_counts(results.claims("mini")))
    assert summary.rank_agreement("mini").empty
    published, ours = summary.side_by_side("mini", "mme", 1)
    assert ours.empty and not published.empty
    status = summary.run_status("mini")
    assert (status["records"] == 0).all() and "90_results_summary" in set(status["notebook"])


def test_rows_are_labelled_with_the_setting_that_ran_and_sets_as_analogues(runs):
    results.save(_mme_records({"MSP": 0.90, "MLS": 0.91, "ViM": 0.95}), "21_mme_ensemble", "mini")
    published, ours = summary.side_by_side("mini", "mme", 1, "auroc")
    assert set(ours.index.get_level_values("setting")) == {"mini · MNIST-5k · mnist_cnn"}
    assert set(published.index.get_level_values("setting")) == {"CIFAR-10/DenseNet-100", "CIFAR-100/DenseNet-100"}
    assert set(published.index.get_level_values("method")) == {"MSP", "MLS", "ViM"}  # only what was reproduced
    columns = set(ours.columns.get_level_values("dataset"))
    assert "textures (analogue of Textures (DTD))" in columns
    assert "average (average of the run's OOD sets)" in columns
    assert ours.loc[("mini · MNIST-5k · mnist_cnn", "ViM")].dropna().iloc[0] == pytest.approx(95.05)  # percent, mean
    status = summary.run_status("mini").set_index("notebook")
    assert status.loc["21_mme_ensemble", "records"] == 7
    assert status.loc["21_mme_ensemble", "settings"] == "mini · MNIST-5k · mnist_cnn"


def test_rank_agreement_follows_the_order_of_methods(runs):
    # published CIFAR-10 / DenseNet-100 averages: MSP 92.17 < MLS 93.48 < ViM 96.58
    results.save(_mme_records({"MSP": 0.90, "MLS": 0.91, "ViM": 0.95}), "21_mme_ensemble", "mini")
    ranks = summary.rank_agreement("mini")
    assert len(ranks) == 1  # textures has one method only; covariance-like metrics are left out
    row = ranks.iloc[0]
    assert (row["rho"], row["methods"], row["paper setting"]) == (pytest.approx(1.0), 3, "CIFAR-10/DenseNet-100")
    results.save(_mme_records({"MSP": 0.95, "MLS": 0.91, "ViM": 0.90}), "21_mme_ensemble", "mini")
    assert summary.rank_agreement("mini").iloc[0]["rho"] == pytest.approx(-1.0)


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 30).astype(float), rng.normal(size=30)
    assert summary.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)


def test_verdict_counts_narrative_and_claim_display(runs):
    cfg_rows = [results.claim("greg", "GReg lowers FPR95", ours=3.0, ours_lo=1.0, ours_hi=5.0, verdict="agrees",
                              setting="mini · MNIST-5k · mnist_cnn", profile="mini", unit="pp", paper_value="3.9"),
                results.claim("greg", "GReg keeps accuracy", ours=-0.1, verdict="tie within noise",
                              setting="mini · MNIST-5k · mnist_cnn", profile="mini"),
                results.claim("mme", "MME is best", ours=-2.0, verdict="disagrees",
                              setting="mini · MNIST-5k · mnist_cnn", profile="mini")]
    results.save_claims(cfg_rows[:2], "11_greg_finetune", "mini")
    results.save_claims(cfg_rows[2:], "21_mme_ensemble", "mini")
    claims = results.claims("mini")
    counts = summary.verdict_counts(claims)
    assert counts.loc["GReg (ECCV 2024)"].to_dict() == {"agrees": 1, "tie within noise": 1, "disagrees": 0,
                                                        "undetermined": 0}
    text = summary.narrative(counts)
    assert "**GReg (ECCV 2024)**: 2 claims tested: 1 agrees, 1 tie within noise." in text
    assert "**BOOD (ICML 2025)**: no claim tested yet" in text
    shown = summary.claims_display(claims)
    assert shown.loc[0, "ours [95% interval]"] == "3 [1, 5] pp"
    assert shown.loc[1, "ours [95% interval]"] == "-0.1"
    assert list(shown["notebook"]) == ["11_greg_finetune", "11_greg_finetune", "21_mme_ensemble"]


def test_every_analogue_names_a_set_of_the_embedded_benchmark():
    from ood_utils.data import embedded

    assert set(summary.ANALOGUES) == set(embedded.SETS)
    table = summary.analogue_table()
    assert table["what it is"].str.len().min() > 0


def test_status_says_whether_a_finished_run_is_still_current(runs, fixtures_dir):
    from ood_utils import paths, run

    out = paths.runs_dir("mini")
    paths.write_json(out / run.MANIFEST, {"notebooks": {"00_hello": {"status": "ok", "seconds": 1.5},
                                                        "05_fails": {"status": "failed", "seconds": 0.2}}})
    status = summary.run_status("mini", notebooks_dir=fixtures_dir).set_index("notebook")
    assert status.loc["00_hello", "still current?"] == "executed copy missing"
    (out / "00_hello.ipynb").write_text("{}")
    status = summary.run_status("mini", notebooks_dir=fixtures_dir).set_index("notebook")
    assert status.loc["00_hello", "still current?"].startswith("source changed")  # no inputs recorded
    assert status.loc["05_fails", "last run"] == "failed" and status.loc["05_fails", "still current?"] == ""
    assert status.loc["10_steps", "last run"] == "not run (by the runner)"
