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
from . import ranges as rg
from .base import Detector
from .scores import (TINY, _resolve, boundary_sums, inverse_boundary_distances, pca_k, reconstruction_terms,
                     residual_norms, vim_dim, vim_residual_space)
from .truncation import SCALE, VRAClip

#: added to feature norms before normalising, as in the reference code (keeps a zero feature finite)
NORM_EPS = 1e-8


class _NMEMixin:
    """Nearest-mean-of-exemplars on normalised features (Rebuffi et al. 2017; MME App. B.2)."""

    def _fit_nme(self, feats, labels, num_classes):
        # normalise and sum a block at a time: no normalised copy of the training features is kept
        class_sums = nx.ClassSums(num_classes, feats.shape[1])
        for s in nx.row_blocks(feats.shape[0], feats.shape[1]):
            class_sums.add(nx.normalize_rows(feats[s], NORM_EPS), labels[s])
        sums = class_sums.total
        counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
        if (counts == 0).any():
            missing = np.flatnonzero(counts == 0)[:10].tolist()
            raise ValueError(f"NME needs at least one training sample per class; none for classes {missing}...")
        means = sums / counts[:, None]
        means /= np.linalg.norm(means, axis=1, keepdims=True)
        self.class_means_ = means.astype(np.float32)

    def nme_distances(self, feats: np.ndarray) -> torch.Tensor:
        """d_c = ||z_hat - m_c||^2 for one block of rows (float32 tensor, N x C), z_hat = z / (||z|| + eps).

        = |z_hat|^2 + |m_c|^2 - 2 z_hat.m_c with |m_c| = 1, and z_hat.m_c = (z.m_c) / (||z|| + eps): the
        product runs on the raw features, so no normalised copy of them is made."""
        z = nx.t(feats)
        norm = nx.norms(z)
        inv_norm = 1.0 / (norm + NORM_EPS)
        zh_sq = (norm * inv_norm) ** 2  # 1, or 0 for a zero feature
        cross = z @ nx.t(self.class_means_).T
        d = (zh_sq + 1.0)[:, None] - 2.0 * inv_norm[:, None] * cross
        return torch.clamp(d, min=0.0)

    def log_nme_plus(self, d: torch.Tensor) -> np.ndarray:
        """log NME+ = log sum_j exp((d_j - d_min) / T) = logsumexp(d / T) - d_min / T, float64. Never
        overflows (logsumexp shifts by the max), and it is >= log C, so the difference does not cancel."""
        inv_t = 1.0 / self.temperature
        return (nx.lse_rows(d * inv_t) - d.amin(dim=1) * inv_t).double().numpy()


class NMEPlus(_NMEMixin, Detector):
    """NME+ alone (MME Table 3). Returns log NME+ (same ranking as NME+, and it cannot overflow)."""

    name, title, kind = "nme", "NME+", "ensemble"
    summary = "log NME+: log sum_j exp((d_j - d_min)/T), cosine-space distances to class means"
    defaults = {"temperature": 0.5}
    presets = {"cifar": {"temperature": 0.1}, "imagenet": {"temperature": 0.5}}
    ranges = {"temperature": rg.positive}
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
    presets = {"reference_imagenet": {"co_weight": 0.5}}
    ranges = {"co_weight": rg.positive}  # a factor of a product scored in log space
    needs_labels = True

    def _fit(self, feats, logits, labels, W, b):
        self._fit_nme(feats, labels, W.shape[0])

    def agreement(self, feats, logits) -> np.ndarray:
        """CO(x) of eq. (4): True where argmin_c d_c == argmax_c l_c."""
        out = np.empty(feats.shape[0], dtype=bool)
        for s in nx.row_blocks(feats.shape[0], feats.shape[1] + 2 * self.class_means_.shape[0]):
            out[s] = (self.nme_distances(feats[s]).argmin(dim=1) == nx.t(logits[s]).argmax(dim=1)).numpy()
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
    ranges = {"temperature": rg.positive, "co_weight": rg.positive}
    needs_labels = True

    def _fit(self, feats, logits, labels, W, b):
        self._fit_nme(feats, labels, W.shape[0])

    def _score(self, feats, logits):
        out = np.empty(feats.shape[0], dtype=np.float64)
        for s in nx.row_blocks(feats.shape[0], feats.shape[1] + 2 * self.class_means_.shape[0]):
            d = self.nme_distances(feats[s])
            agree = (d.argmin(dim=1) == nx.t(logits[s]).argmax(dim=1)).numpy()
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
               "reference_imagenet": {"temperature": 0.5, "co_weight": 0.5},
               # the OpenOOD fork: SCALE inside MME at p = 85 (the stand-alone SCALE baseline's value)
               "openood": {"scale_percentile": 85.0}}
    ranges = {"temperature": rg.positive, "co_weight": rg.positive, "scale_percentile": rg.percentile,
              "vra_lower": rg.quantile, "vra_upper": rg.quantile, "dim": rg.AutoOr(rg.count),
              "k": rg.AutoOr(rg.count), "log_mode": rg.OneOf(("signed", "clamp")), "clamp_floor": rg.positive}
    ordered = (("vra_lower", "vra_upper"),)
    needs_labels = True

    def _fit(self, feats, logits, labels, W, b):
        d = feats.shape[1]
        self.scale_ = SCALE(percentile=self.scale_percentile).fit(feats, W, b)
        self.vra_ = VRAClip(lower=self.vra_lower, upper=self.vra_upper).fit(feats, W, b)
        # one streaming pass gives the mean and scatter used by both ViM (about u) and PCA (about the mean)
        mean, scatter = nx.mean_and_scatter(feats)
        self.mean_ = mean.astype(np.float32)
        # ViM: u = -pinv(W) b, NS = eigenvectors after the top DIM of cov(F - u), alpha on raw features
        self.dim_principal_ = _resolve(self.dim, vim_dim, d, "dim")
        self.u_, self.NS_ = vim_residual_space(W, b, mean, scatter, feats.shape[0], self.dim_principal_)
        self.alpha_ = float(nx.row_max(logits).mean() / residual_norms(feats, self.u_, self.NS_).mean())
        # PCA: top-k principal directions of the training features
        self.k_ = _resolve(self.k, pca_k, d, "k")
        self.U_ = np.ascontiguousarray(nx.top_eigvecs(scatter, self.k_), dtype=np.float32)
        # fDBD and NME+
        self.inv_boundary_ = inverse_boundary_distances(W)
        self._fit_nme(feats, labels, W.shape[0])

    def components(self, feats: np.ndarray, logits: np.ndarray) -> dict:
        """Every factor of eq. (7) for one block of rows (float64 arrays)."""
        scale_logits = nx.t(self.scale_.logits_from_raw(feats, logits))
        zv = self.vra_.transform(feats)
        vra_logits = nx.linear(zv, self.W_, self.b_)
        pca_residual, distance_to_mean, norm = reconstruction_terms(zv, self.mean_, self.U_)
        d = self.nme_distances(feats)
        agree = (scale_logits.argmax(dim=1) == d.argmin(dim=1)).numpy()
        return {
            "scale_energy": nx.lse_rows(scale_logits).double().numpy(),
            "virtual_logit": self.alpha_ * residual_norms(zv, self.u_, self.NS_),
            "fdbd": boundary_sums(vra_logits, self.inv_boundary_) / np.maximum(distance_to_mean, TINY),
            "one_minus_r": 1.0 - pca_residual / norm,
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
