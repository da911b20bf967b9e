"""NME+, CO+ and the Multi-Method Ensemble (MME, Rakotoarivony, BMVC 2025).

Paper eq. (7):

    MME(x) = exp(SCALE(x) - ViM(VRA(x))) * fDBD(VRA(x)) * PCA(VRA(x)) * CO+(x) * NME+(x)

with the components defined as in the author's reference code:

- SCALE(x): E(l_s), the energy of the SCALE logits l_s = W (z exp(s1/s2)) + b, percentile p = 90;
- ViM(VRA(x)): only ViM's *virtual logit* v = alpha ||(z_v - u) NS||, on the VRA-clipped feature z_v;
  alpha and NS are fitted on the raw training features;
- VRA: the two-sided clip of z to the 1% / 99% quantiles of all training activations (scalars);
- PCA(VRA(x)): the factor (1 - r), r = ||(z_v - mu)(I - U_k U_k^T)|| / ||z_v||, k = 256 (not clamped);
- fDBD(VRA(x)): sum_c |l_c - l_p| / ||w_c - w_p|| / ||z_v - mu|| on the VRA logits;
- NME+(x) = max_c 1 / softmax(d / T)_c = sum_j exp((d_j - d_min) / T) >= 1, d_c = ||z_hat - m_c||^2 on
  the RAW normalised feature and renormalised class means of normalised training features (eqs. 4-5,
  App. B); T = 0.1 (CIFAR) / 0.5 (ImageNet);
- CO+(x) = lambda (= 2) if argmax l_s == argmin_c d_c, else 1.

The product is evaluated as a sum of logs, so nothing overflows (the float32 reference code overflows
once E(l_s) - v > 88.72 and then ties those samples at the float64 maximum). Two factors can be <= 0:
(1 - r) (reconstruction error larger than the norm) and fDBD (0 when all logits tie). With
``log_mode="signed"`` (default) the score is sign(MME) * log(1 + |MME|), computed from log|MME| as
sign * logaddexp(0, log|MME|): finite for every input and strictly increasing in the exact MME value, so
it ranks samples exactly as the real-valued product would (a negative product ranks below every positive
one, a zero product sits at 0), and for log|MME| > 37 it *is* log MME to float64 precision.
``log_mode="clamp"`` instead floors each factor at ``clamp_floor`` (1e-12) before the log: the score is
then exactly log-MME whenever all factors exceed the floor, and non-positive factors tie at the floor.
"""
from __future__ import annotations

import numpy as np
import torch

from . import _numerics as nx
from .base import Detector
from .scores import _resolve, fdbd_scores, inverse_boundary_distances, pca_k, vim_dim
from .truncation import SCALE, VRAClip

#: added to feature norms before normalising, as in the reference code (keeps a zero feature finite)
NORM_EPS = 1e-8


class _NMEMixin:
    """Nearest-mean-of-exemplars on normalised features (Rebuffi et al. 2017; MME App. B.2)."""

    def _fit_nme(self, feats, labels, num_classes):
        normed = nx.normalize_rows(feats, NORM_EPS)
        sums, counts = nx.class_sums(normed, labels, num_classes)
        if (counts == 0).any():
            missing = np.flatnonzero(counts == 0)[:10].tolist()
            raise ValueError(f"NME needs at least one training sample per class; none for classes {missing}...")
        means = sums / counts[:, None]
        means /= np.linalg.norm(means, axis=1, keepdims=True)
        self.class_means_ = means.astype(np.float32)

    def nme_distances(self, feats: np.ndarray) -> np.ndarray:
        """d_c = ||z_hat - m_c||^2 for one block of rows (float64, N x C)."""
        zh = nx.normalize_rows(feats, NORM_EPS)
        zh_sq = nx.row_norms(zh) ** 2
        cross = nx.mm(zh, self.class_means_.T.copy()).astype(np.float64)
        return np.maximum(zh_sq[:, None] + 1.0 - 2.0 * cross, 0.0)

    def log_nme_plus(self, d: np.ndarray) -> np.ndarray:
        """log NME+ = log sum_j exp((d_j - d_min) / T) (>= 0; never overflows)."""
        x = torch.from_numpy((d - d.min(axis=1, keepdims=True)) / self.temperature)
        return torch.logsumexp(x, dim=1).numpy()


class NMEPlus(_NMEMixin, Detector):
    """NME+ alone (MME Table 3). Returns log NME+ (same ranking as NME+, and it cannot overflow)."""

    name, title, kind = "nme", "NME+", "ensemble"
    summary = "log NME+: log sum_j exp((d_j - d_min)/T), cosine-space distances to class means"
    defaults = {"temperature": 0.5}
    presets = {"cifar": {"temperature": 0.1}, "imagenet": {"temperature": 0.5}}
    needs_labels = True

    def _fit(self, feats, logits, labels, W, b):
        self._fit_nme(feats, labels, W.shape[0])

    def _score(self, feats, logits):
        out = np.empty(feats.shape[0], dtype=np.float64)
        for s in nx.row_blocks(feats.shape[0], feats.shape[1] + 2 * self.class_means_.shape[0]):
            out[s] = self.log_nme_plus(self.nme_distances(feats[s]))
        return out


class COPlus(_NMEMixin, Detector):
    """CO+ alone (eq. 5): lambda where the NME class (argmin d) equals the MLS class (argmax l), else 1.
    A two-valued score: useful to measure the consistency ratio (Assumption 1, Fig. 2), weak as a detector."""

    name, title, kind = "co", "CO+", "ensemble"
    summary = "lambda if the nearest class mean and the max-logit class agree, else 1"
    defaults = {"co_weight": 2.0}
    needs_labels = True

    def _fit(self, feats, logits, labels, W, b):
        self._fit_nme(feats, labels, W.shape[0])

    def agreement(self, feats, logits) -> np.ndarray:
        """CO(x) of eq. (4): True where argmin_c d_c == argmax_c l_c."""
        out = np.empty(feats.shape[0], dtype=bool)
        for s in nx.row_blocks(feats.shape[0], feats.shape[1] + 2 * self.class_means_.shape[0]):
            out[s] = self.nme_distances(feats[s]).argmin(axis=1) == logits[s].argmax(axis=1)
        return out

    def _score(self, feats, logits):
        return np.where(self.agreement(feats, logits), float(self.co_weight), 1.0)


class NMEPlusCO(_NMEMixin, Detector):
    """NME+ x CO+ (MME Table 3, "NME+ + CO+"), CO+ from the raw logits' argmax. Returns its log."""

    name, title, kind = "nme_co", "NME+ + CO+", "ensemble"
    summary = "log(NME+ x CO+)"
    defaults = {"temperature": 0.5, "co_weight": 2.0}
    presets = {"cifar": {"temperature": 0.1}, "imagenet": {"temperature": 0.5},
               "reference_imagenet": {"temperature": 0.5, "co_weight": 0.5}}
    needs_labels = True

    def _fit(self, feats, logits, labels, W, b):
        self._fit_nme(feats, labels, W.shape[0])

    def _score(self, feats, logits):
        out = np.empty(feats.shape[0], dtype=np.float64)
        for s in nx.row_blocks(feats.shape[0], feats.shape[1] + 2 * self.class_means_.shape[0]):
            d = self.nme_distances(feats[s])
            agree = d.argmin(axis=1) == logits[s].argmax(axis=1)
            out[s] = self.log_nme_plus(d) + np.where(agree, np.log(float(self.co_weight)), 0.0)
        return out


class MME(_NMEMixin, Detector):
    """Multi-Method Ensemble, eq. (7), scored in log space (see the module docstring for every component).

    After ``score``: ``last_overflow_count`` = number of samples whose exp argument E(l_s) - v exceeds
    log(float32 max) = 88.72, i.e. that the float32 reference code would have turned into +inf;
    ``last_components`` = dict of the per-sample components (for plots and ablations).
    """

    name, title, kind = "mme", "MME", "ensemble"
    summary = "exp(E(SCALE) - ViM virtual logit(VRA)) x fDBD(VRA) x (1-r)(VRA) x CO+ x NME+, in log space"
    defaults = {"temperature": 0.5, "co_weight": 2.0, "scale_percentile": 90.0, "vra_lower": 0.01,
                "vra_upper": 0.99, "dim": "auto", "k": "auto", "log_mode": "signed", "clamp_floor": 1e-12}
    presets = {"cifar": {"temperature": 0.1, "co_weight": 2.0},
               "imagenet": {"temperature": 0.5, "co_weight": 2.0},
               # the stand-alone reference script on ImageNet: agreement *penalised* (0.5), against the paper
               "reference_imagenet": {"temperature": 0.5, "co_weight": 0.5}}
    needs_labels = True

    def _fit(self, feats, logits, labels, W, b):
        if self.log_mode not in ("signed", "clamp"):
            raise ValueError(f"log_mode must be 'signed' or 'clamp', got {self.log_mode!r}")
        n, d = feats.shape
        self.scale_ = SCALE(percentile=self.scale_percentile).fit(feats, W, b)
        self.vra_ = VRAClip(lower=self.vra_lower, upper=self.vra_upper).fit(feats, W, b)
        # one streaming pass gives the mean and scatter used by both ViM (about u) and PCA (about the mean)
        mean, scatter = nx.mean_and_scatter(feats)
        self.mean_ = mean.astype(np.float32)
        # ViM: u = -pinv(W) b, NS = eigenvectors after the top DIM of cov(F - u), alpha on raw features
        self.dim_principal_ = _resolve(self.dim, vim_dim, d, "dim")
        u = -(np.linalg.pinv(W.astype(np.float64)) @ b.astype(np.float64))
        du = mean - u
        self.u_ = u.astype(np.float32)
        cov_u = (scatter + n * np.outer(du, du)) / n
        self.NS_ = np.ascontiguousarray(nx.bottom_eigvecs(cov_u, d - self.dim_principal_), dtype=np.float32)
        self.alpha_ = float(logits.max(axis=1).astype(np.float64).mean() / self._vim_residual(feats).mean())
        # PCA: top-k principal directions of the training features
        self.k_ = _resolve(self.k, pca_k, d, "k")
        self.U_ = np.ascontiguousarray(nx.top_eigvecs(scatter, self.k_), dtype=np.float32)
        # fDBD and NME+
        self.inv_boundary_ = inverse_boundary_distances(W)
        self._fit_nme(feats, labels, W.shape[0])

    def _vim_residual(self, z):
        out = np.empty(z.shape[0], dtype=np.float64)
        for s in nx.row_blocks(z.shape[0], z.shape[1] + self.NS_.shape[1]):
            out[s] = nx.row_norms(nx.mm(z[s] - self.u_, self.NS_))
        return out

    def components(self, feats: np.ndarray, logits: np.ndarray) -> dict:
        """Every factor of eq. (7) for one block of rows (float64 arrays)."""
        scale_logits = self.scale_.logits_from_raw(feats, logits)
        zv = self.vra_.transform(feats)
        vra_logits = nx.linear(zv, self.W_, self.b_)
        # PCA factor (1 - r) on the VRA feature
        zc = zv - self.mean_
        dist_sq = nx.row_norms(zc) ** 2
        proj_sq = nx.row_norms(nx.mm(zc, self.U_)) ** 2
        r = np.sqrt(np.maximum(dist_sq - proj_sq, 0.0)) / np.maximum(nx.row_norms(zv), np.finfo(np.float32).tiny)
        d = self.nme_distances(feats)
        agree = scale_logits.argmax(axis=1) == d.argmin(axis=1)
        return {
            "scale_energy": nx.logsumexp(scale_logits),
            "virtual_logit": self.alpha_ * self._vim_residual(zv),
            "fdbd": fdbd_scores(vra_logits, self.inv_boundary_, zv, self.mean_),
            "one_minus_r": 1.0 - r,
            "log_nme": self.log_nme_plus(d),
            "co": np.where(agree, float(self.co_weight), 1.0),
        }

    def _score(self, feats, logits):
        parts = []
        for s in nx.row_blocks(feats.shape[0], 4 * feats.shape[1] + 4 * self.num_classes_, max_rows=4096):
            parts.append(self.components(feats[s], logits[s]))
        comp = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        exponent = comp["scale_energy"] - comp["virtual_logit"]
        self.last_overflow_count = int((exponent > nx.FLOAT32_LOG_MAX).sum())
        if self.log_mode == "clamp":
            floor = float(self.clamp_floor)
            log_abs = (exponent + comp["log_nme"] + np.log(comp["co"])
                       + np.log(np.maximum(comp["one_minus_r"], floor)) + np.log(np.maximum(comp["fdbd"], floor)))
            sign = np.ones_like(log_abs)
            score = log_abs
        else:
            with np.errstate(divide="ignore"):  # log(0) = -inf is handled by logaddexp below
                log_abs = (exponent + comp["log_nme"] + np.log(comp["co"])
                           + np.log(np.abs(comp["one_minus_r"])) + np.log(comp["fdbd"]))
            sign = np.sign(comp["one_minus_r"]) * np.sign(comp["fdbd"])
            score = nx.signed_log1p_from_log(log_abs, sign)
        comp["log_abs"], comp["sign"] = log_abs, sign
        self.last_components = comp
        return score
