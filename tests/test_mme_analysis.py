"""Unit tests of ood_utils.mme_analysis on small synthetic features (no training, no data, seconds)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ood_utils import mme_analysis as ma
from ood_utils.detectors import get_detector
from ood_utils.features import Features


def _features(feats, W, b, labels=None) -> Features:
    feats = np.asarray(feats, dtype=np.float32)
    logits = (feats @ W.T + b).astype(np.float32)
    labels = np.full(len(feats), -1) if labels is None else np.asarray(labels)
    return Features(feats, logits, labels.astype(np.int64))


def synthetic_bench(seed: int = 0, d: int = 16, c: int = 3, n: int = 300) -> ma.Benchmark:
    """ReLU-like features: each class lights up its own block of dimensions; a near set mixes two
    classes, a far set is broad noise."""
    rng = np.random.default_rng(seed)
    centers = np.zeros((c, d), dtype=np.float32)
    block = d // c
    for k in range(c):
        centers[k, k * block:(k + 1) * block] = 2.0

    def sample(m, labels):
        return np.maximum(centers[labels] + 0.5 * rng.standard_normal((m, d)), 0)

    W = (centers / 2 + 0.1 * rng.standard_normal((c, d))).astype(np.float32)
    b = (0.1 * rng.standard_normal(c)).astype(np.float32)
    y_train, y_test = rng.integers(0, c, n), rng.integers(0, c, n // 2)
    near = np.maximum(0.5 * (centers[0] + centers[1]) + 0.7 * rng.standard_normal((n // 2, d)), 0)
    far = np.abs(1.5 * rng.standard_normal((n // 2, d)))
    return ma.Benchmark(train=_features(sample(n, y_train), W, b, y_train),
                        test=_features(sample(n // 2, y_test), W, b, y_test),
                        ood={"near_set": _features(near, W, b), "far_set": _features(far, W, b)},
                        groups={"near_set": "near", "far_set": "far"}, W=W, b=b, preset="cifar", id_dataset="toy")


@pytest.fixture(scope="module")
def bench():
    return synthetic_bench()


# ------------------------------------------------------------------------------------------ Assumption 1
def test_consistency_ratio_on_a_hand_built_case():
    # NME looks at dims 0-1 (where the class means differ most), the head only at dims 2-3
    W = np.array([[0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float32)
    b = np.zeros(2, dtype=np.float32)
    train = _features([[1, 0, 1, 0], [1.1, 0, 0.9, 0], [0, 1, 0, 1], [0, 0.9, 0, 1.1]], W, b, [0, 0, 1, 1])
    test = _features([[1, 0, 1, 0], [0, 1, 0, 1], [2, 0, 2, 0], [1, 0, 0, 0.5]], W, b)  # the last disagrees
    ood = _features([[1, 0, 0, 0.5], [0, 1, 0.5, 0]], W, b)  # both disagree
    bench = ma.Benchmark(train=train, test=test, ood={"odd": ood}, groups={"odd": "far"}, W=W, b=b,
                         id_dataset="toy")
    ratios = ma.consistency_ratios(bench).set_index("dataset")
    assert ratios.loc["toy", "co_scale"] == pytest.approx(0.75)
    assert ratios.loc["toy", "co_mls"] == pytest.approx(0.75)  # b = 0: SCALE keeps the argmax
    assert ratios.loc["odd", "co_scale"] == 0.0
    assert list(ratios["group"]) == ["ID", "far"]


def test_covariance_rows_hold_and_fail_where_built_to():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(500)
    values = {"a": {"id": x, "out": rng.standard_normal(500)},
              "b": {"id": 2 * x, "out": rng.standard_normal(500)}}  # correlated on ID only
    rows = ma.covariance_rows(values, {"out": "far"})
    assert len(rows) == 1 and bool(rows.loc[0, "holds"])
    assert rows.loc[0, "cov_id"] == pytest.approx(2 * np.var(x, ddof=1))
    flipped = ma.covariance_rows({k: {"id": v["out"], "out": v["id"]} for k, v in values.items()}, {"out": "far"})
    assert not bool(flipped.loc[0, "holds"]) and flipped.loc[0, "rel_gap"] < 0


def test_score_covariances_table_is_symmetric(bench):
    cov = ma.score_covariances(bench, scores=("mls", "energy", "fdbd"))
    assert len(cov) == 3 * 2  # 3 pairs x 2 OOD sets
    table = ma.covariance_table(cov)
    assert list(table.index) == ["MLS", "Energy", "fDBD"]
    assert table.loc["MLS", "fDBD"] == table.loc["fDBD", "MLS"] != ""
    assert table.loc["MLS", "MLS"] == ""


# ------------------------------------------------------------------------------------------ Hypothesis 1
def test_truncation_grid_shape_and_scale_invariance_of_nme(bench):
    grid = ma.truncation_grid(bench, scores=("energy", "nme"), truncations=(None, "scale"))
    assert len(grid) == 2 * 2 * (len(bench.ood) + 1)
    assert (grid[grid["truncation"] == "none"]["gain"] == 0).all()
    # SCALE multiplies each feature vector by a positive number; NME+ normalises it away
    nme = grid[(grid["method"] == "nme") & (grid["truncation"] == "scale")]
    assert np.allclose(nme["gain"], 0.0)
    m = ma.grid_matrix(grid)
    assert list(m.index) == ["energy", "nme"] and list(m.columns) == ["none", "scale"]


# -------------------------------------------------------------------------------------------- MME parts
def test_mme_parts_reproduce_the_mme_detector(bench):
    parts = ma.MMEParts(bench)
    mme = get_detector("mme", preset="cifar").fit(bench.train.feats, bench.train.logits, bench.train.labels,
                                                   bench.W, bench.b)
    for f in (bench.test, *bench.ood.values()):
        ours = parts.combine(parts.log_factors(f.feats, f.logits))
        assert np.allclose(ours, mme.score(f.feats, f.logits), rtol=1e-9, atol=1e-9)


def test_mme_parts_drop_and_retune(bench):
    parts = ma.MMEParts(bench)
    f = parts.log_factors(bench.test.feats, bench.test.logits)
    nme = get_detector("nme", temperature=0.1).fit(bench.train.feats, None, bench.train.labels, bench.W, bench.b)
    only_nme = parts.combine(f, drop=[k for k in f if k != "nme"])
    assert np.allclose(only_nme, np.logaddexp(0, nme.score(bench.test.feats, bench.test.logits)))
    no_co = parts.combine(f, drop=("co",))
    ones = parts.retuned(co_weight=1.0)
    assert np.allclose(ones.combine(ones.log_factors(bench.test.feats, bench.test.logits)), no_co)
    with pytest.raises(ValueError, match="temperature and co_weight"):
        parts.retuned(dim=3)
    with pytest.raises(ValueError, match="cannot drop"):
        parts.combine(f, drop=("nope",))
    with pytest.raises(ValueError, match="valid"):
        parts.log_factors(bench.test.feats, bench.test.logits, {"vim": "react"})


def test_positive_factor_rule():
    log_of_s = ma.positive_factor(np.array([0.5, 2.0]))
    la, sign = log_of_s(np.array([np.e, -1.0]))
    assert la[0] == pytest.approx(1.0) and list(sign) == [1, -1]
    exp_of_s = ma.positive_factor(np.array([-0.5, 2.0]))
    la, sign = exp_of_s(np.array([-3.0, 1.0]))
    assert list(la) == [-3.0, 1.0] and list(sign) == [1, 1]


# ---------------------------------------------------------------------------------------- Proposition 1
def test_separability_definition_and_scale():
    s_in, s_out = np.array([3.0, 5.0]), np.array([1.0, 2.0])
    assert ma.separability(s_in, s_out) == pytest.approx(2.5)
    assert ma.separability(3 * s_in, 3 * s_out) == pytest.approx(3 * 2.5)  # not scale-free


def test_proposition1_holds_with_its_premises_and_fails_without():
    rng = np.random.default_rng(0)
    n = 400
    s1_in, s1_out = 2 + 0.1 * rng.random(n), 1 + 0.1 * rng.random(n)
    big_in, big_out = 3 + 0.1 * rng.random(n), 2 + 0.1 * rng.random(n)         # E_out >= 1
    small_in, small_out = 0.5 + 0.01 * rng.random(n), 0.4 + 0.01 * rng.random(n)  # E_out < 1
    values = {"id": {"s1": s1_in, "big": big_in, "small": small_in},
              "ood": {"s1": s1_out, "big": big_out, "small": small_out}}
    check = ma.proposition1_check(values, {"ood": "far"}).set_index("factors")
    assert len(check) == 3 + 1  # three pairs and the product of all three
    assert bool(check.loc["s1 x big", "holds"]) and bool(check.loc["s1 x big", "eout_ge1"])
    assert not bool(check.loc["s1 x small", "holds"]) and not bool(check.loc["s1 x small", "eout_ge1"])
    assert bool(check.loc["s1 x big", "eq2"]) and np.isnan(check.loc["s1 x big x small", "assumption1"])
    assert check.loc["s1 x big", "v_product"] == pytest.approx(np.mean(s1_in * big_in) - np.mean(s1_out * big_out))


def test_proposition1_reports_overflow_as_not_holding():
    values = {"id": {"a": np.array([1e200, 2e200]), "b": np.array([1e200, 3e200])},
              "ood": {"a": np.array([1.0, 2.0]), "b": np.array([1.0, 2.0])}}
    row = ma.proposition1_check(values, {"ood": "far"}).iloc[0]
    assert not row["finite"] and not row["holds"]


def test_mme_factor_values_are_the_factors_of_eq7(bench):
    parts = ma.MMEParts(bench)
    values = ma.mme_factor_values(parts)
    assert set(values) == {"id", *bench.ood}
    v = values["id"]
    assert set(v) == set(ma.FACTOR_TITLES)
    assert np.all(v["nme"] >= 1) and set(np.unique(v["co"])) <= {1.0, 2.0} and np.all(v["exp"] > 0)
    product = v["exp"] * v["fdbd"] * v["pca"] * v["co"] * v["nme"]
    assert np.allclose(np.sign(product) * np.log1p(np.abs(product)),
                       parts.combine(parts.log_factors(bench.test.feats, bench.test.logits)))


# ---------------------------------------------------------------------------------------------- tables
def test_evaluate_scores_rows_and_average():
    scores = {"id": np.arange(10.0, 20.0), "easy": np.arange(0.0, 10.0), "hard": np.arange(10.0, 20.0)}
    rows = pd.DataFrame(ma.evaluate_scores("x", scores, {"easy": "far", "hard": "near"}))
    assert list(rows["dataset"]) == ["easy", "hard", "average"]
    easy = rows.set_index("dataset").loc["easy"]
    assert easy["auroc"] == 1.0 and easy["fpr95"] == 0.0
    assert rows.set_index("dataset").loc["hard", "auroc"] == pytest.approx(0.5)
    assert rows.iloc[-1]["auroc"] == pytest.approx(0.75) and rows.iloc[-1]["group"] == "all"


def test_tables_have_the_papers_rows(bench):
    parts = ma.MMEParts(bench)
    t1 = ma.evaluate_detectors(bench, names=("msp", "mme"))
    assert set(t1["method"]) == {"msp", "mme"} and len(t1) == 2 * 3
    assert ma.average_table(t1).index.tolist() == ["msp", "mme"]
    t3 = ma.mme_ablation(bench, parts=parts)
    assert {"NME+", "NME+ + CO+", "MME", "MME w/o CO+"} <= set(t3["method"])
    t5 = ma.truncation_variants(bench, parts=parts)
    assert len(t5) == len(ma.TABLE5_VARIANTS) * 3
    base = t5[t5["component"] == "Baseline"]["auroc"].to_numpy()
    mme = t1[t1["method"] == "mme"]["auroc"].to_numpy()
    assert np.allclose(base, mme)  # the baseline row is MME itself
    t6 = ma.extra_scores(bench, parts=parts, extras=("gen",))
    assert list(dict.fromkeys(t6["method"])) == ["MME + GEN", "MME"]
    sens = ma.sensitivity(bench, parts=parts, lambdas=(1.0, 2.0), temperatures=(0.1,))
    assert sorted(set(zip(sens["param"], sens["value"]))) == [("T", 0.1), ("lambda", 1.0), ("lambda", 2.0)]


def test_near_far_summary(bench):
    rows = ma.evaluate_detectors(bench, names=("energy", "react", "mme"))
    nf = ma.near_far_summary(rows).set_index("method")
    assert {"near_auroc", "far_auroc", "near_fpr95", "far_fpr95"} <= set(nf.columns)
    assert bool(nf.loc["react", "truncation"]) and not bool(nf.loc["mme", "truncation"])
    assert nf.loc["energy", "family"] == "logit" and nf.loc["mme", "title"] == "MME"
    near = rows[(rows["method"] == "mme") & (rows["group"] == "near")]["auroc"].mean()
    assert nf.loc["mme", "near_auroc"] == pytest.approx(near)


def test_to_records_names_and_shapes():
    from ood_utils import profiles

    cfg = profiles.resolve("mini", track="mme", seed_now=False)
    rows = pd.DataFrame([{"method": "mme", "dataset": "dtd", "group": "far", "auroc": 0.9, "fpr95": 0.2},
                         {"method": "ash", "dataset": "average", "group": "all", "auroc": 0.8, "fpr95": 0.3}])
    records = ma.to_records(rows, "Table 1", cfg)
    assert len(records) == 4
    r = records[0]
    assert (r.paper, r.table, r.method, r.dataset, r.metric, r.value) == ("MME", "1", "MME", "textures", "auroc",
                                                                         0.9)
    assert records[2].method == "ASH-S" and r.profile == "mini" and r.setting == "mnist5k/mnist_cnn"


def test_records_meet_the_transcribed_tables():
    """Every name the notebooks record for a published cell is found by results.compare."""
    from ood_utils import profiles, results

    cfg = profiles.resolve("mini", track="mme", seed_now=False)
    rows = pd.DataFrame([{"method": "mme", "dataset": "average", "group": "all", "auroc": 0.9, "fpr95": 0.2},
                         {"method": "NME+ + CO+", "dataset": "average", "group": "all", "auroc": 0.9, "fpr95": 0.2},
                         {"method": "ViM (SCALE)", "dataset": "average", "group": "all", "auroc": 0.9, "fpr95": 0.2},
                         {"method": "MME + SHE", "dataset": "average", "group": "all", "auroc": 0.9, "fpr95": 0.2}])
    records = (ma.to_records(rows.iloc[:1], "Table 1", cfg) + ma.to_records(rows.iloc[1:2], "Table 3", cfg)
               + ma.to_records(rows.iloc[2:3], "Table 5", cfg) + ma.to_records(rows.iloc[3:], "Table 6", cfg))
    ratios = pd.DataFrame([{"dataset": "mnist5k", "group": "ID", "co_scale": 0.9},
                           {"dataset": "textures", "group": "far", "co_scale": 0.5}])
    cov = ma.covariance_rows({"mls": {"id": np.arange(5.0), "textures": np.ones(5)},
                              "energy": {"id": np.arange(5.0), "textures": np.ones(5)}}, {"textures": "far"})
    records += [r for r in ma.assumption_records(ratios, cov, pd.DataFrame(columns=["method", "truncation",
                "dataset", "auroc"]), pd.DataFrame(columns=["factors", "dataset", "holds", "auroc_holds"]), cfg)]
    results.save(records, "test_mme_names", "mini")
    cmp = results.compare("mini")
    cmp = cmp[cmp["setting"] == "mnist5k/mnist_cnn"]
    cmp = cmp[~((cmp["table"] == "4") & ~cmp["dataset"].isin(["id", "average"]))]  # per-set: the kit's extra
    assert len(cmp) == 8 + 2 + 2  # tables 1, 3, 5, 6 x 2 metrics; Fig. 2 x 2 sets; Table 4 id + average
    found = cmp.dropna(subset=["paper_value"])
    assert len(found) == len(cmp), cmp[cmp["paper_value"].isna()][["table", "method", "dataset", "metric"]]


def test_setting_names():
    from types import SimpleNamespace as NS

    assert ma.setting_name(NS(id_dataset="cifar100", arch="densenet100")) == "CIFAR-100/DenseNet-100"
    assert ma.setting_name(NS(id_dataset="imagenet1k", arch="vit_b16")) == "ImageNet-1K/ViT-B-16"
    assert ma.setting_name(NS(id_dataset="imagenet1k", arch="bit_s_r101x1")) == "ImageNet-1K/BiT-S-R101x1"
    assert ma.setting_name(NS(id_dataset="mnist5k", arch="mnist_cnn")) == "mnist5k/mnist_cnn"


def test_default_preset_follows_the_id_dataset():
    from types import SimpleNamespace as NS

    assert ma.default_preset(NS(id_dataset="imagenet1k", preset="cifar", overridden=frozenset())) == "imagenet"
    assert ma.default_preset(NS(id_dataset="mnist5k", preset="cifar", overridden=frozenset())) == "cifar"
    assert ma.default_preset(NS(id_dataset="imagenet1k", preset="cifar", overridden={"preset"})) == "cifar"
