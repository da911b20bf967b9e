"""GReg report (ood_utils.greg.report): verdicts for every outcome on constructed numbers, the paper's
differences read from the transcribed tables, records named like them, tables over seeds."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ood_utils import results
from ood_utils.greg import report as rp


class Cfg:
    profile = "mini"


def _rows(values: dict, id_dataset="mnist6", dataset="near", metric="auroc") -> pd.DataFrame:
    """Rows as experiments.run_methods makes them: {method: [value per seed]}."""
    out = []
    for method, vals in values.items():
        for seed, v in enumerate(vals):
            out.append({"method": method, "dataset": dataset, "group": "near", metric: v, "id_dataset": id_dataset,
                        "arch": "mnist_cnn", "seed": seed})
    return pd.DataFrame(out)


@pytest.mark.parametrize("grad, plain, expected", [
    ([0.90, 0.91, 0.92], [0.80, 0.82, 0.81], "agrees"),
    ([0.80, 0.86, 0.83], [0.83, 0.80, 0.86], "tie within noise"),
    ([0.70, 0.71, 0.72], [0.80, 0.82, 0.81], "disagrees"),
])
def test_grad_claim_verdicts_for_every_outcome(grad, plain, expected):
    claims = rp.grad_claims(_rows({"energy": plain, "greg": grad}), Cfg())
    assert len(claims) == 1 and claims[0]["verdict"] == expected
    c = claims[0]
    assert c["ours"] == pytest.approx(100 * (np.mean(grad) - np.mean(plain)))
    assert c["ours_lo"] < c["ours"] < c["ours_hi"]
    assert c["setting"] == "mini · MNIST-6 (digits 0-5) · mnist_cnn" and "CIFAR" not in c["setting"]


@pytest.mark.parametrize("grad, plain, expected", [
    ([0.10, 0.11, 0.12], [0.30, 0.32, 0.31], "agrees"),      # FPR95: lower is the paper's direction
    ([0.40, 0.41, 0.42], [0.30, 0.32, 0.31], "disagrees"),
])
def test_fpr95_claims_count_lower_as_better(grad, plain, expected):
    claims = rp.grad_claims(_rows({"energy": plain, "greg": grad}, metric="fpr95"), Cfg())
    assert [c["verdict"] for c in claims] == [expected]
    assert "Energy" in claims[0]["claim"]


def test_a_cell_where_the_paper_goes_the_other_way_is_tested_in_the_papers_direction():
    """Table 4 prints OE + Grad with a worse average FPR95 than OE on CIFAR-100: the claim follows the table."""
    assert rp.paper_difference("4", "oe_grad", "oe", "fpr95", "CIFAR-100/DenseNet-100") < 0   # mnist6 stands for it
    rows = _rows({"oe": [0.30, 0.32, 0.31], "oe_grad": [0.40, 0.41, 0.42]}, dataset="average", metric="fpr95")
    c = rp.grad_claims(rows, Cfg())[0]
    assert "shows the opposite" in c["claim"] and c["verdict"] == "agrees" and c["ours"] > 0
    assert c["paper_value"].startswith("+")


def test_one_seed_is_undetermined():
    claims = rp.grad_claims(_rows({"poem": [0.8], "poem_grad": [0.9]}), Cfg())
    assert claims[0]["verdict"] == "undetermined" and claims[0]["ours_lo"] is None


@pytest.mark.parametrize("acc_greg, acc_energy, expected", [
    ([0.99, 0.99, 0.99], [0.95, 0.951, 0.949], "agrees"),
    ([0.96, 0.95, 0.97], [0.95, 0.97, 0.96], "tie within noise"),
    ([0.90, 0.901, 0.899], [0.95, 0.951, 0.949], "disagrees"),
])
def test_accuracy_claims(acc_greg, acc_energy, expected):
    rows = _rows({"greg": acc_greg, "energy": acc_energy}, dataset="id", metric="id_accuracy")
    claims = rp.accuracy_claims(rows, Cfg())
    assert [c["verdict"] for c in claims] == [expected]
    assert "Table 6" in claims[0]["paper_value"]


def test_sampling_claims_compare_energy_clustering_with_each_sampler_and_greg_plus():
    values = {"random": [0.8, 0.81, 0.79], "poem": [0.8, 0.8, 0.8], "dos": [0.9, 0.91, 0.92],
              "energy_clustering": [0.85, 0.86, 0.87], "greg_plus": [0.86, 0.88, 0.87]}
    claims = rp.sampling_claims(_rows(values), Cfg())
    verdicts = {c["claim"]: c["verdict"] for c in claims}
    assert verdicts["Energy only clustering beats Random sampling (auroc, near)"] == "agrees"
    dos = [k for k in verdicts if k.startswith("Energy only clustering beats DOS (auroc, near)")]
    # Table 5 prints DOS with the higher average AUROC: the claim is tested in the table's direction
    assert len(dos) == 1 and "shows the opposite" in dos[0] and verdicts[dos[0]] == "agrees"
    assert "GReg+ beats Energy only clustering (auroc, near)" in verdicts
    assert rp.verdict_counts(claims)["agrees"] >= 2


def test_paper_differences_come_from_the_transcribed_tables():
    t4 = results.paper_table("greg", 4)
    cell = lambda m, metric: float(t4[(t4["setting"] == "CIFAR-10/DenseNet-100") & (t4["method"] == m)
                                      & (t4["metric"] == metric)]["value"].iloc[0])
    assert rp.paper_difference("4", "greg", "energy", "fpr95") == pytest.approx(
        round(cell("Energy", "fpr95") - cell("Energy + Grad", "fpr95"), 2))
    assert rp.paper_difference("4", "oe_grad", "oe", "auroc") == pytest.approx(
        round(cell("OE + Grad", "auroc") - cell("OE", "auroc"), 2))
    assert rp.paper_difference("5", "greg_plus", "energy_clustering", "fpr95") > 0
    assert rp.paper_difference("5", "energy_clustering", "random", "auroc") is None   # not in the paper
    assert rp.paper_difference("6", "greg", "energy", "id_accuracy") == pytest.approx(92.14 - 91.82, abs=0.01)


def test_records_use_the_tables_spelling_and_match_the_paper(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_KIT_RUNS", str(tmp_path))
    rows = pd.concat([
        _rows({"energy": [0.9, 0.91], "greg": [0.92, 0.93], "oe": [0.8, 0.8], "oe_grad": [0.85, 0.8]},
              id_dataset="mnist5k", dataset="average").assign(fpr95=0.2),
        _rows({"base": [0.98], "energy": [0.97, 0.97], "greg": [0.975, 0.97]}, id_dataset="mnist5k", dataset="id",
              metric="id_accuracy")], ignore_index=True)
    posthoc = _rows({"msp": [0.85], "energy_score": [0.88]}, id_dataset="mnist5k", dataset="average").assign(fpr95=0.3)
    recs = rp.finetune_records(rows, posthoc, Cfg())
    names = {(r.table, r.method) for r in recs}
    assert {("1", "Energy Loss"), ("1", "GReg"), ("1", "MSP"), ("1", "Energy Score"), ("4", "Energy + Grad"),
            ("4", "OE + Grad"), ("6", "Clean"), ("6", "GReg")} <= names
    assert all(r.setting == "mnist5k/mnist_cnn" and 0 <= r.value <= 1 for r in recs)
    results.save(recs, "11_greg_finetune", "mini")
    cmp = results.compare("mini")
    greg = cmp[(cmp["table"] == "1") & (cmp["method"] == "GReg") & (cmp["metric"] == "auroc")].iloc[0]
    assert greg["paper_value"] == 97.95 and greg["reproduced"] == pytest.approx(92.5) and greg["n_seeds"] == 2


def test_summarise_and_display_table():
    rows = _rows({"energy": [0.8, 0.9], "greg": [0.9, 0.9]})
    s = rp.summarise(rows)
    e = s[s["method"] == "energy"].iloc[0]
    assert e["auroc"] == pytest.approx(0.85) and e["auroc_std"] == pytest.approx(0.05) and e["n_seeds"] == 2
    table = rp.mean_pm_std(s, "auroc", ["near"])
    assert table.loc[("mnist6", "energy"), "near"] == "85.0 ± 5.0"


def test_a_claim_on_a_failed_run_is_undetermined_with_the_reason():
    from ood_utils import health

    rows = _rows({"energy": [0.80, 0.82, 0.81], "greg": [0.90, 0.91, 0.92]})
    ok = health.assess("energy", [health.accuracy_check(0.98, 0.98)]).to_json()
    bad = health.assess("greg seed 1", [health.accuracy_check(0.40, 0.98)]).to_json()
    id_rows = pd.DataFrame([{"method": m, "dataset": "id", "group": "id", "id_accuracy": 0.9, "id_dataset": "mnist6",
                             "arch": "mnist_cnn", "seed": s, "health": bad if (m, s) == ("greg", 1) else ok}
                            for m in ("energy", "greg") for s in range(3)])
    claims = rp.grad_claims(pd.concat([rows, id_rows], ignore_index=True), Cfg())
    assert claims[0]["verdict"] == "undetermined"
    assert claims[0]["diagnosis"].startswith("training failed: greg seed 1: ID accuracy 0.400")


def test_detection_claims_have_one_primary_metric_and_accuracy_is_no_harm():
    near = _rows({"energy": [0.8, 0.81, 0.82], "greg": [0.85, 0.86, 0.87]})
    near["fpr95"] = [0.3, 0.31, 0.32, 0.2, 0.21, 0.22]
    rows = pd.concat([near, _rows({"energy": [0.95, 0.95, 0.96], "greg": [0.95, 0.955, 0.96]}, dataset="id",
                            metric="id_accuracy")], ignore_index=True)
    claims = rp.grad_claims(rows, Cfg()) + rp.accuracy_claims(rows, Cfg())
    roles = [(c["unit"].split(" points")[0], c["role"], c["kind"]) for c in claims]
    assert roles == [("auroc", "primary", "improvement"), ("fpr95", "supporting", "improvement"),
                     ("id_accuracy", "primary", "no harm")]
    assert rp.verdict_counts(claims) == {"agrees": 2}


def test_diagnosis_names_a_ceiling_and_an_idle_pool():
    import json

    rows = _rows({"energy": [0.998, 0.999, 0.999], "greg": [0.999, 0.999, 0.998]})
    assert rp.grad_claims(rows, Cfg())[0]["diagnosis"].startswith("near at ceiling")
    rows = _rows({"energy": [0.8, 0.81, 0.82], "greg": [0.85, 0.86, 0.87]})
    shares = json.dumps([{"epoch": 1, "in_inside": 0.9, "aux_inside": 0.05, "mask_in": 0.1, "mask_aux": 0.95}])
    rows = pd.concat([rows, rows.assign(dataset="id", shares=shares)], ignore_index=True)
    assert rp.grad_claims(rows, Cfg())[0]["diagnosis"] == "aux inactive: 5% inside margins"


def test_a_diverged_run_with_nan_metrics_leaves_the_claim_undetermined():
    from ood_utils import health

    rows = _rows({"energy": [0.80, 0.82, 0.81], "greg": [0.90, float("nan"), 0.92]})
    bad = health.assess("greg seed 1", [health.Check("finite scores", 0.0, 1.0, False, "non-finite energy scores")])
    ok = health.assess("run", [health.accuracy_check(0.98, 0.98)])
    id_rows = pd.DataFrame([{"method": m, "dataset": "id", "group": "id", "id_accuracy": 0.9, "id_dataset": "mnist6",
                             "arch": "mnist_cnn", "seed": s, "health": (bad if (m, s) == ("greg", 1) else ok).to_json()}
                            for m in ("energy", "greg") for s in range(3)])
    c = rp.grad_claims(pd.concat([rows, id_rows], ignore_index=True), Cfg())[0]
    assert c["verdict"] == "undetermined" and "non-finite energy scores" in c["diagnosis"]
    assert "2 seeds" in c["note"]


def test_diagnosis_names_a_weak_gradient_term():
    import json

    rows = _rows({"energy": [0.8, 0.81, 0.82], "greg": [0.8, 0.81, 0.82]})
    shares = json.dumps([{"epoch": 1, "in_inside": 0.3, "aux_inside": 0.6, "mask_in": 0.7, "mask_aux": 0.4,
                          "grad_share": 0.012}])
    rows = pd.concat([rows, rows.assign(dataset="id", shares=shares)], ignore_index=True)
    assert rp.grad_claims(rows, Cfg())[0]["diagnosis"].startswith("gradient term weak: 1.2% of the loss")


def test_without_near_ood_sets_the_average_auroc_decides():
    # the CIFAR benchmarks of Tables 1-2 have no near-OOD set: every claim still gets exactly one primary row
    rows = _rows({"energy": [0.8, 0.81, 0.82], "greg": [0.85, 0.86, 0.87]}, dataset="average")
    rows["fpr95"] = [0.3, 0.31, 0.32, 0.2, 0.21, 0.22]
    claims = rp.grad_claims(rows, Cfg())
    assert [(c["unit"].split(" on ")[0], c["unit"].split(" on ")[1].split(",")[0], c["role"]) for c in claims] == [
        ("auroc points", "average", "primary"), ("fpr95 points", "average", "supporting")]
    assert rp.detection_cells(_rows({"energy": [0.8], "greg": [0.9]}), "mnist6", ("energy", "greg")) \
        == rp.DETECTION_CELLS
