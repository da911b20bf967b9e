"""Feature truncations: reshape the penultimate features (or the head's weights) before any scoring.

A truncation g is fitted on the training features, then maps test features z -> g(z) (and the head
W -> W', only DICE changes it). Any scoring function can run on top (MME Hypothesis 1, Fig. 3):
``get_detector("vim", truncation="vra")``. Used alone, each is paired with the Energy score, as in its paper.

All truncations act on pooled (N, D) features. ASH and SCALE were defined on the convolutional feature
map before pooling; like the MME reference code, the kit applies them to the pooled vector.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from . import _numerics as nx
from . import ranges as rg

#: the SCALE/ASH-S scale factor exp(s1/s2) uses s1/s2 clipped to this range. For post-ReLU features
#: 0 < s1/s2 <= 1, so the clip never acts; it only keeps signed features with s2 ~ 0 finite.
MAX_SCALE_RATIO = 50.0


class Truncation:
    """Base class. Subclasses implement ``_fit`` and ``transform`` (and may replace the head)."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    defaults: ClassVar[dict] = {}
    presets: ClassVar[dict] = {}
    changes_features: ClassVar[bool] = True
    ranges: ClassVar[dict] = {}
    ordered: ClassVar[tuple] = ()

    def __init__(self, **hparams):
        unknown = sorted(set(hparams) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "(none)"
            raise ValueError(f"unknown hyperparameter(s) {unknown} for truncation {self.name!r}; valid: {valid}")
        self.hparams = {**self.defaults, **hparams}
        rg.check(self.name, self.hparams, self.ranges, self.ordered)
        for key, value in self.hparams.items():
            setattr(self, key, value)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        return f"{type(self).__name__}({args})"

    def fit(self, feats: np.ndarray, W: np.ndarray, b: np.ndarray) -> "Truncation":
        self.W_, self.b_ = W, b
        self._fit(feats, W, b)
        return self

    def _fit(self, feats, W, b):
        pass

    def transform(self, z: np.ndarray) -> np.ndarray:
        """g(z), float32."""
        return z

    def head(self):
        """The (W, b) to use on truncated features."""
        return self.W_, self.b_

    def logits(self, z: np.ndarray, gz: np.ndarray | None = None) -> np.ndarray:
        """Logits of the truncated features, ``W' g(z) + b``."""
        W, b = self.head()
        return nx.linear(self.transform(z) if gz is None else gz, W, b)

    def apply(self, z: np.ndarray, raw_logits: np.ndarray | None = None):
        """``(g(z), W' g(z) + b)`` for test features z; ``raw_logits`` = W z + b when known (SCALE derives
        its logits from them instead of multiplying by the head again)."""
        gz = self.transform(z)
        return gz, self.logits(z, gz)


class ReAct(Truncation):
    """ReAct (Sun et al. 2021): z <- min(z, thr), thr = the p-th percentile of all ID training activations.

    The original uses p = 90; ViM-style code (and the MME reference script) uses the 99th training quantile.
    """

    name, title = "react", "ReAct"
    summary = "clip activations above the p-th percentile of ID training activations"
    defaults = {"percentile": 90.0}
    presets = {"reference_imagenet": {"percentile": 99.0}}
    ranges = {"percentile": rg.clip_percentile}

    def _fit(self, feats, W, b):
        self.threshold_ = nx.quantile(feats, self.percentile / 100.0)

    def transform(self, z):
        return torch.clamp(nx.t(z), max=float(np.float32(self.threshold_))).numpy()


class DICE(Truncation):
    """DICE (Sun & Li 2022): keep only the head weights whose contribution mean_train(z)_j * W_cj is above its
    p-th percentile (p = 90 CIFAR, 70 ImageNet); features are untouched."""

    name, title = "dice", "DICE"
    summary = "sparsify the head: keep weights whose mean contribution is above the p-th percentile"
    defaults = {"p": 90.0}
    presets = {"cifar": {"p": 90.0}, "imagenet": {"p": 70.0}, "reference_imagenet": {"p": 90.0}}
    ranges = {"p": rg.percentile}  # p = 100 would zero every weight
    changes_features = False

    def _fit(self, feats, W, b):
        mean = nx.column_mean(feats)
        contrib = mean[None, :].astype(np.float32) * W
        self.threshold_ = float(np.percentile(contrib, self.p))
        self.masked_W_ = np.where(contrib > self.threshold_, W, 0).astype(np.float32)

    def head(self):
        return self.masked_W_, self.b_


def _kept(d: int, percentile: float) -> int:
    """How many activations ASH-S / SCALE keep: D - round(D p / 100) (at least one)."""
    return max(1, d - int(np.round(d * percentile / 100.0)))


def _scale_ratio(total: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """s1/s2 of ASH-S and SCALE: the sum of all activations over the sum of the kept (top-k) ones."""
    ratio = torch.where(kept != 0, total / torch.where(kept != 0, kept, 1.0), 0.0)  # zero feature: no scaling
    return torch.clamp(ratio, -MAX_SCALE_RATIO, MAX_SCALE_RATIO)


class ASHS(Truncation):
    """ASH-S (Djurisic et al. 2023): keep the top-k activations (prune the p% smallest), zero the rest, and
    multiply by exp(s1/s2) (s1 = sum before, s2 = sum after pruning); p = 95 CIFAR, 90 ImageNet.
    (OpenOOD's "ASH" is ASH-B, a different variant.)"""

    name, title = "ash", "ASH-S"
    summary = "prune all but the top (100-p)% activations, scale by exp(sum/kept sum)"
    defaults = {"percentile": 90.0}
    presets = {"cifar": {"percentile": 95.0}, "imagenet": {"percentile": 90.0},
               "reference_imagenet": {"percentile": 95.0}}
    ranges = {"percentile": rg.percentile}

    def transform(self, z):
        k = _kept(z.shape[1], self.percentile)
        out = np.zeros_like(z)
        for s in nx.row_blocks(z.shape[0], z.shape[1]):
            zs = nx.t(z[s])
            vals, idx = torch.topk(zs, k, dim=1, sorted=False)
            factor = torch.exp(_scale_ratio(zs.sum(dim=1), vals.sum(dim=1)))
            nx.t(out[s]).scatter_(1, idx, vals * factor[:, None])
        return out


class SCALE(Truncation):
    """SCALE (Xu et al. 2024): z <- z * exp(s1/s2) with the ASH-S ratio but *no* pruning. The stand-alone
    SCALE baseline uses p = 85 (its paper, the OpenOOD fork); MME uses p = 90 inside its score."""

    name, title = "scale", "SCALE"
    summary = "scale the whole feature by exp(sum / sum of its top (100-p)%)"
    defaults = {"percentile": 85.0}
    ranges = {"percentile": rg.percentile}

    def factor(self, z):
        """exp(s1/s2) per sample (float64)."""
        k = _kept(z.shape[1], self.percentile)
        out = np.empty(z.shape[0], dtype=np.float64)
        for s in nx.row_blocks(z.shape[0], z.shape[1]):
            zs = nx.t(z[s])
            kept = torch.topk(zs, k, dim=1, sorted=False).values.sum(dim=1)
            out[s] = torch.exp(_scale_ratio(zs.sum(dim=1), kept).double()).numpy()
        return out

    def transform(self, z):
        return _scaled_rows(z, self.factor(z))

    def logits_from_raw(self, z, raw_logits):
        """W (c z) + b = c (l - b) + b: SCALE logits from the raw logits without another matmul (float32)."""
        return self._logits_from_raw(raw_logits, self.factor(z))

    def _logits_from_raw(self, raw_logits, factor):
        b = nx.t(self.b_.astype(np.float32))
        return ((nx.t(raw_logits) - b) * nx.t(factor.astype(np.float32))[:, None] + b).numpy()

    def apply(self, z, raw_logits=None):
        factor = self.factor(z)
        gz = _scaled_rows(z, factor)
        if raw_logits is None:
            return gz, nx.linear(gz, self.W_, self.b_)
        return gz, self._logits_from_raw(raw_logits, factor)


def _scaled_rows(z: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Each row of z times its factor (float32)."""
    return (nx.t(z) * nx.t(factor.astype(np.float32))[:, None]).numpy()


class VRA(Truncation):
    """Original VRA-P (Xu et al. 2023, NeurIPS): per dimension j, with thresholds a_j, b_j the ``lower`` and
    ``upper`` quantiles of the ID training activations of dimension j:
    g(z) = 0 if z < a_j;  z + gamma if a_j <= z <= b_j;  b_j if z > b_j.
    The paper tunes lower in {0.5..0.7}, upper in {0.8..0.99}, gamma in {0.2..0.7}; defaults are mid-grid."""

    name, title = "vra", "VRA"
    summary = "per-dimension: zero below the lower quantile, +gamma in between, clip at the upper quantile"
    defaults = {"lower": 0.6, "upper": 0.95, "gamma": 0.5}
    ranges = {"lower": rg.quantile, "upper": rg.quantile, "gamma": rg.non_negative}
    ordered = (("lower", "upper"),)

    def _fit(self, feats, W, b):
        self.low_, self.high_ = nx.column_quantiles(feats, [self.lower, self.upper]).astype(np.float32)

    def transform(self, z):
        zt, low, high = nx.t(z), nx.t(self.low_), nx.t(self.high_)
        out = torch.where(zt < low, 0.0, zt + float(self.gamma))
        return torch.where(zt > high, high, out).numpy()


class VRAClip(Truncation):
    """The VRA used inside MME's reference code: a two-sided clip z <- clip(z, a, b) with *scalar* thresholds,
    a and b the ``lower``/``upper`` quantiles (0.01 / 0.99) of all ID training activations.
    ``per_dimension=True`` uses per-dimension quantiles instead (pytorch-ood's VRA does this)."""

    name, title = "vra_clip", "VRA (two-sided clip, MME)"
    summary = "clip activations to the [1%, 99%] quantiles of ID training activations"
    defaults = {"lower": 0.01, "upper": 0.99, "per_dimension": False}
    ranges = {"lower": rg.quantile, "upper": rg.quantile, "per_dimension": rg.flag}
    ordered = (("lower", "upper"),)

    def _fit(self, feats, W, b):
        if self.per_dimension:
            self.low_, self.high_ = nx.column_quantiles(feats, [self.lower, self.upper]).astype(np.float32)
        else:
            self.low_, self.high_ = np.array(nx.quantiles(feats, [self.lower, self.upper]), dtype=np.float32)

    def transform(self, z):
        if self.per_dimension:
            return torch.clamp(nx.t(z), nx.t(self.low_), nx.t(self.high_)).numpy()
        return torch.clamp(nx.t(z), float(self.low_), float(self.high_)).numpy()


TRUNCATIONS: dict[str, type[Truncation]] = {
    cls.name: cls for cls in (ReAct, DICE, ASHS, SCALE, VRA, VRAClip)
}


def get_truncation(name: str, preset: str | None = None, **hparams) -> Truncation:
    """Build a truncation by name (``react``, ``dice``, ``ash``, ``scale``, ``vra``, ``vra_clip``)."""
    if name not in TRUNCATIONS:
        raise ValueError(f"unknown truncation {name!r}; valid: {', '.join(TRUNCATIONS)}")
    cls = TRUNCATIONS[name]
    base = {}
    if preset is not None:
        base = dict(cls.presets.get(preset, {}))
    return cls(**{**base, **hparams})
