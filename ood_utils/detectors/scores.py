"""Scoring functions: one number per sample from its features and/or logits, higher = more ID.

Notation: z penultimate feature (D), l = W z + b logits (C), E(l) = logsumexp(l) the (negative) energy.
The definitions follow the reference code the MME paper used (see the docstrings for each choice);
``tests/test_detectors.py`` checks them against pytorch-ood or against a direct float64 transcription.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from . import _numerics as nx
from . import ranges as rg
from ..threads import one_cpu_thread
from .base import Detector

#: smallest positive float32: stands in for a zero norm or distance in a denominator
TINY = float(np.finfo(np.float32).tiny)


def vim_dim(d: int) -> int:
    """ViM's principal dimension: 1000 if D >= 2048, 512 if D >= 768, else D/2 (ViM reference code).

    The first two values assume wide features; a narrow penultimate layer (e.g. a small CNN's 64-d) keeps
    half of its dimensions, so a residual space always exists."""
    if d >= 2048:
        return 1000
    if d >= 768:
        return 512
    return d // 2


#: DenseNet-BC-100's penultimate width, the narrowest on which the papers' code keeps PCA's k = 256
PCA_WIDE = 342


def pca_k(d: int) -> int:
    """PCA's number of principal directions: 256 (Guan et al.; MME's public code, DenseNet's 342 dims
    included); a penultimate layer narrower than :data:`PCA_WIDE` (e.g. a small CNN's 128-d) keeps half of
    its dimensions, so the residual space is never empty."""
    return 256 if d >= PCA_WIDE else d // 2


def _resolve(value, auto, d: int, name: str) -> int:
    k = auto(d) if value == "auto" else int(value)
    if not 0 < k < d:
        raise ValueError(f"{name}={k} must satisfy 0 < {name} < D={d}")
    return k


# ------------------------------------------------------------------------------------ logit-only scores
class MSP(Detector):
    """Maximum softmax probability (Hendrycks & Gimpel 2017): max_c softmax(l / T)_c."""

    name, title = "msp", "MSP"
    summary = "maximum softmax probability"
    defaults = {"temperature": 1.0}
    ranges = {"temperature": rg.positive}
    fit_inputs = ()

    def _fit(self, feats, logits, labels, W, b):
        pass

    def _score(self, feats, logits):
        return nx.max_softmax(logits, 1.0 / self.temperature)


class MLS(Detector):
    """Maximum logit score (Hendrycks et al. 2022): max_c l_c."""

    name, title = "mls", "MLS"
    summary = "maximum logit"
    fit_inputs = ()

    def _fit(self, feats, logits, labels, W, b):
        pass

    def _score(self, feats, logits):
        return nx.row_max(logits)


class Energy(Detector):
    """Energy score (Liu et al. 2020): T logsumexp(l / T), T = 1."""

    name, title = "energy", "Energy"
    summary = "negative free energy T log sum exp(l/T)"
    defaults = {"temperature": 1.0}
    ranges = {"temperature": rg.positive}
    fit_inputs = ()

    def _fit(self, feats, logits, labels, W, b):
        pass

    def _score(self, feats, logits):
        return self.temperature * nx.logsumexp(logits, 1.0 / self.temperature)


class KLMatching(Detector):
    """KL matching (Hendrycks et al. 2022): templates d_k = mean softmax of the training samples *predicted*
    as k (no labels needed); score = -min_k KL(p || d_k) over the classes predicted at least once."""

    name, title = "kl", "KL matching"
    summary = "-min_k KL(softmax || mean softmax of samples predicted k)"
    fit_inputs = ("logits",)

    def _fit(self, feats, logits, labels, W, b):
        c = logits.shape[1]
        sums = np.zeros((c, c), dtype=np.float64)
        counts = np.zeros(c, dtype=np.float64)
        for s in nx.row_blocks(logits.shape[0], c):
            p = torch.softmax(nx.t(logits[s]), dim=1)
            pred = p.argmax(dim=1)
            # per-block class sums in float32 (a few rows per class), accumulated in float64
            sums += torch.zeros((c, c)).index_add_(0, pred, p).numpy()
            counts += np.bincount(pred.numpy(), minlength=c)
        seen = counts > 0
        templates = sums[seen] / counts[seen, None]
        # log 0 -> log(tiny) ~ -708: a class the template never predicts costs a huge but finite KL
        log_templates = np.log(np.maximum(templates, np.finfo(np.float64).tiny))
        self.log_templates_ = np.ascontiguousarray(log_templates.T, dtype=np.float32)  # C x K

    def _score(self, feats, logits):
        out = np.empty(logits.shape[0], dtype=np.float64)
        log_d = nx.t(self.log_templates_)
        for s in nx.row_blocks(logits.shape[0], logits.shape[1]):
            l = nx.t(logits[s])
            logp = l - nx.lse_rows(l)[:, None]  # log_softmax, without exp's slow path (see lse_rows)
            p = torch.softmax(l, dim=1)
            # sum p log p: logp is finite for finite logits, so an underflowed p gives 0 * finite = 0
            neg_entropy = (p * logp).sum(dim=1)
            kl = neg_entropy[:, None] - p @ log_d
            out[s] = -kl.amin(dim=1).numpy()
        return out


class GEN(Detector):
    """Generalized entropy (Liu et al. 2023): -sum over the M largest probabilities of p^g (1 - p)^g,
    g = 0.1, M = 100 (all classes when M > C). (The MME stand-alone script uses g = 0.01, M = 10.)"""

    name, title = "gen", "GEN"
    summary = "-sum_top-M p^g (1-p)^g"
    defaults = {"gamma": 0.1, "M": 100}
    presets = {"reference_imagenet": {"gamma": 0.01, "M": 10}}
    ranges = {"gamma": rg.Interval(0.0, 1.0, low_open=True, high_open=True), "M": rg.count}  # gamma in (0, 1)
    fit_inputs = ()

    def _fit(self, feats, logits, labels, W, b):
        pass

    def _score(self, feats, logits):
        m = min(int(self.M), logits.shape[1])
        out = np.empty(logits.shape[0], dtype=np.float64)
        for s in nx.row_blocks(logits.shape[0], logits.shape[1]):
            p = torch.softmax(nx.t(logits[s]), dim=1)
            if m < p.shape[1]:
                p = torch.topk(p, m, dim=1, sorted=False).values
            out[s] = -(p.pow(self.gamma) * (1.0 - p).pow(self.gamma)).sum(dim=1).numpy()
        return out


# --------------------------------------------------------------------------------- feature-space scores
class Mahalanobis(Detector):
    """Mahalanobis (Lee et al. 2018): class means mu_k, one covariance S of the class-centred training
    features (pseudo-inverse as in sklearn's EmpiricalCovariance); score = max_k -(z-mu_k)^T S^-1 (z-mu_k).

    Computed as squared distances of whitened vectors, |a|^2 + |b_k|^2 - 2 a.b_k with a = (z - m) S^-1/2,
    so scoring costs one (N x D x D) and one (N x D x C) product instead of C products of size N x D x D."""

    name, title = "mahalanobis", "Mahalanobis"
    summary = "-min_k Mahalanobis distance to class means, shared covariance"
    needs_labels = True

    def _fit(self, feats, logits, labels, W, b):
        n = feats.shape[0]
        c = W.shape[0]
        mean, scatter, class_means, counts = nx.mean_and_scatter(feats, labels, c)
        present = counts > 0
        dm = class_means[present] - mean
        cov = (scatter - (dm * counts[present, None]).T @ dm) / n
        whiten = whitening_matrix(cov)
        self.whiten_ = whiten.astype(np.float32)
        self.mean_ = mean.astype(np.float32)
        self.white_means_ = (dm @ whiten).astype(np.float32)
        self.white_means_sq_ = (self.white_means_.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)

    def _score(self, feats, logits):
        out = np.empty(feats.shape[0], dtype=np.float64)
        whiten, means, means_sq = nx.t(self.whiten_), nx.t(self.white_means_), nx.t(self.white_means_sq_)
        for s in nx.row_blocks(feats.shape[0], 2 * feats.shape[1] + self.white_means_.shape[0]):
            a = (nx.t(feats[s]) - nx.t(self.mean_)) @ whiten
            a_sq = nx.norms(a).double() ** 2
            # min_k ||a - b_k||^2 = |a|^2 + min_k (|b_k|^2 - 2 a.b_k): one product with all class means
            nearest = torch.addmm(means_sq, a, means.T, alpha=-2.0).amin(dim=1)
            out[s] = -torch.clamp(a_sq + nearest.double(), min=0.0).numpy()
        return out


def whitening_matrix(cov: np.ndarray) -> np.ndarray:
    """A matrix M with M M^T = pinv(cov), so that (z - mu)^T pinv(cov) (z - mu) = ||(z - mu) M||^2.

    The scatter comes from float32 products, so eigenvalues below D x float32-eps x the largest are rounding
    noise: a covariance with such directions (e.g. fewer samples than dimensions) is singular. Well
    conditioned: M = L^-T from the Cholesky factor cov = L L^T (cheap). Singular: eigenvectors scaled by
    1/sqrt(eigenvalue) over the eigenvalues above that floor (a pseudo-inverse, as sklearn's pinvh)."""
    floor = cov.shape[0] * np.finfo(np.float32).eps * float(np.max(np.diag(cov)))
    with one_cpu_thread():
        chol, info = torch.linalg.cholesky_ex(nx.lapack_input(cov))
        # the squared pivots of a Cholesky factor bound the smallest eigenvalue from above
        if int(info) == 0 and float(torch.diagonal(chol).min()) ** 2 > floor:
            eye = torch.eye(cov.shape[0], dtype=torch.float64)
            return torch.linalg.solve_triangular(chol, eye, upper=False).T.numpy()
    vals, vecs = nx.eigh_descending(cov)
    keep = vals > cov.shape[0] * np.finfo(np.float32).eps * vals.max()
    return vecs[:, keep] / np.sqrt(vals[keep])


class ViM(Detector):
    """ViM (Wang et al. 2022): E(l) - alpha ||(z - u) NS||, u = -pinv(W) b, NS the eigenvectors of the
    covariance of (F_train - u) (about u, "assume centred") after the top DIM; alpha = mean_train(max l) /
    mean_train(||(F - u) NS||). DIM: 1000 if D >= 2048, 512 if D >= 768, else D/2 (``dim="auto"``)."""

    name, title = "vim", "ViM"
    summary = "energy minus alpha x norm of the feature residual outside the top-DIM principal space"
    defaults = {"dim": "auto"}
    ranges = {"dim": rg.AutoOr(rg.count)}  # and < D, checked in fit

    def _fit(self, feats, logits, labels, W, b):
        d = feats.shape[1]
        self.dim_principal_ = _resolve(self.dim, vim_dim, d, "dim")
        mean, scatter = nx.mean_and_scatter(feats)
        self.u_, self.NS_ = vim_residual_space(W, b, mean, scatter, feats.shape[0], self.dim_principal_)
        residual = residual_norms(feats, self.u_, self.NS_)
        self.alpha_ = float(nx.row_max(logits).mean() / residual.mean())

    def residual_norm(self, feats: np.ndarray) -> np.ndarray:
        """||(z - u) NS|| per row (float64)."""
        return residual_norms(feats, self.u_, self.NS_)

    def _score(self, feats, logits):
        return nx.logsumexp(logits) - self.alpha_ * self.residual_norm(feats)


def vim_residual_space(W: np.ndarray, b: np.ndarray, mean: np.ndarray, scatter: np.ndarray, n: int, dim: int):
    """ViM's origin u = -pinv(W) b (float32) and residual space NS (D x (D - dim), float32): the
    eigenvectors after the top ``dim`` of the covariance of (F - u), about u ("assume centred"), from the
    mean and scatter of the n training features."""
    u = -nx.pinv_solve(W, b)
    du = mean - u
    cov_u = (scatter + n * np.outer(du, du)) / n  # scatter about u, from the scatter about the mean
    NS = nx.bottom_eigvecs(cov_u, W.shape[1] - dim)
    return u.astype(np.float32), np.ascontiguousarray(NS, dtype=np.float32)


def residual_norms(feats: np.ndarray, u: np.ndarray, NS: np.ndarray) -> np.ndarray:
    """||(z - u) NS|| per row (float64): the norm of the feature's part outside the principal space."""
    out = np.empty(feats.shape[0], dtype=np.float64)
    for s in nx.row_blocks(feats.shape[0], feats.shape[1] + NS.shape[1]):
        proj = (nx.t(feats[s]) - nx.t(u)) @ nx.t(NS)
        out[s] = nx.norms(proj).numpy()
    return out


class SHE(Detector):
    """SHE (Zhang et al. 2023): <z, m_k> with k = argmax l and m_k the mean training feature of the samples
    labelled AND predicted k. A class with no correctly predicted sample falls back to all its samples."""

    name, title = "she", "SHE"
    summary = "inner product with the stored pattern (mean correct feature) of the predicted class"
    needs_labels = True

    def _fit(self, feats, logits, labels, W, b):
        c = W.shape[0]
        correct = nx.t(logits).argmax(dim=1).numpy() == labels
        # misclassified samples go to an extra class C: one pass, no copy of the correct rows
        sums, counts = nx.class_sums(feats, np.where(correct, labels, c), c + 1)
        sums, counts = sums[:c], counts[:c]
        empty = counts == 0
        if empty.any():
            warnings.warn(f"SHE: {int(empty.sum())} classes have no correctly predicted training sample; "
                          "using the mean of all their samples", stacklevel=3)
            all_sums, all_counts = nx.class_sums(feats, labels, c)
            sums[empty], counts[empty] = all_sums[empty], all_counts[empty]
        self.patterns_ = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)

    def _score(self, feats, logits):
        pred = nx.t(logits).argmax(dim=1)
        patterns = nx.t(self.patterns_)
        out = np.empty(feats.shape[0], dtype=np.float64)
        for s in nx.row_blocks(feats.shape[0], 2 * feats.shape[1]):
            out[s] = (nx.t(feats[s]) * patterns[pred[s]]).sum(dim=1).numpy()
        return out


class PCA(Detector):
    """PCA fusion (Guan et al. 2023): E(W clip(z, thr) + b) * (1 - r), with thr the ReAct threshold (p-th
    percentile of ID activations), r = ||(z_c - mu)(I - U_k U_k^T)|| / ||z_c|| the relative reconstruction
    error of the clipped feature z_c, U_k the top k principal directions of the training features (k = 256;
    D/2 for features narrower than DenseNet's 342: ``k="auto"``). (1 - r) is not clamped, as in the reference code."""

    name, title = "pca", "PCA"
    summary = "energy of ReAct-clipped features times (1 - relative PCA reconstruction error)"
    defaults = {"k": "auto", "clip_percentile": 90.0}
    ranges = {"k": rg.AutoOr(rg.count), "clip_percentile": rg.clip_percentile}

    def _fit(self, feats, logits, labels, W, b):
        d = feats.shape[1]
        self.k_ = _resolve(self.k, pca_k, d, "k")
        self.threshold_ = np.float32(nx.quantile(feats, self.clip_percentile / 100.0))
        mean, scatter = nx.mean_and_scatter(feats)
        self.mean_ = mean.astype(np.float32)
        self.U_ = np.ascontiguousarray(nx.top_eigvecs(scatter, self.k_), dtype=np.float32)

    def one_minus_r(self, z: np.ndarray) -> np.ndarray:
        """1 - relative reconstruction error of the (already clipped) features z (float64)."""
        return 1.0 - relative_reconstruction_error(z, self.mean_, self.U_)

    def _score(self, feats, logits):
        zc = torch.clamp(nx.t(feats), max=float(self.threshold_)).numpy()
        return nx.logsumexp(nx.linear(zc, self.W_, self.b_)) * self.one_minus_r(zc)


def relative_reconstruction_error(z: np.ndarray, mean: np.ndarray, U: np.ndarray) -> np.ndarray:
    """r = ||(z - mu)(I - U U^T)|| / ||z|| per row (float64), with U orthonormal columns."""
    residual, _, norm = reconstruction_terms(z, mean, U)
    return residual / norm


def reconstruction_terms(z: np.ndarray, mean: np.ndarray, U: np.ndarray):
    """Per row (float64): ||(z - mu)(I - U U^T)||, ||z - mu|| and ||z||.

    ||(z - mu)(I - U U^T)||^2 = ||z - mu||^2 - ||(z - mu) U||^2 (Pythagoras): a D x k product per row
    instead of the D x D projector. A zero feature gets the smallest float32 as its norm (r stays finite)."""
    residual, distance, norm = (np.empty(z.shape[0], dtype=np.float64) for _ in range(3))
    for s in nx.row_blocks(z.shape[0], 2 * z.shape[1] + U.shape[1]):
        zs = nx.t(z[s])
        zc = zs - nx.t(mean)
        total = nx.norms(zc).double() ** 2
        projected = nx.norms(zc @ nx.t(U)).double() ** 2
        residual[s] = torch.sqrt(torch.clamp(total - projected, min=0.0)).numpy()
        distance[s] = torch.sqrt(total).numpy()
        norm[s] = torch.clamp(nx.norms(zs), min=TINY).numpy()
    return residual, distance, norm


class KNN(Detector):
    """Deep nearest neighbours (Sun et al. 2022): -||z_hat - f_hat_(k)||, the distance of the normalised
    feature to its k-th nearest normalised training feature (k = 50 CIFAR, 1000 ImageNet). Computed from
    inner products (|a|^2 + 1 - 2 a.b) a block of queries at a time; training rows of zero norm are dropped."""

    name, title = "knn", "KNN"
    summary = "-distance to the k-th nearest normalised training feature"
    defaults = {"k": 50, "bank_fraction": 1.0, "seed": 0}
    presets = {"cifar": {"k": 50}, "imagenet": {"k": 1000}}
    ranges = {"k": rg.count, "bank_fraction": rg.fraction, "seed": rg.seed}

    fit_inputs = ("feats",)

    def _fit(self, feats, logits, labels, W, b):
        bank = _bank_rows(feats, self.bank_fraction, self.seed)
        nonzero = nx.row_norms(bank) > 0
        if not nonzero.all():
            bank = bank[nonzero]
        if int(self.k) > bank.shape[0]:
            raise ValueError(f"k={self.k} exceeds the number of training features in the bank ({bank.shape[0]})")
        self.bank_ = nx.normalize_rows(bank)

    def _score(self, feats, logits):
        q = nx.normalize_rows(feats)
        q_sq = (nx.row_norms(feats) > 0).astype(np.float64)  # |q|^2: 1, or 0 for a zero feature
        s_k = nx.kth_largest_similarity(q, self.bank_, int(self.k))
        return -np.sqrt(np.maximum(q_sq + 1.0 - 2.0 * s_k, 0.0))


def _bank_indices(n: int, fraction: float, seed: int) -> np.ndarray | None:
    """Sorted indices of a random ``fraction`` of n rows; None for all rows (no copy needed)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"bank_fraction must be in (0, 1], got {fraction}")
    if fraction >= 1:
        return None
    m = max(1, int(round(n * fraction)))
    return np.sort(np.random.default_rng(seed).choice(n, m, replace=False))


def _bank_rows(x: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    idx = _bank_indices(x.shape[0], fraction, seed)
    return x if idx is None else x[idx]


class NNGuide(Detector):
    """NNGuide (Park et al. 2023): E(l) * mean of the k largest <z_hat, g_i>, with the guide bank
    g_i = f_hat_i E(l_i) made of normalised training features scaled by their energy, drawn from a random
    ``bank_fraction`` of the training set (1% in the original, k = 10; OpenOOD uses k = 100)."""

    name, title = "nnguide", "NNGuide"
    summary = "energy times mean top-k similarity to an energy-scaled bank of training features"
    defaults = {"k": 10, "bank_fraction": 0.01, "seed": 0}
    presets = {"reference_imagenet": {"k": 100}, "openood": {"k": 100}}
    ranges = {"k": rg.count, "bank_fraction": rg.fraction, "seed": rg.seed}

    def _fit(self, feats, logits, labels, W, b):
        bank = _bank_rows(feats, self.bank_fraction, self.seed)
        if int(self.k) > bank.shape[0]:
            raise ValueError(f"k={self.k} exceeds the bank size {bank.shape[0]} (bank_fraction={self.bank_fraction})")
        conf = nx.logsumexp(_bank_rows(logits, self.bank_fraction, self.seed))
        self.bank_ = nx.normalize_rows(bank) * conf[:, None].astype(np.float32)

    def _score(self, feats, logits):
        guidance = nx.mean_top_k_similarity(nx.normalize_rows(feats), self.bank_, int(self.k))
        return nx.logsumexp(logits) * guidance


class FDBD(Detector):
    """fDBD (Liu & Qin 2024): sum_{c != p} |l_c - l_p| / ||w_c - w_p||, divided by ||z - mu_train||
    (p = argmax l). A sum over classes (the reference code); ``reduction="mean"`` divides by C - 1
    (pytorch-ood's variant, same ranking)."""

    name, title = "fdbd", "fDBD"
    summary = "distance to the decision boundaries, relative to the distance to the training mean"
    defaults = {"reduction": "sum"}
    ranges = {"reduction": rg.OneOf(("sum", "mean"))}
    fit_inputs = ("feats",)

    def _fit(self, feats, logits, labels, W, b):
        self.mean_ = nx.column_mean(feats).astype(np.float32)
        self.inv_boundary_ = inverse_boundary_distances(W)

    def _score(self, feats, logits):
        scores = boundary_sums(logits, self.inv_boundary_) / distances_to(feats, self.mean_)
        return scores / (logits.shape[1] - 1) if self.reduction == "mean" else scores


def inverse_boundary_distances(W: np.ndarray) -> np.ndarray:
    """1 / ||w_c - w_p|| for every class pair (float32, C x C), from the Gram matrix of W (never C x C x D).
    The diagonal (and identical rows) get 0: their |l_c - l_p| term is 0 or undefined."""
    W64 = W.astype(np.float64)
    gram = W64 @ W64.T
    sq = np.diag(gram)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0))
    inv = np.divide(1.0, dist, out=np.zeros_like(dist), where=dist > 1e-12 * max(1.0, float(np.sqrt(sq.max()))))
    np.fill_diagonal(inv, 0.0)
    return inv.astype(np.float32)


def boundary_sums(logits: np.ndarray, inv_boundary: np.ndarray) -> np.ndarray:
    """sum_c |l_c - l_p| / ||w_c - w_p|| per row (float64), p = argmax l: the distances of the feature to
    the decision boundaries between its predicted class and every other class."""
    out = np.empty(logits.shape[0], dtype=np.float64)
    inv = nx.t(inv_boundary)
    for s in nx.row_blocks(logits.shape[0], 3 * logits.shape[1]):
        l = nx.t(logits[s])
        top, pred = l.max(dim=1)
        gap = top[:, None] - l  # |l_c - l_p| = l_p - l_c >= 0, since p is the argmax
        out[s] = (gap * inv[pred]).sum(dim=1).numpy()
    return out


def distances_to(feats: np.ndarray, point: np.ndarray) -> np.ndarray:
    """||z - point|| per row (float64); exactly 0 becomes the smallest float32, so that dividing by it
    stays finite."""
    out = np.empty(feats.shape[0], dtype=np.float64)
    for s in nx.row_blocks(feats.shape[0], feats.shape[1]):
        out[s] = nx.norms(nx.t(feats[s]) - nx.t(point)).numpy()
    return np.maximum(out, TINY)


SCORES = (MSP, MLS, Energy, Mahalanobis, KLMatching, ViM, GEN, SHE, PCA, NNGuide, KNN, FDBD)
