"""Scoring functions: one number per sample from its features and/or logits, higher = more ID.

Notation: z penultimate feature (D), l = W z + b logits (C), E(l) = logsumexp(l) the (negative) energy.
The definitions follow the reference code the MME paper used (see the docstrings for each choice);
``tests/test_detectors.py`` checks them against pytorch-ood or against a direct float64 transcription.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch

from . import _numerics as nx
from .base import Detector


def vim_dim(d: int) -> int:
    """ViM's principal dimension: 1000 if D >= 2048, 512 if D >= 768, else D/2 (ViM reference code).

    The first two values assume wide features; a narrow penultimate layer (e.g. a small CNN's 64-d) keeps
    half of its dimensions, so a residual space always exists."""
    if d >= 2048:
        return 1000
    if d >= 768:
        return 512
    return d // 2


def pca_k(d: int) -> int:
    """PCA's number of principal directions: 256 (Guan et al.), capped at D/2 for narrow features."""
    return min(256, d // 2)


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

    def _fit(self, feats, logits, labels, W, b):
        pass

    def _score(self, feats, logits):
        inv_t = 1.0 / self.temperature
        return np.exp(logits.max(axis=1).astype(np.float64) * inv_t - nx.logsumexp(logits, inv_t))


class MLS(Detector):
    """Maximum logit score (Hendrycks et al. 2022): max_c l_c."""

    name, title = "mls", "MLS"
    summary = "maximum logit"

    def _fit(self, feats, logits, labels, W, b):
        pass

    def _score(self, feats, logits):
        return logits.max(axis=1).astype(np.float64)


class Energy(Detector):
    """Energy score (Liu et al. 2020): T logsumexp(l / T), T = 1."""

    name, title = "energy", "Energy"
    summary = "negative free energy T log sum exp(l/T)"
    defaults = {"temperature": 1.0}

    def _fit(self, feats, logits, labels, W, b):
        pass

    def _score(self, feats, logits):
        return self.temperature * nx.logsumexp(logits, 1.0 / self.temperature)


class KLMatching(Detector):
    """KL matching (Hendrycks et al. 2022): templates d_k = mean softmax of the training samples *predicted*
    as k (no labels needed); score = -min_k KL(p || d_k) over the classes predicted at least once."""

    name, title = "kl", "KL matching"
    summary = "-min_k KL(softmax || mean softmax of samples predicted k)"

    def _fit(self, feats, logits, labels, W, b):
        c = logits.shape[1]
        sums = np.zeros((c, c), dtype=np.float64)
        counts = np.zeros(c, dtype=np.float64)
        for s in nx.row_blocks(logits.shape[0], 4 * c):
            p = torch.softmax(nx.t(logits[s]).double(), dim=1).numpy()
            pred = p.argmax(axis=1)
            np.add.at(sums, pred, p)
            counts += np.bincount(pred, minlength=c)
        seen = counts > 0
        templates = sums[seen] / counts[seen, None]
        self.log_templates_ = np.log(np.maximum(templates, np.finfo(np.float64).tiny))

    def _score(self, feats, logits):
        out = np.empty(logits.shape[0], dtype=np.float64)
        log_d = nx.t(self.log_templates_.T.copy())
        for s in nx.row_blocks(logits.shape[0], 4 * logits.shape[1]):
            logp = torch.log_softmax(nx.t(logits[s]).double(), dim=1)
            p = logp.exp()
            neg_entropy = torch.where(p > 0, p * logp, 0.0).sum(dim=1)  # sum p log p, with 0 log 0 = 0
            kl = neg_entropy[:, None] - p @ log_d
            out[s] = -kl.min(dim=1).values.numpy()
        return out


class GEN(Detector):
    """Generalized entropy (Liu et al. 2023): -sum over the M largest probabilities of p^g (1 - p)^g,
    g = 0.1, M = 100 (all classes when M > C). (The MME stand-alone script uses g = 0.01, M = 10.)"""

    name, title = "gen", "GEN"
    summary = "-sum_top-M p^g (1-p)^g"
    defaults = {"gamma": 0.1, "M": 100}

    def _fit(self, feats, logits, labels, W, b):
        pass

    def _score(self, feats, logits):
        m = min(int(self.M), logits.shape[1])
        out = np.empty(logits.shape[0], dtype=np.float64)
        for s in nx.row_blocks(logits.shape[0], 4 * logits.shape[1]):
            p = torch.softmax(nx.t(logits[s]).double(), dim=1)
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
        self.white_means_sq_ = (self.white_means_.astype(np.float64) ** 2).sum(axis=1)

    def _score(self, feats, logits):
        out = np.empty(feats.shape[0], dtype=np.float64)
        for s in nx.row_blocks(feats.shape[0], 2 * feats.shape[1] + self.white_means_.shape[0]):
            a = nx.mm(feats[s] - self.mean_, self.whiten_)
            a_sq = (a.astype(np.float64) ** 2).sum(axis=1)
            cross = nx.mm(a, self.white_means_.T.copy()).astype(np.float64)
            d2 = a_sq[:, None] + self.white_means_sq_[None, :] - 2.0 * cross
            out[s] = -np.maximum(d2, 0.0).min(axis=1)
        return out


def whitening_matrix(cov: np.ndarray) -> np.ndarray:
    """A matrix M with M M^T = pinv(cov), so that (z - mu)^T pinv(cov) (z - mu) = ||(z - mu) M||^2.

    Positive definite cov: M = L^-T from the Cholesky factor cov = L L^T (cheap). Singular cov (e.g. fewer
    samples than dimensions): eigenvectors scaled by 1/sqrt(eigenvalue) over the non-null eigenvalues,
    with the pseudo-inverse cut-off of sklearn's EmpiricalCovariance (pinvh)."""
    try:
        chol = np.linalg.cholesky(cov)
        inv_l = scipy.linalg.solve_triangular(chol, np.eye(cov.shape[0]), lower=True)
        return inv_l.T
    except np.linalg.LinAlgError:
        vals, vecs = np.linalg.eigh(cov)
        keep = vals > vals.max() * cov.shape[0] * np.finfo(np.float64).eps
        return vecs[:, keep] / np.sqrt(vals[keep])


class ViM(Detector):
    """ViM (Wang et al. 2022): E(l) - alpha ||(z - u) NS||, u = -pinv(W) b, NS the eigenvectors of the
    covariance of (F_train - u) (about u, "assume centred") after the top DIM; alpha = mean_train(max l) /
    mean_train(||(F - u) NS||). DIM: 1000 if D >= 2048, 512 if D >= 768, else D/2 (``dim="auto"``)."""

    name, title = "vim", "ViM"
    summary = "energy minus alpha x norm of the feature residual outside the top-DIM principal space"
    defaults = {"dim": "auto"}

    def _fit(self, feats, logits, labels, W, b):
        n, d = feats.shape
        self.dim_principal_ = _resolve(self.dim, vim_dim, d, "dim")
        self.u_ = -(np.linalg.pinv(W.astype(np.float64)) @ b.astype(np.float64))
        mean, scatter = nx.mean_and_scatter(feats)
        du = mean - self.u_
        cov_u = (scatter + n * np.outer(du, du)) / n
        self.NS_ = np.ascontiguousarray(nx.bottom_eigvecs(cov_u, d - self.dim_principal_), dtype=np.float32)
        residual = self.residual_norm(feats)
        self.alpha_ = float(logits.max(axis=1).astype(np.float64).mean() / residual.mean())

    def residual_norm(self, feats: np.ndarray) -> np.ndarray:
        """||(z - u) NS|| per row (float64)."""
        u = self.u_.astype(np.float32)
        out = np.empty(feats.shape[0], dtype=np.float64)
        for s in nx.row_blocks(feats.shape[0], feats.shape[1] + self.NS_.shape[1]):
            out[s] = nx.row_norms(nx.mm(feats[s] - u, self.NS_))
        return out

    def _score(self, feats, logits):
        return nx.logsumexp(logits) - self.alpha_ * self.residual_norm(feats)


class SHE(Detector):
    """SHE (Zhang et al. 2023): <z, m_k> with k = argmax l and m_k the mean training feature of the samples
    labelled AND predicted k. A class with no correctly predicted sample falls back to all its samples."""

    name, title = "she", "SHE"
    summary = "inner product with the stored pattern (mean correct feature) of the predicted class"
    needs_labels = True

    def _fit(self, feats, logits, labels, W, b):
        c = W.shape[0]
        correct = logits.argmax(axis=1) == labels
        sums, counts = nx.class_sums(feats[correct], labels[correct], c)
        all_sums, all_counts = nx.class_sums(feats, labels, c)
        empty = counts == 0
        if empty.any():
            warnings.warn(f"SHE: {int(empty.sum())} classes have no correctly predicted training sample; "
                          "using the mean of all their samples", stacklevel=3)
            sums[empty], counts[empty] = all_sums[empty], all_counts[empty]
        self.patterns_ = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)

    def _score(self, feats, logits):
        pred = logits.argmax(axis=1)
        out = np.empty(feats.shape[0], dtype=np.float64)
        for s in nx.row_blocks(feats.shape[0], 2 * feats.shape[1]):
            out[s] = np.einsum("ij,ij->i", feats[s].astype(np.float64), self.patterns_[pred[s]].astype(np.float64))
        return out


class PCA(Detector):
    """PCA fusion (Guan et al. 2023): E(W clip(z, thr) + b) * (1 - r), with thr the ReAct threshold (p-th
    percentile of ID activations), r = ||(z_c - mu)(I - U_k U_k^T)|| / ||z_c|| the relative reconstruction
    error of the clipped feature z_c, U_k the top k principal directions of the training features (k = 256,
    capped at D/2 for narrow features: ``k="auto"``). (1 - r) is not clamped, as in the reference code."""

    name, title = "pca", "PCA"
    summary = "energy of ReAct-clipped features times (1 - relative PCA reconstruction error)"
    defaults = {"k": "auto", "clip_percentile": 90.0}

    def _fit(self, feats, logits, labels, W, b):
        d = feats.shape[1]
        self.k_ = _resolve(self.k, pca_k, d, "k")
        self.threshold_ = np.float32(nx.quantile(feats, self.clip_percentile / 100.0))
        mean, scatter = nx.mean_and_scatter(feats)
        self.mean_ = mean.astype(np.float32)
        self.U_ = np.ascontiguousarray(nx.top_eigvecs(scatter, self.k_), dtype=np.float32)

    def one_minus_r(self, z: np.ndarray) -> np.ndarray:
        """1 - relative reconstruction error of the (already clipped) features z (float64)."""
        out = np.empty(z.shape[0], dtype=np.float64)
        for s in nx.row_blocks(z.shape[0], z.shape[1] + self.U_.shape[1]):
            zc = z[s] - self.mean_
            total = nx.row_norms(zc) ** 2
            proj = nx.row_norms(nx.mm(zc, self.U_)) ** 2
            resid = np.sqrt(np.maximum(total - proj, 0.0))
            norm = nx.row_norms(z[s])
            out[s] = 1.0 - resid / np.maximum(norm, np.finfo(np.float32).tiny)
        return out

    def _score(self, feats, logits):
        zc = np.minimum(feats, self.threshold_)
        return nx.logsumexp(nx.linear(zc, self.W_, self.b_)) * self.one_minus_r(zc)


class KNN(Detector):
    """Deep nearest neighbours (Sun et al. 2022): -||z_hat - f_hat_(k)||, the distance of the normalised
    feature to its k-th nearest normalised training feature (k = 50 CIFAR, 1000 ImageNet). Computed from
    inner products (|a|^2 + 1 - 2 a.b) a block of queries at a time; training rows of zero norm are dropped."""

    name, title = "knn", "KNN"
    summary = "-distance to the k-th nearest normalised training feature"
    defaults = {"k": 50, "bank_fraction": 1.0, "seed": 0}
    presets = {"cifar": {"k": 50}, "imagenet": {"k": 1000}}

    def _fit(self, feats, logits, labels, W, b):
        idx = _bank_indices(feats.shape[0], self.bank_fraction, self.seed)
        norms = nx.row_norms(feats[idx])
        idx = idx[norms > 0]
        if int(self.k) > idx.size:
            raise ValueError(f"k={self.k} exceeds the number of training features in the bank ({idx.size})")
        self.bank_ = nx.normalize_rows(feats[idx])

    def _score(self, feats, logits):
        q = nx.normalize_rows(feats)
        q_sq = (nx.row_norms(q) ** 2)
        s_k = nx.kth_largest_similarity(q, self.bank_, int(self.k))
        return -np.sqrt(np.maximum(q_sq + 1.0 - 2.0 * s_k, 0.0))


def _bank_indices(n: int, fraction: float, seed: int) -> np.ndarray:
    if not 0 < fraction <= 1:
        raise ValueError(f"bank_fraction must be in (0, 1], got {fraction}")
    if fraction >= 1:
        return np.arange(n)
    m = max(1, int(round(n * fraction)))
    return np.sort(np.random.default_rng(seed).choice(n, m, replace=False))


class NNGuide(Detector):
    """NNGuide (Park et al. 2023): E(l) * mean of the k largest <z_hat, g_i>, with the guide bank
    g_i = f_hat_i E(l_i) made of normalised training features scaled by their energy, drawn from a random
    ``bank_fraction`` of the training set (1% in the original, k = 10; OpenOOD uses k = 100)."""

    name, title = "nnguide", "NNGuide"
    summary = "energy times mean top-k similarity to an energy-scaled bank of training features"
    defaults = {"k": 10, "bank_fraction": 0.01, "seed": 0}

    def _fit(self, feats, logits, labels, W, b):
        idx = _bank_indices(feats.shape[0], self.bank_fraction, self.seed)
        if int(self.k) > idx.size:
            raise ValueError(f"k={self.k} exceeds the bank size {idx.size} (bank_fraction={self.bank_fraction})")
        conf = nx.logsumexp(logits[idx])
        self.bank_ = (nx.normalize_rows(feats[idx]) * conf[:, None]).astype(np.float32)

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

    def _fit(self, feats, logits, labels, W, b):
        if self.reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {self.reduction!r}")
        self.mean_ = _mean(feats).astype(np.float32)
        self.inv_boundary_ = inverse_boundary_distances(W)

    def _score(self, feats, logits):
        scores = fdbd_scores(logits, self.inv_boundary_, feats, self.mean_)
        return scores / (logits.shape[1] - 1) if self.reduction == "mean" else scores


def _mean(x: np.ndarray) -> np.ndarray:
    m = np.zeros(x.shape[1], dtype=np.float64)
    for s in nx.row_blocks(x.shape[0], x.shape[1]):
        m += x[s].sum(axis=0, dtype=np.float64)
    return m / x.shape[0]


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


def fdbd_scores(logits: np.ndarray, inv_boundary: np.ndarray, feats: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The fDBD sum for each row (float64). A feature exactly at the training mean gets a distance of the
    smallest positive float32 instead of 0, so the score stays finite."""
    out = np.empty(logits.shape[0], dtype=np.float64)
    for s in nx.row_blocks(logits.shape[0], 3 * logits.shape[1]):
        l = logits[s].astype(np.float64)
        pred = l.argmax(axis=1)
        gap = np.abs(l - l[np.arange(l.shape[0]), pred][:, None])
        boundary = (gap * inv_boundary[pred]).sum(axis=1)
        dist = nx.row_norms(feats[s] - mean)
        out[s] = boundary / np.maximum(dist, np.finfo(np.float32).tiny)
    return out


SCORES = (MSP, MLS, Energy, Mahalanobis, KLMatching, ViM, GEN, SHE, PCA, NNGuide, KNN, FDBD)
