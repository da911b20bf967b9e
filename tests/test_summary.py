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
    assert row["over"] == "average of OOD sets"
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


def test_rank_agreement_says_when_a_row_is_the_id_test_set(runs):
    # GReg Table 6 prints ID accuracy: its rows compare methods on the ID test set, not on an OOD set
    accs = {"Clean": 0.99, "Energy Loss": 0.96, "GReg": 0.97, "DOS": 0.90}
    recs = [results.record("greg", 6, m, "mnist5k", "id_accuracy", a, setting="mnist5k/mnist_cnn", seed=0,
                           profile="mini") for m, a in accs.items()]
    results.save(recs, "11_greg_finetune", "mini")
    ranks = summary.rank_agreement("mini")
    assert list(ranks["over"]) == ["ID test set"] and ranks["methods"].iloc[0] == 4


def _claims(rows):
    for notebook, part in rows.items():
        results.save_claims(part, notebook, "mini")
    return results.claims("mini")


S = "mini · MNIST-5k · mnist_cnn"


def test_outcome_counts_count_primary_rows_and_kinds_apart(runs):
    claims = _claims({
        "11_greg_finetune": [
            results.claim("greg", "GReg beats Energy (near AUROC)", ours=0.02, ours_lo=0.01, ours_hi=0.03,
                          verdict="agrees", setting=S),
            results.claim("greg", "GReg beats Energy (FPR95)", ours=0.02, ours_lo=0.01, ours_hi=0.03,
                          verdict="agrees", setting=S, role="supporting"),
            results.claim("greg", "GReg keeps ID accuracy", ours=-0.001, ours_lo=-0.01, ours_hi=0.01,
                          verdict="tie within noise", setting=S, kind="no harm"),
            results.claim("greg", "GReg+ beats GReg", ours=-0.02, ours_lo=-0.03, ours_hi=-0.01,
                          verdict="disagrees", setting=S, diagnosis="aux inactive: 5% inside margins")],
        "21_mme_ensemble": [
            results.claim("mme", "MME beats all (far AUROC)", ours=0.0, ours_lo=-0.001, ours_hi=0.001,
                          verdict="tie within noise", setting=S, diagnosis="untestable here: far-OOD at ceiling"),
            results.claim("mme", "Cov_in >= Cov_out", ours=1.0, verdict="agrees", setting=S, kind="property")],
        "32_bood_regularization": [
            results.claim("bood", "BOOD beats Energy", ours=0.1, verdict="agrees", setting=S,
                          health=_failed())]})
    counts = summary.outcome_counts(claims)
    greg = counts.loc["GReg (ECCV 2024)"]
    assert greg.loc["improvement", "reproduced"] == 1                       # the FPR95 row is not counted again
    assert greg.loc["improvement", "not reproduced: opposite effect"] == 1
    assert greg.loc["no harm", "reproduced"] == 1                            # a tie is no harm detected
    mme = counts.loc["MME (BMVC 2025)"]
    assert mme.loc["improvement", "untestable here"] == 1 and mme.loc["property", "reproduced"] == 1
    assert counts.loc[("BOOD (ICML 2025)", "improvement"), "undetermined: training failed"] == 1
    assert int(counts.to_numpy().sum()) == len(summary.primary(claims)) == 6

    text = summary.narrative(claims)
    assert "**GReg (ECCV 2024)**: 3 claims counted (2 improvements, 1 no-harm claim), 1 supporting row" in text
    assert "1 the opposite way (aux inactive: 5% inside margins)" in text
    assert "1 claim untestable here (untestable here)" in text
    assert "1 claim on a failed training (training failed)" in text

    listed = summary.claims_by_outcome(claims)
    assert len(listed) == len(claims)                                        # every row is listed
    assert list(listed["paper"].drop_duplicates()) == ["GReg (ECCV 2024)", "MME (BMVC 2025)", "BOOD (ICML 2025)"]
    greg_rows = listed[listed["paper"] == "GReg (ECCV 2024)"]
    assert list(greg_rows["role"]) == ["primary"] * 3 + ["supporting"]
    assert list(greg_rows["outcome"][:3]) == ["reproduced", "reproduced", "not reproduced: opposite effect"]
    assert greg_rows["diagnosis"].iloc[2] == "aux inactive: 5% inside margins"


def _failed():
    from ood_utils import health
    return health.assess("beta=2.5 seed 0", [health.accuracy_check(0.65, 0.98)])
