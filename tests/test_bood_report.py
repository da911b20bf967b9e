"""BOOD's records and claims: every verdict outcome, the table names, the paper's numbers."""
import numpy as np
import pandas as pd
import pytest

from ood_utils import profiles, results
from ood_utils.bood import report
from ood_utils.bood.experiments import Run


@pytest.fixture
def cfg():
    return profiles.resolve("mini", "bood", seed_now=False)


def frame_of(bood_fpr, energy_fpr, sets=None):
    rows = []
    for seed, (b, e) in enumerate(zip(bood_fpr, energy_fpr)):
        for method, v in (("BOOD", b), ("Energy", e)):
            rows.append({"method": method, "dataset": "average", "id_dataset": "mnist6", "seed": seed, "table": None,
                         "fpr95": v, "auroc": 1 - v, "group": "all"})
            rows.append({"method": method, "dataset": "id", "id_dataset": "mnist6", "seed": seed, "table": None,
                         "id_accuracy": 0.9, "group": "id"})
            for name, gain in (sets or {}).items():
                rows.append({"method": method, "dataset": name, "id_dataset": "mnist6", "seed": seed, "table": None,
                             "auroc": 0.5 + (gain[seed] if method == "BOOD" else 0.0), "fpr95": 0.5, "group": "near"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("bood,energy,expected", [
    ([0.10, 0.12, 0.11], [0.50, 0.52, 0.49], "agrees"),           # lower FPR95, clearly
    ([0.60, 0.62, 0.61], [0.20, 0.21, 0.19], "disagrees"),
    ([0.30, 0.35, 0.25], [0.31, 0.26, 0.33], "tie within noise"),
    ([0.10], [0.50], "undetermined"),                              # one seed: no noise estimate
])
def test_seed_claim_every_outcome(cfg, bood, energy, expected):
    c = report.seed_claim(frame_of(bood, energy), cfg, "mnist6", "BOOD lowers FPR95", "BOOD", "Energy", "fpr95")
    assert c["verdict"] == expected
    assert c["ours"] == pytest.approx(np.mean(bood) - np.mean(energy))      # in the metric's own direction
    assert (c["ours_lo"] is None) == (expected == "undetermined")
    assert "MNIST-6" in c["setting"] and c["paper"] == "bood"


def run_with(scores, method="BOOD"):
    return Run(method, "mnist6", 0, scores, 0.9, 10, {})


@pytest.mark.parametrize("shift,expected", [(3.0, "agrees"), (-3.0, "disagrees"), (0.0, "tie within noise")])
def test_bootstrap_claim_every_outcome(cfg, shift, expected):
    rng = np.random.default_rng(0)
    ood = rng.normal(0, 1, 400)
    base = {"id": rng.normal(1, 1, 400), "a": ood}
    better = {"id": base["id"] + shift, "a": ood}
    c = report.bootstrap_claim(run_with(better), run_with(base, "Energy"), cfg, "claim")
    assert c["verdict"] == expected
    assert c["ours_lo"] <= c["ours"] <= c["ours_hi"] or expected == "tie within noise"


def test_best_value_claim_compares_with_the_best_rival(cfg):
    rng = np.random.default_rng(1)
    ood = rng.normal(0, 1, 300)
    runs = []
    for value, sep in ((0, 0.2), (2, 3.0), (5, 1.0)):
        r = run_with({"id": rng.normal(sep, 1, 300), "o": ood})
        r.params = {"value": value}
        runs.append(r)
    c = report.best_value_claim(runs, cfg, "extra_steps", 2)
    assert c["verdict"] == "agrees" and "extra_steps = 5" in c["note"]
    assert report.best_value_claim(runs, cfg, "extra_steps", 0)["verdict"] == "disagrees"
    with pytest.raises(ValueError, match="no run at the paper's value"):
        report.best_value_claim(runs, cfg, "extra_steps", 3)


def test_largest_gain_claim(cfg):
    gains = {"unseen_digits": [0.20, 0.22, 0.21], "letters": [0.02, 0.01, 0.03], "textures": [0.0, 0.01, 0.0]}
    f = frame_of([0.1] * 3, [0.2] * 3, gains)
    c = report.largest_gain_claim(f, cfg, "mnist6", "unseen_digits")
    assert c["verdict"] == "agrees" and c["ours"] == pytest.approx(0.19, abs=1e-6)
    assert report.largest_gain_claim(f, cfg, "mnist6", "letters")["verdict"] == "disagrees"
    with pytest.raises(ValueError, match="was not evaluated"):
        report.largest_gain_claim(f, cfg, "mnist6", "svhn")


def test_records_use_the_transcribed_spelling(cfg):
    f = frame_of([0.1, 0.2], [0.5, 0.6])
    recs = report.records(f, cfg)
    assert {r.table for r in recs} == {"1"} and {r.method for r in recs} == {"BOOD", "Energy"}
    assert {r.metric for r in recs} == {"auroc", "fpr95", "id_accuracy"}
    assert {r.setting for r in recs} == {"mnist6/mnist_cnn"} and {r.seed for r in recs} == {0, 1}
    assert {r.table for r in report.records(f, cfg, table=3)} == {"3"}
    paper = results.paper_table("bood")
    assert set(paper[paper["table"].astype(str) == "3"]["method"]) >= {"boundary identification only", "BOOD"}


def test_summary_mean_and_std_in_percent():
    s = report.summary(frame_of([0.1, 0.3], [0.5, 0.5]))
    row = s[s["method"] == "BOOD"].iloc[0]
    assert row["fpr95_mean"] == pytest.approx(20.0) and row["fpr95_std"] == pytest.approx(np.std([10, 30], ddof=1))
    assert row["id_accuracy"] == pytest.approx(90.0)


def test_paper_number():
    assert report.paper_number(1, "BOOD", "average", "fpr95") == pytest.approx(10.67)
    assert report.paper_number(1, "BOOD", "nowhere", "fpr95") is None
