"""BOOD's records and claims: every verdict outcome, the table names, the paper's numbers."""
import numpy as np
import pandas as pd
import pytest

from ood_utils import data, metrics, profiles, results
from ood_utils.bood import experiments, report
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


SETS = None


def sets():
    global SETS
    if SETS is None:
        SETS = list(data.ood_sets("mnist6"))
    return SETS


def run_of(method, seed, sep, *, acc=0.98, value=None, gains=None, healthy=True):
    """A run on mnist6 whose ID scores sit ``sep`` above every OOD set's (plus ``gains[set]``)."""
    rng = np.random.default_rng(seed)
    scores = {"id": rng.normal(sep, 1, 300)}
    for name in sets():
        scores[name] = rng.normal(-(gains or {}).get(name, 0.0), 1, 200)
    log = {"losses": [1.0, 0.5] if healthy else [0.5, 1.0]}
    if method != "Energy":
        log |= {"phi_id": rng.normal(1, 1, 100), "phi_ood": rng.normal(-1, 1, 100)}
    return Run(method, "mnist6", seed, scores, acc, 10, {} if value is None else {"value": value}, log=log)


def arms(better_seps, worse_seps, **kw):
    b = [run_of("BOOD", s, sep, **kw) for s, sep in enumerate(better_seps)]
    w = [run_of("Energy", s, sep) for s, sep in enumerate(worse_seps)]
    for r in b + w:
        experiments.assess_health(r, None)
    return b, w


@pytest.mark.parametrize("better,worse,expected", [
    ([1.5, 1.6, 1.55, 1.5, 1.6], [0.5, 0.6, 0.55, 0.5, 0.5], "agrees"),
    ([0.5, 0.6, 0.55, 0.5, 0.5], [1.5, 1.6, 1.55, 1.5, 1.6], "disagrees"),
    ([1.0, 1.3, 0.8], [1.1, 0.8, 1.2], "tie within noise"),
    ([1.5], [0.5], "undetermined"),                              # one seed: no noise estimate
])
def test_compare_runs_every_outcome(cfg, better, worse, expected):
    b, w = arms(better, worse)
    c = report.compare_runs(b, w, cfg, "BOOD detects OOD better")
    assert c["verdict"] == expected and c["role"] == "primary" and c["kind"] == "improvement"
    mean_of_sets = np.mean([report.run_metric(r) for r in b]) - np.mean([report.run_metric(r) for r in w])
    assert c["ours"] == pytest.approx(mean_of_sets)
    assert (c["ours_lo"] is None) == (expected == "undetermined") and c["diagnosis"]
    assert "MNIST-6" in c["setting"] and c["paper"] == "bood"


def test_average_is_the_mean_of_per_set_aurocs_not_pooled():
    r = run_of("BOOD", 0, 1.0, gains={sets()[0]: 3.0})
    per_set = [metrics.auroc(r.scores["id"], r.scores[s]) for s in sets()]
    assert report.run_metric(r) == pytest.approx(np.mean(per_set))
    assert report.run_metric(r, "auroc", sets()[0]) == pytest.approx(per_set[0])


def test_fpr95_claim_is_negative_when_better():
    b, w = arms([1.5, 1.6, 1.55], [0.5, 0.6, 0.55])
    c = report.compare_runs(b, w, cfg=profiles.resolve("mini", "bood", seed_now=False), claim="lower FPR95",
                            metric="fpr95", role="supporting")
    assert c["verdict"] == "agrees" and c["ours"] < 0 and c["ours_lo"] <= c["ours"] <= c["ours_hi"]


def test_a_collapsed_run_fails_its_health_and_its_claims_are_undetermined(cfg):
    """The collapse this kit once had: energies nearly constant, accuracy lost, phi not separating its own
    training data, the loss going up."""
    base = run_of("Energy", 0, 3.0)
    bad = run_of("BOOD", 0, 3.0, acc=0.65, healthy=False)
    bad.scores["id"] = np.full(300, 7.0) + np.random.default_rng(0).normal(0, 0.01, 300)
    bad.log["phi_id"], bad.log["phi_ood"] = bad.log["phi_ood"], bad.log["phi_id"]
    h = experiments.assess_health(bad, base)
    assert not h.ok and bad.health is h
    assert {c.name for c in h.checks if not c.passed} == {"ID accuracy", "score spread on ID", "phi's separation",
                                                          "training loss"}
    good = experiments.assess_health(run_of("BOOD", 0, 3.0), base)
    assert good.ok, good.reason
    experiments.assess_health(base, None)
    c = report.compare_runs([bad], [base], cfg, "BOOD detects OOD better")
    assert c["verdict"] == "undetermined" and c["diagnosis"].startswith("training failed:")
    assert "ID accuracy 0.650" in c["diagnosis"]


@pytest.mark.parametrize("accs,expected", [([0.98, 0.981, 0.979], "agrees"),           # no accuracy lost
                                           ([0.90, 0.91, 0.905], "disagrees"),           # clearly lost
                                           ([0.99, 0.95, 0.97], "tie within noise")])
def test_no_harm_claim(cfg, accs, expected):
    base = [run_of("Energy", s, 1.0, acc=0.98) for s in range(3)]
    mine = [run_of("BOOD", s, 1.0, acc=a) for s, a in enumerate(accs)]
    c = report.no_harm_claim(mine, base, cfg, "BOOD keeps the ID accuracy")
    assert c["verdict"] == expected and c["kind"] == "no harm"


def test_sweep_claims_are_declared_against_each_other_value(cfg):
    runs = [run_of("BOOD", s, sep + 0.02 * s, value=v) for v, sep in ((0, 0.5), (2, 2.0), (5, 2.0)) for s in range(3)]
    claims = report.sweep_claims(runs, cfg, "extra_steps", 2)
    assert [c["claim"] for c in claims] == ["extra_steps = 2 detects OOD better than extra_steps = 0",
                                            "extra_steps = 2 detects OOD better than extra_steps = 5"]
    assert claims[0]["verdict"] == "agrees" and claims[1]["verdict"] == "tie within noise"
    with pytest.raises(ValueError, match="no run at the paper's value"):
        report.sweep_claims(runs, cfg, "extra_steps", 3)


def test_largest_gain_claim(cfg):
    target, other = "unseen_digits", sets()[-1]
    runs = [run_of(m, s, 1.0, gains={target: 2.0, other: 0.3} if m == "BOOD" else None)
            for s in range(3) for m in ("BOOD", "Energy")]
    c = report.largest_gain_claim(runs, cfg, target)
    assert c["verdict"] == "agrees" and c["role"] == "supporting"
    with pytest.raises(ValueError, match="was not evaluated"):
        report.largest_gain_claim(runs, cfg, "svhn")


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


def test_health_table_marks_failed_runs():
    base = run_of("Energy", 0, 3.0)
    bad = run_of("BOOD", 0, 3.0, acc=0.6)
    for r, b in ((base, None), (bad, base)):
        experiments.assess_health(r, b)
    table = report.health_table([base, bad, run_of("BOOD", 1, 1.0)])      # the last one was never assessed
    assert list(table["healthy"]) == [True, False] and "ID accuracy 0.600" in table["failed because"].iloc[1]
