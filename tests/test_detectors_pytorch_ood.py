"""Cross-check the kit's detectors against an independent implementation, pytorch-ood 0.4.0.

pytorch-ood returns outlier scores (higher = more OOD), so the kit's score is compared with their NEGATED
score, times a known constant where the definitions differ only by a positive factor:
- Mahalanobis: their covariance is the un-normalised scatter (sum, not mean) and their score is half the
  distance, so kit = -2 N x theirs (N training samples; their 1e-6 ridge is negligible here);
- GEN: they average over the top-M probabilities, the reference sums: kit = -M x theirs;
- fDBD: they divide by C - 1 (a mean over classes), the reference sums: kit(reduction="mean") = -theirs;
- VRA: their "VRA" is a two-sided clip to per-dimension quantiles, which is neither the original VRA nor
  MME's scalar clip: it is compared with the kit's ``vra_clip`` with ``per_dimension=True``; the original
  VRA and MME's clip are checked against float64 transcriptions in test_detectors.py.
- ViM: earlier pytorch-ood versions clipped the logits to +-100 before the energy; 0.4.0 does not, and
  the two agree also for logits in the hundreds (``test_vim_large_logits``).
- NNGuide: their bank is whatever they are fitted on; fitted on the kit's random 1% (here 20%) subset of
  the training rows, the two agree.
Not in pytorch-ood 0.4: PCA (Guan et al.), the original VRA, NME+, CO+, MME (float64 transcriptions in
test_detectors.py).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ood_utils.detectors import get_detector, get_truncation

pod = pytest.importorskip("pytorch_ood")
from pytorch_ood import detector as P  # noqa: E402

from test_detectors import make_data  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def d():
    data = make_data(seed=1)
    data["Z"] = np.concatenate([data["X_id"], data["X_ood"]])
    data["LZ"] = (data["Z"] @ data["W"].T + data["b"]).astype(np.float32)
    data["head"] = head(data["W"], data["b"])
    data["t"] = {k: torch.from_numpy(np.ascontiguousarray(data[k])) for k in ("X", "L", "y", "W", "b", "Z", "LZ")}
    return data


def head(W, b):
    lin = torch.nn.Linear(W.shape[1], W.shape[0])
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W))
        lin.bias.copy_(torch.from_numpy(b))
    return lin


def flat_head(lin):
    """pytorch-ood's feature-map detectors pass (N, D, 1, 1) maps to the head."""
    return lambda x: lin(x.flatten(1))


def kit(name, d, **kw):
    det = get_detector(name, **kw).fit(d["X"], d["L"], d["y"], d["W"], d["b"])
    return det.score(d["Z"], d["LZ"])


def close(ours, theirs, rtol=1e-5):
    theirs = np.asarray(theirs.detach().numpy() if hasattr(theirs, "detach") else theirs, dtype=np.float64)
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * np.abs(theirs).max())


@torch.no_grad()
def test_logit_scores(d):
    LZ = d["t"]["LZ"]
    close(kit("msp", d), -P.MaxSoftmax.score(LZ))
    close(kit("mls", d), -P.MaxLogit.score(LZ))
    close(kit("energy", d), -P.EnergyBased.score(LZ))
    close(kit("gen", d), -C_(d) * P.GEN.score(LZ, gamma=0.1, M=None))  # M=100 > C: all classes
    close(kit("gen", d, M=4, gamma=0.3), -4 * P.GEN.score(LZ, gamma=0.3, M=4))


def C_(d):
    return d["W"].shape[0]


@torch.no_grad()
def test_kl_matching(d):
    ref = P.KLMatching(None).fit_logits(d["t"]["L"], d["t"]["y"])
    close(kit("kl", d), -ref.predict_logits(d["t"]["LZ"]), rtol=1e-4)


@torch.no_grad()
def test_mahalanobis(d):
    ref = P.Mahalanobis(None).fit_features(d["t"]["X"], d["t"]["y"])
    n = d["X"].shape[0]
    close(kit("mahalanobis", d), -2 * n * ref.predict_features(d["t"]["Z"]).double(), rtol=1e-4)


@torch.no_grad()
def test_vim(d):
    ref = P.ViM(None, d=32, w=d["t"]["W"], b=d["t"]["b"]).fit_features(d["t"]["X"], d["t"]["y"])
    close(kit("vim", d), -ref.predict_features(d["t"]["Z"]), rtol=1e-4)
    ref = P.ViM(None, d=20, w=d["t"]["W"], b=d["t"]["b"]).fit_features(d["t"]["X"], d["t"]["y"])
    close(kit("vim", d, dim=20), -ref.predict_features(d["t"]["Z"]), rtol=1e-4)


@torch.no_grad()
def test_vim_large_logits(d):
    """A head 30x larger: logits in the hundreds, where a +-100 clip would change the energy."""
    W = d["t"]["W"] * 30
    L = d["t"]["X"] @ W.T + d["t"]["b"]
    LZ = d["t"]["Z"] @ W.T + d["t"]["b"]
    assert float(LZ.abs().max()) > 200
    ref = P.ViM(None, d=32, w=W, b=d["t"]["b"]).fit_features(d["t"]["X"], d["t"]["y"])
    ours = get_detector("vim").fit(d["X"], L.numpy(), d["y"], W.numpy(), d["b"]).score(d["Z"], LZ.numpy())
    close(ours, -ref.predict_features(d["t"]["Z"]), rtol=1e-4)


@torch.no_grad()
def test_she(d):
    ref = P.SHE(None, d["head"]).fit_features(d["t"]["X"], d["t"]["y"])
    close(kit("she", d), -ref.predict_features(d["t"]["Z"]))


@torch.no_grad()
def test_knn(d):
    ref = P.KNN(None, k=50).fit_features(d["t"]["X"], d["t"]["y"])
    close(kit("knn", d, k=50), -ref.predict_features(d["t"]["Z"]), rtol=1e-4)


@torch.no_grad()
def test_nnguide_full_bank(d):
    ref = P.NNGuide(None, d["head"], k=10).fit_features(d["t"]["X"], d["t"]["y"])
    close(kit("nnguide", d, k=10, bank_fraction=1.0), -ref.predict_features(d["t"]["Z"]), rtol=1e-4)


@torch.no_grad()
def test_nnguide_random_bank(d):
    """The kit's bank is a seeded random subset of the training rows; pytorch-ood fitted on the same rows."""
    from ood_utils.detectors.scores import _bank_indices

    idx = _bank_indices(d["X"].shape[0], 0.2, seed=3)
    ref = P.NNGuide(None, d["head"], k=10).fit_features(d["t"]["X"][idx], d["t"]["y"][idx])
    close(kit("nnguide", d, k=10, bank_fraction=0.2, seed=3), -ref.predict_features(d["t"]["Z"]), rtol=1e-4)


@torch.no_grad()
def test_fdbd(d):
    ref = P.fDBD(None, d["head"]).fit_features(d["t"]["X"])
    theirs = -ref.predict_features(d["t"]["Z"])
    close(kit("fdbd", d, reduction="mean"), theirs, rtol=1e-4)
    close(kit("fdbd", d), (C_(d) - 1) * theirs.double(), rtol=1e-4)


@torch.no_grad()
def test_react(d):
    ref = P.ReAct(None, d["head"], percentile=0.9)
    ref.fit_feature_maps(d["t"]["X"], d["t"]["y"])
    close(kit("react", d), -ref.predict_feature_maps(d["t"]["Z"]))
    # any scoring function on top, e.g. MaxLogit
    ref = P.ReAct(None, d["head"], percentile=0.99, detector=P.MaxLogit.score)
    ref.fit_feature_maps(d["t"]["X"], d["t"]["y"])
    close(kit("mls", d, truncation=get_truncation("react", percentile=99)), -ref.predict_feature_maps(d["t"]["Z"]))


@torch.no_grad()
def test_dice(d):
    for p in (90, 70):
        ref = P.DICE(None, d["t"]["W"], d["t"]["b"], p=p / 100).fit_features(d["t"]["X"], d["t"]["y"])
        close(kit("dice", d, p=p), -ref.predict_features(d["t"]["Z"]))


@torch.no_grad()
def test_ash_s_and_scale(d):
    maps = d["t"]["Z"][:, :, None, None]
    for p in (95, 90):
        ref = P.ASH(None, flat_head(d["head"]), variant="ash-s", percentile=p / 100)
        close(kit("ash", d, percentile=p), -ref.predict_feature_maps(maps.clone()), rtol=1e-4)
    for p in (85, 90):
        ref = P.SCALE(None, flat_head(d["head"]), percentile=p / 100)
        close(kit("scale", d, percentile=p), -ref.predict_feature_maps(maps.clone()), rtol=1e-4)


@torch.no_grad()
def test_vra_per_dimension_clip(d):
    ref = P.VRA(None, d["head"], lower_percentile=0.01, upper_percentile=0.99)
    ref.fit_feature_maps(d["t"]["X"], d["t"]["y"])
    close(kit("vra_clip", d, per_dimension=True), -ref.predict_feature_maps(d["t"]["Z"]))


@torch.no_grad()
def test_truncation_then_score_matches_their_composition(d):
    """ViM on VRA-clipped features equals pytorch-ood's ViM fitted on raw and applied to clipped features."""
    lo, hi = np.quantile(d["X"], [0.01, 0.99])
    ref = P.ViM(None, d=32, w=d["t"]["W"], b=d["t"]["b"]).fit_features(d["t"]["X"], d["t"]["y"])
    theirs = -ref.predict_features(torch.from_numpy(np.clip(d["Z"], lo, hi)))
    close(kit("vim", d, truncation="vra_clip"), theirs, rtol=1e-4)


def test_odin(d):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 5)).eval()
    x = torch.randn(9, 3, 8, 8)
    std = (0.2470, 0.2435, 0.2616)
    ours = get_detector("odin", preset="cifar").fit().score_inputs(model, x)
    theirs = P.ODIN(model, eps=0.0014, temperature=1000.0, norm_std=list(std)).predict(x)
    close(ours, -theirs.double(), rtol=1e-5)
