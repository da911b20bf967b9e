"""MME itself (eq. 7), rebuilt from its five detectors so that a factor can be dropped (Table 3), fed another
truncation (Table 5) or joined by another score (Table 6).

    MME(x) = exp(SCALE(x) - ViM(VRA(x))) * fDBD(VRA(x)) * PCA(VRA(x)) * CO+(x) * NME+(x)

The product is evaluated as a sum of logs exactly as ``detectors.MME`` does (a test checks that both give
the same scores): it ranks samples like the product and never overflows.
"""
from __future__ import annotations

import copy

import numpy as np

from ..detectors import DETECTORS, PRESETS
from ..detectors._numerics import logsumexp, signed_log1p_from_log
from .benchmark import Benchmark, fit_detector, fitted_truncation, score_sets

#: where each factor of eq. (7) reads its features: SCALE for the energy, VRA for ViM / fDBD / PCA, raw for NME+
MME_TRUNCATIONS = {"energy": "scale", "vim": "vra_clip", "fdbd": "vra_clip", "pca": "vra_clip", "nme": None}


MME_FACTORS = ("energy", "vim", "fdbd", "pca", "nme", "co")


#: the five positive factors of eq. (7) as Proposition 1 sees them
FACTOR_TITLES = {"exp": "exp(SCALE - ViM)", "fdbd": "fDBD(VRA)", "pca": "1 - r (PCA, VRA)", "co": "CO+",
                 "nme": "NME+"}


class MMEParts:
    """The detectors inside MME (eq. 7), fitted once on the ID training features:

        MME(x) = exp(SCALE(x) - ViM(VRA(x))) * fDBD(VRA(x)) * PCA(VRA(x)) * CO+(x) * NME+(x)

    Each factor's log is computed separately (:meth:`log_factors`), on the truncation of ``MME_TRUNCATIONS``
    or one given per factor; :meth:`combine` adds the logs back (sign-aware, as ``detectors.MME`` does in its
    default ``log_mode="signed"``). Hyperparameters: ``detectors.MME``'s defaults, its ``preset``, then
    ``hparams``."""

    def __init__(self, bench: Benchmark, preset: str | None = None, **hparams):
        preset = preset or bench.preset
        self.bench, self.preset = bench, preset
        self.h = {**DETECTORS["mme"].defaults, **PRESETS.get(preset, {}).get("mme", {}), **hparams}
        self.truncations = {
            None: None,
            "scale": fitted_truncation(bench, "scale", percentile=self.h["scale_percentile"]),
            "vra_clip": fitted_truncation(bench, "vra_clip", lower=self.h["vra_lower"], upper=self.h["vra_upper"]),
        }
        self.vim = fit_detector(bench, "vim", preset, dim=self.h["dim"])
        self.fdbd = fit_detector(bench, "fdbd", preset)
        self.pca = fit_detector(bench, "pca", preset, k=self.h["k"])
        self._fit_nme_co()
        self._cache = {}  # shared with retuned() copies: its keys name the hyperparameters they depend on

    def _fit_nme_co(self):
        self.nme = fit_detector(self.bench, "nme", self.preset, temperature=self.h["temperature"])
        self.co = fit_detector(self.bench, "co", self.preset, co_weight=self.h["co_weight"])

    def retuned(self, **hparams) -> "MMEParts":
        """A copy with other NME+ / CO+ hyperparameters (``temperature``, ``co_weight``); the costly parts
        (ViM, PCA, truncations) are shared, not refitted (Fig. 5 sweeps)."""
        unknown = sorted(set(hparams) - {"temperature", "co_weight"})
        if unknown:
            raise ValueError(f"retuned() changes temperature and co_weight only, got {unknown}")
        out = copy.copy(self)
        out.h = {**self.h, **hparams}
        out._fit_nme_co()
        return out

    def inputs(self, truncation: str | None, feats: np.ndarray, logits: np.ndarray):
        """(g(z), logits of g(z)) for the truncation g (None = raw)."""
        if truncation not in self.truncations:
            raise ValueError(f"unknown truncation {truncation!r} for an MME factor; valid: "
                             f"{', '.join(str(t) for t in self.truncations)}")
        t = self.truncations[truncation]
        if t is None:
            return feats, logits
        gz = t.transform(feats)
        return gz, (t.logits_from_raw(feats, logits) if truncation == "scale" else t.logits(feats, gz))

    def log_factors(self, feats, logits, truncations: dict | None = None) -> dict[str, tuple]:
        """``{factor: (log|factor|, sign)}`` for energy, vim, fdbd, pca, nme, co (see ``MME_FACTORS``).

        energy: E(l_g) = logsumexp of the logits of g(z)        (the exp(...) factor, first half)
        vim:    -alpha ||(g(z) - u) NS||, ViM's virtual logit     (the exp(...) factor, second half)
        fdbd:   log fDBD(g(z));  pca: log |1 - r(g(z))|          (either can be <= 0: sign kept)
        nme:    log NME+(g(z));  co: log lambda where argmax SCALE logits == argmin NME distance, else 0"""
        tr = {**MME_TRUNCATIONS, **(truncations or {})}
        return {k: self._factor(k, tr.get(k), feats, logits) for k in MME_FACTORS}

    def _factor(self, name: str, truncation, feats, logits) -> tuple:
        """One factor's (log|factor|, sign); kept for the benchmark's own sets, so that the ablations, which
        change one factor at a time, compute every other factor once."""
        own = any(feats is f.feats for f in (self.bench.test, *self.bench.ood.values()))
        key = (name, truncation, self.h["temperature"] if name == "nme" else None,
               self.h["co_weight"] if name == "co" else None, id(feats))
        if own and key in self._cache:
            return self._cache[key]
        one = np.ones(len(feats))
        gz, gl = self.inputs(truncation, feats, logits)
        if name == "energy":
            out = (logsumexp(np.asarray(gl)), one)
        elif name == "vim":
            out = (-self.vim.alpha_ * self.vim.residual_norm(gz), one)
        elif name in ("fdbd", "pca"):
            value = self.fdbd.score(gz, gl) if name == "fdbd" else self.pca.one_minus_r(gz)
            out = (_log_abs(value), np.sign(value))
        elif name == "nme":
            out = (self.nme.score(gz, gl), one)
        else:  # co: CO+ reads the raw feature's nearest mean and the SCALE logits' argmax
            _, scale_logits = self.inputs("scale", feats, logits)
            out = (np.where(self.co.agreement(feats, scale_logits), np.log(float(self.h["co_weight"])), 0.0), one)
        if own:
            self._cache[key] = out
        return out

    @staticmethod
    def combine(factors: dict[str, tuple], drop=()) -> np.ndarray:
        """sign(prod) * log(1 + |prod|) of the product of the factors not in ``drop``: finite, and ordered
        exactly as the product itself (``detectors.MME``'s signed log mode)."""
        unknown = sorted(set(drop) - set(factors))
        if unknown:
            raise ValueError(f"cannot drop {unknown}; factors: {', '.join(factors)}")
        keep = [k for k in factors if k not in drop]
        if not keep:
            raise ValueError("at least one factor must remain")
        log_abs = sum(factors[k][0] for k in keep)
        sign = np.prod([factors[k][1] for k in keep], axis=0)
        return signed_log1p_from_log(log_abs, sign)

    def scores(self, truncations: dict | None = None, drop=(), extra=None) -> dict[str, np.ndarray]:
        """MME scores on every set; ``extra(feats, logits) -> (log|f|, sign)`` multiplies in one more factor."""
        def score(feats, logits):
            f = self.log_factors(feats, logits, truncations)
            if extra is not None:
                f["extra"] = extra(feats, logits)
            return self.combine(f, drop)

        return score_sets(self.bench, score)


def _log_abs(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):  # log 0 = -inf: the product is 0, combine() maps it to 0
        return np.log(np.abs(x))


def positive_factor(train_scores: np.ndarray):
    """How an extra score S becomes a factor of the product (Table 6): S itself when it is positive on every
    training sample (NNGuide, SHE on ReLU features), otherwise exp(S) (GEN is <= 0), the device eq. (7)
    uses for SCALE - ViM. Returns ``f(scores) -> (log|factor|, sign)``."""
    if np.min(train_scores) > 0:
        return lambda s: (_log_abs(s), np.sign(s))
    return lambda s: (np.asarray(s, dtype=np.float64), np.ones(len(s)))


def factor_label(factors: str) -> str:
    """"exp · fdbd" -> "exp(SCALE - ViM) · fDBD(VRA)"; the product of all five -> "all five"."""
    parts = factors.split(" x ")
    return "all five" if len(parts) == len(FACTOR_TITLES) else " · ".join(FACTOR_TITLES.get(p, p) for p in parts)


def factor_table(parts: MMEParts, temperatures) -> dict[str, dict]:
    """Everything needed to recombine MME in milliseconds (the notebook's widget): per set ("id" and each
    OOD set) the ``(log|factor|, sign)`` of every factor, NME+'s log for each temperature in
    ``temperatures`` and CO's agreement mask (CO+ = lambda where it is True, for any lambda)."""
    tuned = {float(t): parts.retuned(temperature=float(t)) for t in temperatures}
    sets = {"id": parts.bench.test, **parts.bench.ood}
    out = {}
    for name, f in sets.items():
        gz, gl = parts.inputs(MME_TRUNCATIONS["nme"], f.feats, f.logits)
        _, scale_logits = parts.inputs("scale", f.feats, f.logits)
        out[name] = {"logs": parts.log_factors(f.feats, f.logits),
                     "nme": {t: p.nme.score(gz, gl) for t, p in tuned.items()},
                     "agree": parts.co.agreement(f.feats, scale_logits)}
    return out


def recombine(table: dict, keep=MME_FACTORS, temperature: float | None = None,
              co_weight: float | None = None) -> dict[str, np.ndarray]:
    """MME scores per set from :func:`factor_table`, with only the factors in ``keep`` and, optionally, NME+
    at another ``temperature`` (one of the table's) and CO+ at another ``co_weight`` (lambda)."""
    drop = [k for k in MME_FACTORS if k not in keep]
    out = {}
    for name, t in table.items():
        f = dict(t["logs"])
        ones = np.ones(len(t["agree"]))
        if temperature is not None:
            f["nme"] = (t["nme"][float(temperature)], ones)
        if co_weight is not None:
            f["co"] = (np.where(t["agree"], np.log(float(co_weight)), 0.0), ones)
        out[name] = MMEParts.combine(f, drop)
    return out
