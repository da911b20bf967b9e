"""Unit tests of ood_utils.mme on small synthetic features (no training, no data, seconds)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ood_utils import mme as ma
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
    assert list(rows["dataset"]) == ["out", "average", "far"]  # the set, then the summaries over it
    assert bool(rows.loc[0, "holds"]) and (rows["cov_ood"] == rows.loc[0, "cov_ood"]).all()
    assert rows.loc[0, "cov_id"] == pytest.approx(2 * np.var(x, ddof=1))
    flipped = ma.covariance_rows({k: {"id": v["out"], "out": v["id"]} for k, v in values.items()}, {"out": "far"})
    assert not bool(flipped.loc[0, "holds"]) and flipped.loc[0, "rel_gap"] < 0


def test_score_covariances_table_is_symmetric(bench):
    cov = ma.score_covariances(bench, scores=("mls", "energy", "fdbd"))
    assert len(ma.per_set(cov)) == 3 * 2  # 3 pairs x 2 OOD sets, then "average", "near", "far" per pair
    assert len(cov) == 3 * 5
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
        assert np.allclose(ours, mme.score(f.feats, f.logits), rtol=1e-7, atol=1e-7)  # up to rounding


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
def test_benchmark_evaluate_rows_and_average(bench):
    scores = {"id": np.arange(10.0, 20.0), "near_set": np.arange(10.0, 20.0), "far_set": np.arange(0.0, 10.0)}
    rows = pd.DataFrame(bench.evaluate("x", scores))
    assert list(rows["dataset"]) == ["near_set", "far_set", "average"]
    far = rows.set_index("dataset").loc["far_set"]
    assert far["auroc"] == 1.0 and far["fpr95"] == 0.0
    assert rows.set_index("dataset").loc["near_set", "auroc"] == pytest.approx(0.5)
    assert rows.iloc[-1]["auroc"] == pytest.approx(0.75) and rows.iloc[-1]["group"] == "all"
    both = pd.DataFrame(bench.evaluate("x", scores, n_boot=20, summaries=("average", "near", "far")))
    assert list(both["dataset"]) == ["near_set", "far_set", "average", "near", "far"]
    assert (both["auroc_lo"] <= both["auroc"] + 1e-12).all() and (both["auroc"] <= both["auroc_hi"] + 1e-12).all()


def test_tables_have_the_papers_rows(bench):
    parts = ma.MMEParts(bench)
    t1 = ma.evaluate_detectors(bench, names=("msp", "mme"))
    assert set(t1["method"]) == {"msp", "mme"} and len(t1) == 2 * 5  # 2 sets, average, near, far
    assert ma.average_table(t1).index.tolist() == ["msp", "mme"]
    t3 = ma.mme_ablation(bench, parts=parts)
    assert {"NME+", "NME+ + CO+", "MME", "MME w/o CO+"} <= set(t3["method"])
    t5 = ma.truncation_variants(bench, parts=parts)
    assert len(t5) == len(ma.TABLE5_VARIANTS) * 5  # 2 sets, average, near, far
    base = t5[t5["component"] == "Baseline"]["auroc"].to_numpy()  # the same 5 rows as MME in t1
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


# ------------------------------------------------------------------------------ configuration and data
def test_resolve_config_picks_the_papers_networks():
    from ood_utils.profiles import ConfigError

    assert ma.resolve_config("mini", seed_now=False).arch == "mnist_cnn"
    assert ma.resolve_config("quick", seed_now=False).arch == "densenet100"  # Table 1's network on CIFAR
    assert ma.resolve_config("quick", seed_now=False, arch="resnet18").arch == "resnet18"  # explicit wins
    with pytest.raises(ConfigError, match="checkpoint"):
        ma.resolve_config("paper", seed_now=False, id_dataset="imagenet1k")
    cfg = ma.resolve_config("paper", seed_now=False, id_dataset="imagenet1k", checkpoint="/weights.pth")
    assert cfg.arch == "vit_b16" and ma.setting_name(cfg) == "ImageNet-1K/ViT-B-16"


def test_check_data_names_every_missing_set_and_its_command(tmp_path, monkeypatch):
    from ood_utils.data import DatasetNotFound

    monkeypatch.setenv("OOD_KIT_DATA", str(tmp_path))
    ma.check_data(ma.resolve_config("mini", seed_now=False))  # embedded: nothing to check
    with pytest.raises(DatasetNotFound) as err:
        ma.check_data(ma.resolve_config("quick", seed_now=False, id_dataset="cifar100"))
    first_line = str(err.value).splitlines()[0]  # what a failed run's summary shows
    assert "python -m data_prep --get cifar100 textures svhn places365 lsun_c lsun_r isun" in first_line
    with pytest.raises(DatasetNotFound, match="image-net.org"):
        ma.check_data(ma.resolve_config("paper", seed_now=False, id_dataset="imagenet1k", checkpoint="/w.pth"))


def test_imagenet_tables_average_over_the_papers_four_sets(bench):
    sets = ("inaturalist", "sun", "places", "textures", "ninco", "ssb_hard", "openimage_o")
    groups = {n: ("near" if n in ("ninco", "ssb_hard") else "far") for n in sets}
    ood = {n: bench.ood["near_set" if groups[n] == "near" else "far_set"] for n in sets}
    big = ma.Benchmark(train=bench.train, test=bench.test, ood=ood, groups=groups, W=bench.W, b=bench.b,
                       id_dataset="imagenet1k")
    assert big.average_sets() == ["inaturalist", "sun", "places", "textures"]
    assert big.fig1_groups() == {"ninco": "near", "ssb_hard": "near", "inaturalist": "far", "textures": "far",
                                 "openimage_o": "far"}
    scores = {"id": np.ones(3), **{n: np.zeros(3) for n in sets}}
    scores["ninco"] = np.ones(3)  # a tie: AUROC 0.5, outside the average
    rows = pd.DataFrame(big.evaluate("x", scores)).set_index("dataset")
    assert rows.loc["average", "auroc"] == 1.0 and rows.loc["ninco", "auroc"] == 0.5
    assert bench.average_sets() == list(bench.ood)  # other ID datasets: every set


# ------------------------------------------------------------------------------ Hypothesis 1, protocols
def test_truncation_grid_both_protocols_and_noop_cells(bench):
    grid = ma.truncation_grid(bench, scores=("mahalanobis", "vim"), truncations=(None, "dice", "react"),
                              fit_on=("raw", "truncated"))
    assert set(grid["fit_on"]) == {"raw", "truncated"}
    raw, refit = (ma.grid_matrix(grid, fit_on=p) for p in ("raw", "truncated"))
    assert np.allclose(raw["none"], refit["none"])  # the raw-feature column is shared
    noop = ma.noop_cells(grid, "raw")
    assert bool(noop.loc["mahalanobis", "dice"])  # DICE edits W only; Mahalanobis never reads W
    assert not bool(noop.loc["vim", "dice"])
    h = ma.hypothesis1_summary(grid, "raw")
    assert h["noop"] >= 1 and h["pairs"] == 2 * 2 - h["noop"]
    with pytest.raises(ValueError, match="fit_on"):
        ma.detector_scores(bench, "vim", "react", fit_on="both")


def test_refit_protocol_fits_on_truncated_features(bench):
    from ood_utils.detectors import get_truncation

    scores = ma.detector_scores(bench, "mahalanobis", "react", fit_on="truncated")
    trunc = get_truncation("react").fit(bench.train.feats, bench.W, bench.b)
    g_train = trunc.transform(bench.train.feats)
    det = get_detector("mahalanobis").fit(g_train, None, bench.train.labels, bench.W, bench.b)
    assert np.allclose(scores["id"], det.score(trunc.transform(bench.test.feats)))


# ------------------------------------------------------------------------------------------- headline
def test_mme_vs_best_and_per_set_ranks():
    rows = []
    for method, a_near, a_far, f_near, f_far in (("mme", 0.9, 0.97, 0.3, 0.1), ("msp", 0.95, 0.9, 0.2, 0.3),
                                                 ("vim", 0.8, 0.99, 0.5, 0.05)):
        rows += [{"method": method, "dataset": "n", "group": "near", "auroc": a_near, "fpr95": f_near},
                 {"method": method, "dataset": "f", "group": "far", "auroc": a_far, "fpr95": f_far},
                 {"method": method, "dataset": "average", "group": "all", "auroc": (a_near + a_far) / 2,
                  "fpr95": (f_near + f_far) / 2}]
    main = pd.DataFrame(rows)
    best = ma.mme_vs_best(main, ma.near_far_summary(main)).set_index(["scope", "metric"])
    assert best.loc[("average", "auroc"), "rank"] == 1 and bool(best.loc[("average", "auroc"), "MME better"])
    assert best.loc[("near", "auroc"), "best other"] == "MSP" and best.loc[("near", "auroc"), "rank"] == 2
    assert best.loc[("far", "fpr95"), "best other"] == "ViM" and not bool(best.loc[("far", "fpr95"), "MME better"])
    ranks = ma.per_set_ranks(main)
    assert list(ranks.index) == ["n", "f"] and ranks.loc["f", "auroc_rank"] == 2 and ranks.loc["n", "fpr95_rank"] == 2


def test_records_of_both_notebooks(bench):
    from ood_utils import profiles

    cfg = profiles.resolve("mini", track="mme", seed_now=False)
    parts = ma.MMEParts(bench)
    ratios = ma.consistency_ratios(bench)
    cov = ma.score_covariances(bench, scores=("mls", "energy"))
    grid = ma.truncation_grid(bench, scores=("energy", "mahalanobis"), truncations=(None, "react"),
                              fit_on=("raw", "truncated"))
    check = ma.proposition1_check(ma.mme_factor_values(parts), bench.groups)
    main = ma.evaluate_detectors(bench, names=("msp", "vim", "mme"))
    nf = ma.near_far_summary(main, bench.fig1_groups())
    records = ma.ensemble_records(main, ma.mme_ablation(bench, parts=parts), ma.truncation_variants(bench, parts=parts),
                                  ma.extra_scores(bench, parts=parts, extras=("gen",)),
                                  ma.sensitivity(bench, parts=parts, lambdas=(2.0,), temperatures=(0.1,)), nf, cfg)
    assert {r.table for r in records} == {"1", "3", "5", "6", "fig5", "fig1"}
    assert not {r.dataset for r in records if r.table != "fig1"} & {"near", "far"}  # summaries: Fig. 1 only
    names = {r.method for r in ma.assumption_records(ratios, cov, grid, check, cfg) if r.table == "fig3"}
    assert {"Energy (Base)", "Maha (ReAct)", "Maha (ReAct, fitted on g(z))"} <= names


def test_paper_pivot_shows_the_transcribed_numbers_as_fractions():
    t1 = ma.paper_pivot("Table 1", dataset="average")
    assert t1.loc["MME", ("CIFAR-10/DenseNet-100", "auroc")] == pytest.approx(0.9692)
    fig2 = ma.paper_pivot("Fig. 2")
    assert fig2.shape[1] == 2 * 5 and (fig2.to_numpy() <= 1).all()
    assert ma.paper_pivot("Table 9").empty


def test_proposition1_has_no_counterexample_when_its_premises_hold(bench):
    parts = ma.MMEParts(bench)
    check = ma.proposition1_check(ma.mme_factor_values(parts), bench.groups, ma.mme_factor_values(parts, logs=True))
    assert ma.proposition1_counterexamples(check).empty
    fake = check.copy()
    row = fake.index[0]
    fake.loc[row, ["finite", "eq2", "assumption1", "eout_ge1", "premises", "holds"]] = [True] * 5 + [False]
    assert list(ma.proposition1_counterexamples(fake).index) == [row]


def test_raw_protocol_equals_the_registrys_truncated_detector(bench):
    """Scoring g(z) with a raw-fitted detector is what get_detector(name, truncation=g) does."""
    for name in ("vim", "mahalanobis", "pca"):
        ours = ma.detector_scores(bench, name, "react", fitted=ma.fit_detector(bench, name))
        registry = ma.fit_detector(bench, name, truncation="react")
        assert np.allclose(ours["far_set"], registry.score(bench.ood["far_set"].feats, bench.ood["far_set"].logits))


def test_a_benchmark_without_near_ood_sets(bench):
    """CIFAR's six OOD sets are all far-OOD: Fig. 1 has nothing to plot, everything else still works."""
    from ood_utils import profiles

    far_only = ma.Benchmark(train=bench.train, test=bench.test, ood={"far_set": bench.ood["far_set"]},
                            groups={"far_set": "far"}, W=bench.W, b=bench.b, id_dataset="toy")
    main = ma.evaluate_detectors(far_only, names=("msp", "mme"))
    nf = ma.near_far_summary(main, far_only.fig1_groups())
    assert nf["near_auroc"].isna().all() and nf["far_auroc"].notna().all()
    assert set(ma.mme_vs_best(main, nf)["scope"]) == {"average", "far"}
    cfg = profiles.resolve("mini", track="mme", seed_now=False)
    records = ma.ensemble_records(main, main.iloc[:0], main.iloc[:0], main.iloc[:0],
                                  ma.sensitivity(far_only, lambdas=(2.0,), temperatures=(0.1,)), nf, cfg)
    assert all(r.dataset != "near" for r in records if r.table == "fig1")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="near- and far-OOD"):
        ma.plot_near_far(nf, ax)
    plt.close(fig)


def test_public_code_presets_and_mnist6_resolve():
    from ood_utils.profiles import ConfigError

    for preset in ("reference_imagenet", "openood", "imagenet"):
        cfg = ma.resolve_config("mini", seed_now=False, preset=preset)
        assert cfg.preset == preset and ma.default_preset(cfg) == preset
    with pytest.raises(ConfigError, match="reference_imagenet") as err:
        ma.resolve_config("mini", seed_now=False, preset="imagenett")
    assert "cifar" in str(err.value) and "openood" in str(err.value)
    cfg = ma.resolve_config("mini", seed_now=False, id_dataset="mnist6")
    assert cfg.id_dataset == "mnist6" and cfg.arch == "mnist_cnn" and ma.default_preset(cfg) == "cifar"
    from ood_utils import features
    assert "unseen_digits" in features.benchmark_sets(cfg)
    with pytest.raises(ValueError, match="valid"):
        features.benchmark_sets(cfg, ["nope"])


def test_neighbour_detectors_shrink_k_on_a_tiny_training_set(bench):
    tiny = ma.Benchmark(train=Features(bench.train.feats[:40], bench.train.logits[:40],
                                       bench.train.labels[:40]),
                        test=bench.test, ood=bench.ood, groups=bench.groups, W=bench.W, b=bench.b)
    with pytest.warns(RuntimeWarning, match="k=10 exceeds the bank of 1"):
        scores = ma.detector_scores(tiny, "nnguide")
    assert np.isfinite(scores["near_set"]).all()
    assert ma.small_data_hparams("nnguide", "cifar", 4000, {}) == {}  # a real size: nothing changes
    assert ma.small_data_hparams("knn", "imagenet", 300, {}) == {"k": 300}


def test_evaluate_bounds_equal_evaluate_sets(bench):
    from ood_utils import metrics

    scores = ma.detector_scores(bench, "energy")
    ours = pd.DataFrame(bench.evaluate("energy", scores, n_boot=30, summaries=("average", "near", "far")))
    ref = pd.DataFrame(metrics.evaluate_sets("energy", scores, bench.groups, average_over=bench.average_sets(),
                                             n_boot=30))
    cols = ["auroc", "fpr95", "auroc_lo", "auroc_hi", "fpr95_lo", "fpr95_hi"]
    assert list(ours["dataset"]) == list(ref["dataset"])
    assert np.allclose(ours[cols].to_numpy(float), ref[cols].to_numpy(float), atol=1e-12)


def test_covariance_summary_interval_is_that_of_the_averaged_gap():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal(400), rng.standard_normal(400)
    values = {"a": {"id": x, "s1": y[:200], "s2": y[200:]}, "b": {"id": x + 0.1 * y, "s1": y[:200] ** 2,
                                                                   "s2": -y[200:]}}
    rows = ma.covariance_rows(values, {"s1": "near", "s2": "near"}, n_boot=200).set_index("dataset")
    mean_gap = rows.loc["average", "cov_id"] - (rows.loc["s1", "cov_ood"] + rows.loc["s2", "cov_ood"]) / 2
    assert rows.loc["average", "cov_ood"] == pytest.approx((rows.loc["s1", "cov_ood"] + rows.loc["s2", "cov_ood"]) / 2)
    assert rows.loc["average", "gap_lo"] < mean_gap < rows.loc["average", "gap_hi"]
    # the sets' noise partly averages out: narrower than the mean of the two sets' intervals
    width = lambda r: r["gap_hi"] - r["gap_lo"]  # noqa: E731
    assert width(rows.loc["average"]) < (width(rows.loc["s1"]) + width(rows.loc["s2"])) / 2


def test_truncation_premise_is_measured_on_total_activation(bench):
    premise = ma.truncation_premise(bench, (None, "react", "dice", "scale"))
    assert set(premise["truncation"]) == {"react", "dice", "scale"}
    dice = premise[premise["truncation"] == "dice"]
    assert np.allclose(dice["gap_raw"], dice["gap_truncated"]) and dice["holds"].all()  # DICE leaves z alone
    react = ma.fitted_truncation(bench, "react")
    name = next(iter(bench.ood))
    expected = (react.transform(bench.test.feats).sum(1).mean() - react.transform(bench.ood[name].feats).sum(1).mean())
    row = premise[(premise["truncation"] == "react") & (premise["dataset"] == name)].iloc[0]
    assert row["gap_truncated"] == pytest.approx(expected)
    allowed = ma.premise_truncations(premise, list(bench.ood))
    assert "dice" in allowed and all(premise[premise["truncation"] == t]["holds"].all() for t in allowed)
