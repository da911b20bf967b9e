"""Detectors: the API contract, MME against a direct float64 transcription of eq. (7), numerics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pathlib import Path

from ood_utils.detectors import (DETECTORS, PRESET_NOTES, PRESETS, describe, describe_markdown, get_detector,
                                 get_truncation, readme_table, with_readme_table)
from ood_utils.detectors import _numerics as nx
from ood_utils.detectors.base import NotFittedError

README = Path(__file__).resolve().parent.parent / "README.md"

torch.set_num_threads(2)
N, D, C = 500, 64, 10


def make_data(seed=0, n=N, d=D, c=C):
    """ReLU features around class means, a head aligned with the means, and two test sets."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(c, d)) * 1.5
    y = rng.integers(0, c, n)
    X = np.maximum(mu[y] + rng.normal(size=(n, d)), 0).astype(np.float32)
    W = (mu / np.linalg.norm(mu, axis=1, keepdims=True) + 0.1 * rng.normal(size=(c, d))).astype(np.float32)
    b = (0.1 * rng.normal(size=c)).astype(np.float32)
    L = (X @ W.T + b).astype(np.float32)
    yt = rng.integers(0, c, 150)
    X_id = np.maximum(mu[yt] + rng.normal(size=(150, d)), 0).astype(np.float32)
    X_ood = np.maximum(rng.normal(size=(150, d)) * 1.5, 0).astype(np.float32)
    return dict(X=X, L=L, y=y, W=W, b=b, X_id=X_id, X_ood=X_ood)


@pytest.fixture(scope="module")
def data():
    return make_data()


def fit(det, data):
    return det.fit(data["X"], data["L"], data["y"], data["W"], data["b"])


def feature_detectors():
    return [name for name, e in DETECTORS.items() if e.kind != "input"]


# ----------------------------------------------------------------------------------------------- the API
@pytest.mark.parametrize("name", feature_detectors())
@pytest.mark.parametrize("preset", [None, "cifar", "imagenet"])
def test_every_detector_scores_finite_float64(name, preset, data):
    kw = {"bank_fraction": 1.0} if name == "nnguide" else {}
    if name == "knn" and preset == "imagenet":
        kw = {"k": 50}  # 1000 neighbours need more than N=500 training samples
    det = fit(get_detector(name, preset=preset, **kw), data)
    X = np.concatenate([data["X_id"], data["X_ood"]])
    s = det.score(X, X @ data["W"].T + data["b"])
    assert s.dtype == np.float64 and s.shape == (300,)
    assert np.all(np.isfinite(s))


@pytest.mark.parametrize("name", ["msp", "energy", "vim", "mahalanobis", "knn", "fdbd", "pca", "nme", "mme", "react"])
def test_higher_means_more_in_distribution(name, data):
    det = fit(get_detector(name), data)
    s_id, s_ood = det.score(data["X_id"]), det.score(data["X_ood"])
    auroc = (s_id[:, None] > s_ood[None, :]).mean()
    assert auroc > 0.8, f"{name}: AUROC {auroc:.3f}"


def test_unknown_names_and_hyperparameters_list_valid_ones():
    with pytest.raises(ValueError, match="valid: .*vim"):
        get_detector("vimm")
    with pytest.raises(ValueError, match="valid: dim"):
        get_detector("vim", alpha=3)
    with pytest.raises(ValueError, match="valid: .*cifar"):
        get_detector("dice", preset="cifar10")
    with pytest.raises(ValueError, match="truncation"):
        get_detector("mme", truncation="react")
    with pytest.raises(ValueError, match="valid: .*vra_clip"):
        get_detector("vim", truncation="vraa")


# (detector, hyperparameters, the range the message must state): every declared range, at a value just outside
OUT_OF_RANGE = [
    ("msp", {"temperature": 0}, "temperature=0 is out of range; valid: a number > 0"),
    ("energy", {"temperature": 0}, "temperature=0 is out of range; valid: a number > 0"),
    ("energy", {"temperature": -1.0}, "valid: a number > 0"),
    ("gen", {"gamma": 0.0}, "gamma=0.0 is out of range; valid: a number in (0, 1)"),
    ("gen", {"gamma": 1.5}, "valid: a number in (0, 1)"),
    ("gen", {"M": 0}, "M=0 is out of range; valid: an integer >= 1"),
    ("vim", {"dim": 0}, "dim=0 is out of range; valid: 'auto' or an integer >= 1"),
    ("vim", {"dim": "half"}, "valid: 'auto' or an integer >= 1"),
    ("pca", {"k": 2.5}, "k=2.5 is out of range; valid: 'auto' or an integer >= 1"),
    ("pca", {"clip_percentile": 0}, "clip_percentile=0 is out of range; valid: a number in (0, 100]"),
    ("knn", {"k": 0}, "k=0 is out of range; valid: an integer >= 1"),
    ("knn", {"bank_fraction": 0}, "bank_fraction=0 is out of range; valid: a number in (0, 1]"),
    ("knn", {"bank_fraction": 1.5}, "valid: a number in (0, 1]"),
    ("nnguide", {"k": -3}, "k=-3 is out of range; valid: an integer >= 1"),
    ("nnguide", {"seed": -1}, "seed=-1 is out of range; valid: an integer >= 0"),
    ("fdbd", {"reduction": "max"}, "reduction='max' is out of range; valid: one of 'sum', 'mean'"),
    ("react", {"percentile": 150}, "percentile=150 is out of range; valid: a number in (0, 100]"),
    ("dice", {"p": 100}, "p=100 is out of range; valid: a number in [0, 100)"),
    ("ash", {"percentile": -5}, "valid: a number in [0, 100)"),
    ("scale", {"percentile": 100.0}, "valid: a number in [0, 100)"),
    ("vra", {"lower": 0.9, "upper": 0.5}, "lower=0.9 must not exceed upper=0.5"),
    ("vra", {"upper": 1.2}, "upper=1.2 is out of range; valid: a number in [0, 1]"),
    ("vra", {"gamma": -0.1}, "gamma=-0.1 is out of range; valid: a number >= 0"),
    ("vra_clip", {"lower": 0.99, "upper": 0.01}, "lower=0.99 must not exceed upper=0.01"),
    ("vra_clip", {"per_dimension": "yes"}, "valid: True or False"),
    ("nme", {"temperature": 0.0}, "temperature=0.0 is out of range; valid: a number > 0"),
    ("co", {"co_weight": 0}, "co_weight=0 is out of range; valid: a number > 0"),
    ("nme_co", {"temperature": float("nan")}, "valid: a number > 0"),
    ("mme", {"vra_lower": 0.5, "vra_upper": 0.2}, "vra_lower=0.5 must not exceed vra_upper=0.2"),
    ("mme", {"scale_percentile": 100}, "valid: a number in [0, 100)"),
    ("mme", {"log_mode": "exp"}, "valid: one of 'signed', 'clamp'"),
    ("mme", {"clamp_floor": 0}, "clamp_floor=0 is out of range; valid: a number > 0"),
    ("mme", {"co_weight": True}, "co_weight=True is out of range"),
    ("odin", {"temperature": 0}, "valid: a number > 0"),
    ("odin", {"eps": -0.001}, "eps=-0.001 is out of range; valid: a number >= 0"),
    ("odin", {"std": (0.2, 0.0, 0.2)}, "valid: None or a sequence of positive numbers"),
    ("odin", {"batch_size": 0}, "valid: an integer >= 1"),
]


@pytest.mark.parametrize("name, hparams, message", OUT_OF_RANGE,
                         ids=[f"{n}-{'-'.join(h)}" for n, h, _ in OUT_OF_RANGE])
def test_out_of_range_hyperparameters_fail_when_built_naming_detector_value_and_range(name, hparams, message):
    from ood_utils.detectors.ranges import HyperparameterError

    with pytest.raises(HyperparameterError) as err:
        get_detector(name, **hparams)
    assert f"detector {name!r}: " in str(err.value)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)  # callers that catch ValueError keep working


def test_every_hyperparameter_has_a_range_and_every_preset_is_inside_it():
    from ood_utils.detectors import TRUNCATIONS

    for entry in DETECTORS.values():
        declared = (TRUNCATIONS[entry.name] if entry.kind == "truncation" else entry.build).ranges
        assert set(declared) == set(entry.defaults), entry.name
        for preset in (None, *PRESETS):
            get_detector(entry.name, preset=preset)  # raises if a shipped value were out of range
    # the boundary values that are valid stay valid
    get_detector("react", percentile=100)
    get_detector("dice", p=0)
    get_detector("knn", bank_fraction=1.0, k=np.int64(5))
    get_detector("vra", lower=0.5, upper=0.5, gamma=0)


def test_presets_and_overrides():
    assert get_detector("dice", preset="imagenet").truncation.p == 70
    assert get_detector("dice", preset="cifar").truncation.p == 90
    assert get_detector("ash", preset="cifar").truncation.percentile == 95
    assert get_detector("knn", preset="imagenet").k == 1000
    mme = get_detector("mme", preset="cifar")
    assert (mme.temperature, mme.co_weight, mme.scale_percentile) == (0.1, 2.0, 90.0)
    assert get_detector("mme", preset="imagenet").temperature == 0.5
    assert get_detector("mme", preset="reference_imagenet").co_weight == 0.5
    assert get_detector("mme", preset="imagenet", temperature=1.0).temperature == 1.0
    assert get_detector("scale").truncation.percentile == 85  # stand-alone SCALE; MME uses 90 internally
    assert "mme" in PRESETS["cifar"] and "dice" in PRESETS["imagenet"]


def test_describe_table():
    rows = describe()
    assert {r["name"] for r in rows} == set(DETECTORS)
    cols = {"name", "title", "kind", "description", "defaults", "cifar", "imagenet", "public code"}
    assert all(set(r) == cols for r in rows)
    md = describe_markdown()
    assert md.count("\n") == len(rows) + 1 and "| mme | MME |" in md
    assert "KL(softmax \\|\\| mean" in md  # a | inside a cell is escaped, not a column break
    mme = next(r for r in rows if r["name"] == "mme")
    assert "temperature=0.1" in mme["cifar"] and "temperature=0.5" in mme["imagenet"]
    assert "reference_imagenet: temperature=0.5, co_weight=0.5" in mme["public code"]


def test_readme_table_is_generated_from_the_code():
    """The README's detector table is describe_markdown() verbatim: regenerate it with
    `python -m ood_utils.detectors --readme README.md` after changing a name, default or preset."""
    text = README.read_text()
    assert readme_table(text) == describe_markdown()
    assert with_readme_table(text) == text
    assert text.count("| mme | MME |") == 1  # one table


def test_presets_are_documented_and_name_public_code_divergences():
    assert set(PRESETS) == set(PRESET_NOTES) == {"cifar", "imagenet", "reference_imagenet", "openood"}
    assert get_detector("react", preset="reference_imagenet").truncation.percentile == 99  # ViM-style code
    assert get_detector("react", preset="imagenet").truncation.percentile == 90
    gen = get_detector("gen", preset="reference_imagenet")
    assert (gen.gamma, gen.M) == (0.01, 10)
    assert get_detector("co", preset="reference_imagenet").co_weight == 0.5
    assert get_detector("nnguide", preset="openood").k == 100 and get_detector("nnguide").k == 10
    assert get_detector("mme", preset="openood").scale_percentile == 85
    # composing uses the truncation's own preset
    assert get_detector("vim", truncation="react", preset="reference_imagenet").truncation.percentile == 99


def test_score_before_fit_and_shape_errors(data):
    det = get_detector("vim")
    with pytest.raises(NotFittedError, match="fit"):
        det.score(data["X_id"])
    X, L, y, W, b = data["X"], data["L"], data["y"], data["W"], data["b"]
    with pytest.raises(ValueError, match=r"W must have shape \(C, D=64\)"):
        det.fit(X, L, y, W.T, b)
    with pytest.raises(ValueError, match=r"b must have shape"):
        det.fit(X, L, y, W, b[:-1])
    with pytest.raises(ValueError, match=r"logits must have shape \(N=500, C=10\)"):
        det.fit(X, L[:, :-1], y, W, b)
    with pytest.raises(ValueError, match=r"labels must have shape \(N=500,\)"):
        det.fit(X, L, y[:-1], W, b)
    with pytest.raises(ValueError, match=r"feats must have shape \(N, D\)"):
        det.fit(X[:, :, None], L, y, W, b)
    with pytest.raises(ValueError, match="labels must lie in"):
        det.fit(X, L, y + C, W, b)
    with pytest.raises(ValueError, match="needs the training labels"):
        get_detector("mahalanobis").fit(X, L, None, W, b)
    det.fit(X, L, y, W, b)
    with pytest.raises(ValueError, match=r"feats must have shape \(N, D=64\)"):
        det.score(X[:, :32])
    with pytest.raises(ValueError, match=r"logits must have shape \(N=500, C=10\)"):
        det.score(X, L[:, :3])


@pytest.mark.parametrize("name", feature_detectors())
def test_torch_inputs_and_missing_logits_match_numpy(name, data):
    kw = {"bank_fraction": 1.0} if name == "nnguide" else {}
    a = fit(get_detector(name, **kw), data).score(data["X_ood"])  # test logits computed from W, b
    det = get_detector(name, **kw).fit(*(torch.from_numpy(data[k]) for k in ("X", "L", "y", "W", "b")))
    b = det.score(torch.from_numpy(data["X_ood"]), torch.from_numpy(data["X_ood"] @ data["W"].T + data["b"]))
    c = get_detector(name, **kw).fit(data["X"], None, data["y"], data["W"], data["b"]).score(data["X_ood"])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)


def test_logit_only_detectors_do_not_read_the_training_features(data):
    """Fitting MSP, MLS, Energy or GEN costs nothing: the features are shape-checked, never scanned."""
    X = data["X"].copy()
    X[0, 0] = np.nan
    for name in ("msp", "mls", "energy", "gen"):
        get_detector(name).fit(X, data["L"], data["y"], data["W"], data["b"])
    with pytest.raises(ValueError, match="feats contains NaN"):
        get_detector("vim").fit(X, data["L"], data["y"], data["W"], data["b"])
    L = data["L"].copy()
    L[3, 1] = np.inf
    with pytest.raises(ValueError, match="logits contains NaN or inf"):
        get_detector("kl").fit(data["X"], L, data["y"], data["W"], data["b"])


@pytest.mark.parametrize("name", feature_detectors())
def test_scores_do_not_depend_on_the_block_size(name, data, monkeypatch):
    """Every streaming pass gives the same scores with 7-row blocks as with the default blocks."""
    kw = {"bank_fraction": 1.0} if name == "nnguide" else {}
    Z = np.concatenate([data["X_id"], data["X_ood"]])
    expected = fit(get_detector(name, **kw), data).score(Z)
    monkeypatch.setattr(nx, "ROW_BLOCK", 7)
    monkeypatch.setattr(nx, "BLOCK_BYTES", 4 * 7 * (2 * D + 2 * C))
    got = fit(get_detector(name, **kw), data).score(Z)
    # float32 block products round differently with other block sizes; ViM's residual space (eigenvectors
    # inside a bulk of nearly equal eigenvalues here) amplifies that by 1 / eigengap
    tol = 1e-4 if name in ("vim", "pca", "mme") else 1e-6
    np.testing.assert_allclose(got, expected, rtol=10 * tol, atol=tol)


def _peak_rss_growth_mb(run) -> float:
    """Peak resident memory added while ``run()`` runs (MB), from the kernel's VmHWM counter."""
    with open("/proc/self/clear_refs", "w") as fh:  # resets VmHWM to the current RSS
        fh.write("5")
    status = lambda key: int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])  # noqa: E731
    before = status("VmRSS:")
    run()
    return (status("VmHWM:") - before) / 1024


def test_no_detector_builds_an_n_by_n_train_matrix(monkeypatch):
    """20k training and 20k test features: a 20k x 20k float32 matrix would take 1.6 GB. With 8 MB blocks
    every detector (KNN's distances and NNGuide's similarities included) stays far below that."""
    try:
        open("/proc/self/clear_refs", "w").close()
    except OSError:
        pytest.skip("cannot reset the peak-RSS counter here")
    monkeypatch.setattr(nx, "BLOCK_BYTES", 8 * 2**20)
    big = make_data(seed=5, n=20_000, d=16, c=10)
    Z = np.maximum(np.random.default_rng(6).normal(size=(20_000, 16)), 0).astype(np.float32)
    for name in feature_detectors():
        kw = {"bank_fraction": 1.0} if name == "nnguide" else {}
        det = get_detector(name, **kw)
        grown = _peak_rss_growth_mb(lambda: det.fit(big["X"], big["L"], big["y"], big["W"], big["b"]).score(Z))
        assert grown < 300, f"{name}: peak memory grew by {grown:.0f} MB"


def test_truncation_composes_with_any_score(data):
    """vim + vra_clip == ViM fitted on raw features, scored on clipped features and their logits."""
    composed = fit(get_detector("vim", truncation="vra_clip"), data).score(data["X_ood"])
    plain = fit(get_detector("vim"), data)
    lo, hi = np.quantile(data["X"], [0.01, 0.99])
    z = np.clip(data["X_ood"], lo, hi)
    np.testing.assert_allclose(composed, plain.score(z, z @ data["W"].T + data["b"]), rtol=1e-5)
    # DICE changes the head, not the features: energy of the masked head
    react_mls = fit(get_detector("mls", truncation=get_truncation("react", percentile=99)), data)
    thr = np.quantile(data["X"], 0.99)
    expected = (np.minimum(data["X_ood"], thr) @ data["W"].T + data["b"]).max(axis=1)
    np.testing.assert_allclose(react_mls.score(data["X_ood"]), expected, rtol=1e-5)


def test_narrow_features_scale_vim_dim_and_pca_k(data):
    from ood_utils.detectors import pca_k, vim_dim
    assert (vim_dim(2048), vim_dim(768), vim_dim(342), vim_dim(64)) == (1000, 512, 171, 32)
    assert (pca_k(2048), pca_k(342), pca_k(341), pca_k(64)) == (256, 256, 170, 32)   # 342: DenseNet, as published
    vim, pca, mme = (fit(get_detector(n), data) for n in ("vim", "pca", "mme"))
    assert vim.NS_.shape == (D, D - 32) and pca.U_.shape == (D, 32) and mme.U_.shape == (D, 32)
    with pytest.raises(ValueError, match="dim=64 must satisfy"):
        fit(get_detector("vim", dim=64), data)


# ------------------------------------------------------------------------------- float64 transcriptions
def _lse(x):
    m = x.max(axis=1, keepdims=True)
    return m[:, 0] + np.log(np.exp(x - m).sum(axis=1))


def mme_reference(X, L, y, W, b, Z, T, lam, p=90.0):
    """Eq. (7) with the reference components, written directly in float64 (no logs, no blocks)."""
    X, W, b, Z = (a.astype(np.float64) for a in (X, W, b, Z))
    c, d = W.shape
    # SCALE logits (p = 90)
    k = d - int(np.round(d * p / 100))
    ratio = Z.sum(1) / np.sort(Z, axis=1)[:, -k:].sum(1)
    l_scale = (Z * np.exp(ratio)[:, None]) @ W.T + b
    # VRA: two-sided clip to scalar quantiles
    lo, hi = np.quantile(X, [0.01, 0.99])
    zv = np.clip(Z, lo, hi)
    lv = zv @ W.T + b
    # ViM virtual logit on VRA features; NS and alpha on raw features
    dim = d // 2
    u = -np.linalg.pinv(W) @ b
    cov = (X - u).T @ (X - u) / len(X)
    vals, vecs = np.linalg.eigh(cov)
    NS = vecs[:, np.argsort(-vals)[dim:]]
    alpha = (X @ W.T + b).max(1).mean() / np.linalg.norm((X - u) @ NS, axis=1).mean()
    v = alpha * np.linalg.norm((zv - u) @ NS, axis=1)
    # PCA (1 - r), k = min(256, D/2)
    mu = X.mean(0)
    U = np.linalg.svd(np.cov(X.T))[0][:, : min(256, d // 2)]
    r = np.linalg.norm((zv - mu) @ (np.eye(d) - U @ U.T), axis=1) / np.linalg.norm(zv, axis=1)
    # fDBD on VRA logits
    pred = lv.argmax(1)
    fd = np.zeros(len(Z))
    for i in range(len(Z)):
        for j in range(c):
            if j != pred[i]:
                fd[i] += abs(lv[i, j] - lv[i, pred[i]]) / np.linalg.norm(W[j] - W[pred[i]])
    fd /= np.linalg.norm(zv - mu, axis=1)
    # NME+ on raw normalised features
    Xn = X / (np.linalg.norm(X, axis=1, keepdims=True) + 1e-8)
    means = np.stack([Xn[y == j].mean(0) for j in range(c)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    Zn = Z / (np.linalg.norm(Z, axis=1, keepdims=True) + 1e-8)
    dist = ((Zn[:, None, :] - means[None]) ** 2).sum(-1)
    sm = np.exp(dist / T) / np.exp(dist / T).sum(1, keepdims=True)
    nme = (1 / sm).max(1)
    co = np.where(l_scale.argmax(1) == dist.argmin(1), lam, 1.0)
    expo = _lse(l_scale) - v
    parts = dict(scale_energy=_lse(l_scale), virtual_logit=v, fdbd=fd, one_minus_r=1 - r, log_nme=np.log(nme), co=co)
    return np.exp(expo) * fd * (1 - r) * co * nme, expo, parts


@pytest.mark.parametrize("preset,T,lam", [("cifar", 0.1, 2.0), ("imagenet", 0.5, 2.0), ("reference_imagenet", 0.5, 0.5)])
def test_mme_matches_direct_float64_transcription(preset, T, lam, data):
    det = fit(get_detector("mme", preset=preset), data)
    Z = np.concatenate([data["X_id"], data["X_ood"]])
    got = det.score(Z, Z @ data["W"].T + data["b"])
    mme, expo, parts = mme_reference(data["X"], data["L"], data["y"], data["W"], data["b"], Z, T, lam)
    for key, ref in parts.items():
        np.testing.assert_allclose(det.last_components[key], ref, rtol=2e-5, atol=2e-5, err_msg=key)
    expected = np.sign(mme) * np.log1p(np.abs(mme))
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-4)
    assert det.last_overflow_count == int((expo > 88.7228).sum())


def extreme_data(data):
    """The head scaled so that logits reach 1e4 in magnitude, two all-zero training features, and test
    features with an all-zero row at index 20."""
    W = data["W"] * 2000.0
    X = data["X"].copy()
    X[:2] = 0.0
    L = X @ W.T + data["b"]
    Z = np.concatenate([data["X_id"][:20], np.zeros((1, D), np.float32), data["X_ood"][:20]])
    LZ = Z @ W.T + data["b"]
    return W, X, L, Z, LZ


@pytest.mark.parametrize("name", feature_detectors())
def test_every_detector_is_finite_on_huge_logits_and_zero_features(name, data):
    W, X, L, Z, LZ = extreme_data(data)
    kw = {"bank_fraction": 1.0} if name == "nnguide" else {}
    det = get_detector(name, **kw).fit(X, L, data["y"], W, data["b"])
    s = det.score(Z, LZ)
    assert s.shape == (41,) and np.all(np.isfinite(s))


def test_mme_extreme_inputs_stay_finite_and_count_overflows(data):
    """Logits of magnitude 1e4 and an all-zero feature: the float32 reference overflows; the kit does not."""
    W, X, L, Z, LZ = extreme_data(data)
    assert np.abs(LZ).max() >= 1e4 and np.abs(L).max() >= 1e4
    for mode in ("signed", "clamp"):
        det = get_detector("mme", preset="cifar", log_mode=mode).fit(X, L, data["y"], W, data["b"])
        s = det.score(Z, LZ)
        assert np.all(np.isfinite(s)) and s.shape == (41,)
        for key, value in det.last_components.items():
            assert np.all(np.isfinite(value) | (key == "log_abs")), key
        assert det.last_overflow_count > 0
        with np.errstate(over="ignore"):
            expo32 = (np.float32(det.last_components["scale_energy"]) - np.float32(det.last_components["virtual_logit"]))
            assert det.last_overflow_count == int(np.isinf(np.exp(expo32)).sum())
    # the zero feature: (1 - r) < 0, so its MME is negative and it ranks below every positive-MME sample
    det = get_detector("mme", preset="cifar").fit(X, L, data["y"], W, data["b"])
    s = det.score(Z, LZ)
    assert det.last_components["one_minus_r"][20] < 0 and s[20] < 0
    assert np.all(s[det.last_components["sign"] > 0] > s[20])


def test_signed_log_is_finite_and_order_preserving():
    x_log_abs = np.array([700.0, 1.6, -700.0, -np.inf, -700.0, 1.1, 700.0, 800.0])
    sign = np.array([-1.0, -1.0, -1.0, 0.0, 1.0, 1.0, 1.0, 1.0])  # x increasing from -e^700 to e^800
    s = nx.signed_log1p_from_log(x_log_abs, sign)
    assert np.all(np.isfinite(s)) and np.all(np.diff(s) > 0)
    np.testing.assert_allclose(s[-1], 800.0)  # = log x for large positive x
    np.testing.assert_allclose(s[5], np.log1p(np.exp(1.1)))


def test_mme_clamp_mode_is_exact_log_mme_when_factors_are_positive(data):
    det = fit(get_detector("mme", preset="cifar", log_mode="clamp"), data)
    s = det.score(data["X_id"])
    c = det.last_components
    assert np.all(c["one_minus_r"] > 1e-12) and np.all(c["fdbd"] > 1e-12)
    log_mme = c["scale_energy"] - c["virtual_logit"] + c["log_nme"] + np.log(c["co"]) + np.log(c["one_minus_r"]) + np.log(c["fdbd"])
    np.testing.assert_allclose(s, log_mme, rtol=1e-12)


def test_nme_plus_and_co_plus_transcription(data):
    Z = data["X_ood"]
    X, y = data["X"].astype(np.float64), data["y"]
    Xn = X / (np.linalg.norm(X, axis=1, keepdims=True) + 1e-8)
    means = np.stack([Xn[y == j].mean(0) for j in range(C)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    Zn = Z / (np.linalg.norm(Z, axis=1, keepdims=True) + 1e-8)
    dist = ((Zn[:, None, :] - means[None]) ** 2).sum(-1)
    sm = np.exp(dist / 0.1) / np.exp(dist / 0.1).sum(1, keepdims=True)
    nme = (1 / sm).max(1)
    lz = Z @ data["W"].T + data["b"]
    agree = lz.argmax(1) == dist.argmin(1)
    np.testing.assert_allclose(fit(get_detector("nme", preset="cifar"), data).score(Z), np.log(nme), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fit(get_detector("nme_co", preset="cifar"), data).score(Z, lz),
                               np.log(nme * np.where(agree, 2.0, 1.0)), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(fit(get_detector("co"), data).score(Z, lz), np.where(agree, 2.0, 1.0))


def test_pca_transcription(data):
    """Guan et al.: E(W clip(z) + b) (1 - r), r on the clipped feature, U_k of the training covariance."""
    X, W, b, Z = (data[k].astype(np.float64) for k in ("X", "W", "b", "X_ood"))
    thr = np.quantile(X, 0.9)
    zc = np.minimum(Z, thr)
    mu = X.mean(0)
    U = np.linalg.svd(np.cov(X.T))[0][:, :32]
    r = np.linalg.norm((zc - mu) @ (np.eye(D) - U @ U.T), axis=1) / np.linalg.norm(zc, axis=1)
    expected = _lse(zc @ W.T + b) * (1 - r)
    np.testing.assert_allclose(fit(get_detector("pca"), data).score(data["X_ood"]), expected, rtol=2e-5, atol=1e-5)


def test_original_vra_transcription(data):
    X, Z = data["X"], data["X_ood"]
    lo, hi = np.quantile(X, 0.6, axis=0), np.quantile(X, 0.95, axis=0)
    g = np.where(Z < lo, 0.0, Z + 0.5)
    g = np.where(Z > hi, hi, g)
    expected = _lse(g @ data["W"].T.astype(np.float64) + data["b"])
    np.testing.assert_allclose(fit(get_detector("vra"), data).score(Z), expected, rtol=1e-5)


def test_gen_top_m_and_kl_transcription(data):
    L = (data["X_ood"] @ data["W"].T + data["b"]).astype(np.float64)
    p = np.exp(L - _lse(L)[:, None])
    top = np.sort(p, axis=1)[:, -3:]
    expected = -(top ** 0.1 * (1 - top) ** 0.1).sum(1)
    np.testing.assert_allclose(fit(get_detector("gen", M=3), data).score(data["X_ood"]), expected, rtol=1e-6)


# ------------------------------------------------------------------------------------- numerical helpers
def test_streaming_statistics_match_numpy():
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(3000, 40)) * 0.5 + 30.0).astype(np.float32)  # large mean: cancellation-prone
    y = rng.integers(0, 5, 3000)
    mean, scatter, cm, counts = nx.mean_and_scatter(X, y, 5)
    X64 = X.astype(np.float64)
    np.testing.assert_allclose(mean, X64.mean(0), rtol=1e-12)
    np.testing.assert_allclose(scatter / 2999, np.cov(X64.T), rtol=1e-5, atol=1e-7)
    # class sums: float32 per block of mean-shifted rows, float64 across blocks
    np.testing.assert_allclose(cm, np.stack([X64[y == j].mean(0) for j in range(5)]), rtol=1e-9)


def test_exact_quantile_without_copy_matches_numpy():
    X = np.random.default_rng(2).gamma(1.0, size=(2100, 2000)).astype(np.float32)  # 4.2M entries
    for q in (0.01, 0.5, 0.9, 0.99):
        assert nx.quantile(X, q) == pytest.approx(float(np.quantile(X, q)), rel=1e-7)


def test_exact_quantiles_with_ties_and_extremes():
    """Over 4M entries (the streaming path): ReLU zeros (ties at the lower bracket end), rounded values
    (ties everywhere), q = 0 and q = 1."""
    rng = np.random.default_rng(4)
    qs = [0.0, 0.01, 0.3, 0.5, 0.9, 0.99, 1.0]
    for X in (np.maximum(rng.normal(size=(2100, 2000)), 0), np.round(rng.normal(size=(2100, 2000)) * 3)):
        X = X.astype(np.float32)
        assert nx.quantiles(X, qs) == [float(v) for v in np.quantile(X, qs)]


def test_pinv_solve_matches_numpy_pinv():
    rng = np.random.default_rng(5)
    W = rng.normal(size=(10, 64))
    b = rng.normal(size=10)
    np.testing.assert_allclose(nx.pinv_solve(W, b), np.linalg.pinv(W) @ b, rtol=1e-10, atol=1e-12)
    W[5] = W[2]  # rank-deficient head: the minimum-norm solution, as pinv
    np.testing.assert_allclose(nx.pinv_solve(W, b), np.linalg.pinv(W) @ b, rtol=1e-8, atol=1e-10)


def test_mahalanobis_with_a_singular_covariance_uses_the_pseudo_inverse(data):
    """40 training samples in 64 dimensions: the shared covariance is singular (sklearn-style pinvh)."""
    X, y = data["X"][:40].astype(np.float64), data["y"][:40]
    present = np.unique(y)
    means = np.stack([X[y == k].mean(0) for k in present])
    centred = X - means[np.searchsorted(present, y)]
    prec = np.linalg.pinv(centred.T @ centred / len(X), hermitian=True)
    Z = data["X_ood"].astype(np.float64)
    diff = Z[:, None, :] - means[None]
    expected = -np.einsum("nkd,de,nke->nk", diff, prec, diff).min(axis=1)
    det = get_detector("mahalanobis").fit(data["X"][:40], data["L"][:40], y, data["W"], data["b"])
    np.testing.assert_allclose(det.score(data["X_ood"]), expected, rtol=1e-3)


def test_kth_similarity_blocks_match_dense(monkeypatch):
    rng = np.random.default_rng(3)
    q, bank = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(300, 8)).astype(np.float32)
    monkeypatch.setattr(nx, "BLOCK_BYTES", 4 * 300 * 7)  # 7 query rows per block
    got = nx.kth_largest_similarity(q, bank, 5)
    np.testing.assert_allclose(got, np.sort(q @ bank.T, axis=1)[:, -5], rtol=1e-6)


def test_odin_scores_inputs():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5)).eval()
    x = torch.randn(7, 3, 4, 4)
    det = get_detector("odin", preset="cifar")
    with pytest.raises(NotFittedError):
        det.score_inputs(model, x)
    s = det.fit().score_inputs(model, x)
    assert s.shape == (7,) and s.dtype == np.float64 and np.all((s > 0) & (s <= 1))
    with pytest.raises(TypeError, match="score_inputs"):
        det.score(np.zeros((2, 3)))
