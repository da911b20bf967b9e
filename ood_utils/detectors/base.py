"""The one interface every post-hoc detector shares.

    det = SomeDetector(**hparams)
    det.fit(feats, logits, labels, W, b)      # statistics of the ID training set
    scores = det.score(feats, logits)         # 1-D float64, HIGHER = MORE ID, always finite

``feats`` are penultimate features z (N, D), ``logits`` = W z + b (N, C), ``W`` (C, D) and ``b`` (C,) the
classification head, ``labels`` (N,) integer class labels. numpy arrays and torch tensors are accepted.
Shapes are checked before any work is done, so a transposed W or a wrong feature layer fails with a clear
message instead of a broadcasting error deep inside a detector.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from . import _numerics as nx
from . import ranges as rg


class NotFittedError(RuntimeError):
    """``score`` was called before ``fit``."""


def to_numpy(x: Any, name: str, dtype=np.float32) -> np.ndarray | None:
    """numpy view/copy of a numpy array or torch tensor (no copy when it already has ``dtype``)."""
    if x is None:
        return None
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object:
        raise ValueError(f"{name} must be a numeric array, got dtype=object")
    return np.ascontiguousarray(arr, dtype=dtype)


def _shape_error(name: str, expected: str, arr: np.ndarray) -> ValueError:
    return ValueError(f"{name} must have shape {expected}, got {tuple(arr.shape)}")


class Detector:
    """Base class: hyperparameter validation, input checks, the fit/score protocol.

    Subclasses set ``name``, ``title``, ``summary``, ``defaults`` (hyperparameter -> default value) and
    ``presets`` ({"cifar": {...}, "imagenet": {...}}) and implement ``_fit`` and ``_score``.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    defaults: ClassVar[dict] = {}
    presets: ClassVar[dict] = {}
    needs_labels: ClassVar[bool] = False
    kind: ClassVar[str] = "score"
    #: the training arrays ``_fit`` reads. Logit-only scores read neither (fitting them is free), KL
    #: matching reads only the logits; arrays a detector does not read are shape-checked, not scanned.
    fit_inputs: ClassVar[tuple] = ("feats", "logits")
    #: hyperparameter -> its valid range (see ``ranges``); pairs of hyperparameters that must be ordered
    ranges: ClassVar[dict] = {}
    ordered: ClassVar[tuple] = ()

    def __init__(self, truncation=None, **hparams):
        unknown = sorted(set(hparams) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "(none)"
            raise ValueError(f"unknown hyperparameter(s) {unknown} for detector {self.name!r}; valid: {valid}")
        self.hparams = {**self.defaults, **hparams}
        rg.check(self.name, self.hparams, self.ranges, self.ordered)
        for key, value in self.hparams.items():
            setattr(self, key, value)
        self.truncation = self._resolve_truncation(truncation)
        self._fitted = False
        self.dim_: int | None = None
        self.num_classes_: int | None = None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        if self.truncation is not None:
            args += f", truncation={self.truncation!r}"
        return f"{type(self).__name__}({args})"

    def _resolve_truncation(self, truncation):
        """None, a truncation name, or a Truncation instance (see ``truncation.get_truncation``)."""
        from .truncation import Truncation, get_truncation

        if truncation is None:
            return None
        if self.kind != "score":
            raise ValueError(f"detector {self.name!r} fixes its own truncations; truncation= is only for scoring functions")
        if isinstance(truncation, str):
            return get_truncation(truncation)
        if isinstance(truncation, Truncation):
            return truncation
        raise ValueError(f"truncation must be a name or a Truncation, got {type(truncation).__name__}")

    # ------------------------------------------------------------------------------------------ protocol
    def fit(self, feats, logits=None, labels=None, W=None, b=None) -> "Detector":
        """Collect the training-set statistics. ``logits`` may be None (then computed as feats W^T + b)."""
        feats, logits, labels, W, b = self._check_fit_inputs(feats, logits, labels, W, b)
        self.W_, self.b_ = W, b
        self.dim_, self.num_classes_ = W.shape[1], W.shape[0]
        if self.truncation is not None:
            # statistics of the scoring function stay those of the raw features (as in the MME reference
            # code); only test features are truncated
            self.truncation.fit(feats, W, b)
        self._fit(feats, logits, labels, W, b)
        self._fitted = True
        return self

    def score(self, feats, logits=None) -> np.ndarray:
        """Scores of test samples: 1-D float64, higher = more in-distribution."""
        if not self._fitted:
            raise NotFittedError(f"detector {self.name!r} is not fitted: call .fit(feats, logits, labels, W, b) first")
        if self.truncation is not None:
            # the scoring function sees g(z) and the logits W' g(z) + b (SCALE derives them from the given
            # logits W z + b; the other truncations multiply g(z) by the head)
            feats, logits = self._check_score_inputs(feats, logits, need_logits=False)
            feats, logits = self.truncation.apply(feats, logits)
        else:
            feats, logits = self._check_score_inputs(feats, logits)
        out = np.asarray(self._score(feats, logits), dtype=np.float64).reshape(-1)
        if out.shape[0] != feats.shape[0]:
            raise RuntimeError(f"{self.name}: produced {out.shape[0]} scores for {feats.shape[0]} samples")
        if not np.all(np.isfinite(out)):
            raise FloatingPointError(f"{self.name}: {int((~np.isfinite(out)).sum())} non-finite scores")
        return out

    def _fit(self, feats, logits, labels, W, b):  # pragma: no cover - overridden
        raise NotImplementedError

    def _score(self, feats, logits):  # pragma: no cover - overridden
        raise NotImplementedError

    # ---------------------------------------------------------------------------------------- validation
    def _check_fit_inputs(self, feats, logits, labels, W, b):
        feats = to_numpy(feats, "feats")
        W = to_numpy(W, "W")
        b = to_numpy(b, "b")
        if feats is None or W is None or b is None:
            raise ValueError("fit needs feats (N, D), W (C, D) and b (C,); logits and labels may be None")
        if feats.ndim != 2:
            raise _shape_error("feats", "(N, D)", feats)
        n, d = feats.shape
        if n < 2:
            raise ValueError(f"fit needs at least 2 training samples, got {n}")
        if W.ndim != 2 or W.shape[1] != d:
            raise _shape_error("W", f"(C, D={d}) (the head weight, classes x features)", W)
        c = W.shape[0]
        if b.shape != (c,):
            raise _shape_error("b", f"(C={c},)", b)
        uses = set(self.fit_inputs) | ({"feats"} if self.truncation is not None else set())
        if logits is not None:
            logits = to_numpy(logits, "logits")
            if logits.shape != (n, c):
                raise _shape_error("logits", f"(N={n}, C={c})", logits)
        elif "logits" in uses:
            logits = nx.linear(feats, W, b)
        if labels is not None:
            labels = to_numpy(labels, "labels", dtype=np.int64)
            if labels.shape != (n,):
                raise _shape_error("labels", f"(N={n},)", labels)
            if labels.min() < 0 or labels.max() >= c:
                raise ValueError(f"labels must lie in [0, C={c}); got range [{labels.min()}, {labels.max()}]")
        elif self.needs_labels:
            raise ValueError(f"detector {self.name!r} needs the training labels: fit(feats, logits, labels, W, b)")
        arrays = {"feats": feats, "logits": logits, "W": W, "b": b}
        for name in ("W", "b", *sorted(uses)):
            if not nx.all_finite(arrays[name]):
                raise ValueError(f"{name} contains NaN or inf")
        return feats, logits, labels, W, b

    def _check_score_inputs(self, feats, logits, need_logits: bool = True):
        feats = to_numpy(feats, "feats")
        if feats is None or feats.ndim != 2 or feats.shape[1] != self.dim_:
            raise ValueError(
                f"feats must have shape (N, D={self.dim_}) as in fit, got "
                f"{None if feats is None else tuple(feats.shape)}")
        if logits is not None:
            logits = to_numpy(logits, "logits")
            if logits.shape != (feats.shape[0], self.num_classes_):
                raise _shape_error("logits", f"(N={feats.shape[0]}, C={self.num_classes_})", logits)
        elif need_logits:
            logits = nx.linear(feats, self.W_, self.b_)
        return feats, logits
