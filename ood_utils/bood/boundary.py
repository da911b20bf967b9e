"""Boundary identification (BOOD eq. 3) and OOD feature synthesis (eqs. 4-5) in the latent space.

Every step is a sign-gradient ascent step on the cross-entropy of the cosine classifier with the feature's
own label y, the FGSM step of adversarial attacks applied to a feature instead of an image:

    z <- z + alpha * sign( grad_z CE(cos(z, Gamma) / t, y) )

- eq. (3): kappa(z) = the number of steps before the prediction first differs from y (at most K). A small
  kappa means a feature close to a decision boundary; the r% lowest-kappa features of each class are the
  *boundary features*.
- eqs. (4)-(5): a boundary feature is walked until its prediction changes, then ``c`` more steps, so the
  outlier sits just beyond the boundary. Features that never cross within K steps are dropped.

Two readings of the text, written down here because they change which features are chosen:
- a feature the classifier already gets wrong has kappa = 0 (eq. 3's k starts at 0), but the count measures
  nothing for it: eqs. (3)-(4) iterate *while* f(z) = y, i.e. they walk features from the correct side of
  their class's boundary, and a misclassified feature may lie anywhere inside another class. Selection
  (:func:`select_boundary`) therefore takes the r% lowest kappa among the correctly classified features.
- kappa is an integer, so many features share a value; ties are broken by the cosine margin (own-class
  logit minus the best other, :func:`class_margin`): the closer feature first, then the lower index.

All features move at once: a feature's logits depend on that feature only, so one batched pass with a
per-row "still walking" mask is exactly the per-feature loop of the paper (``tests`` check this).
Features are L2-normalised first (eq. 2's z); the walk itself does not re-project (as in the reference).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..threads import one_cpu_thread
from .latent import cosine_logits


class BoundaryError(ValueError):
    """Boundary selection or synthesis cannot produce any feature with these settings."""


def _check(z, y, anchors, alpha, max_steps, temperature):
    if z.ndim != 2 or anchors.ndim != 2 or z.shape[1] != anchors.shape[1]:
        raise ValueError(f"z must be (N, D) and anchors (C, D) with the same D; got {tuple(z.shape)} and "
                         f"{tuple(anchors.shape)}")
    if y.shape != (z.shape[0],):
        raise ValueError(f"y must hold one label per feature: {tuple(y.shape)} for {z.shape[0]} features")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= anchors.shape[0]):
        raise ValueError(f"labels must lie in [0, {anchors.shape[0] - 1}]")
    if not alpha > 0 or not temperature > 0:
        raise ValueError(f"alpha and temperature must be > 0, got alpha={alpha}, temperature={temperature}")
    if not (isinstance(max_steps, int) and max_steps >= 1):
        raise ValueError(f"max_steps (K) must be an integer >= 1, got {max_steps!r}")


def _prepare(z, y, anchors):
    z = torch.as_tensor(z).detach().float()
    return F.normalize(z, dim=1), torch.as_tensor(y).long().to(z.device), torch.as_tensor(anchors).float().to(z.device)


def sign_step(z: torch.Tensor, y: torch.Tensor, anchors: torch.Tensor, alpha: float,
              temperature: float = 1.0) -> torch.Tensor:
    """One step of eq. (3) on every row: z + alpha * sign(grad_z CE(cos(z, anchors)/t, y)).

    The loss is summed, not averaged, so each row's gradient is that row's own (batching changes nothing).
    """
    z = z.detach().requires_grad_(True)
    loss = F.cross_entropy(cosine_logits(z, anchors, temperature), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, z)
    return (z + alpha * grad.sign()).detach()


def predict(z: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """The cosine classifier's prediction (the temperature does not change the argmax)."""
    return cosine_logits(z, anchors).argmax(1)


@torch.no_grad()
@one_cpu_thread()
def _walk(z, y, anchors, alpha, max_steps, temperature, extra_steps):
    """Walk every row until its prediction differs from y (at most ``max_steps``), then ``extra_steps``
    more. Returns (final z, kappa, crossed). Small per-step tensors: one thread (10x faster on a busy CPU)."""
    kappa = torch.zeros(len(z), dtype=torch.long, device=z.device)
    walking = predict(z, anchors) == y               # rows already wrong have kappa 0
    crossed = ~walking
    for _ in range(max_steps):
        if not walking.any():
            break
        rows = walking.nonzero().squeeze(1)
        with torch.enable_grad():
            z[rows] = sign_step(z[rows], y[rows], anchors, alpha, temperature)
        kappa[rows] += 1
        now_wrong = predict(z[rows], anchors) != y[rows]
        crossed[rows[now_wrong]] = True
        walking[rows[now_wrong]] = False
    if extra_steps:
        rows = crossed.nonzero().squeeze(1)
        for _ in range(extra_steps):
            if len(rows) == 0:
                break
            with torch.enable_grad():
                z[rows] = sign_step(z[rows], y[rows], anchors, alpha, temperature)
    return z, kappa, crossed


def boundary_steps(z, y, anchors, alpha: float = 0.015, max_steps: int = 100,
                   temperature: float = 1.0) -> torch.Tensor:
    """Eq. (3): kappa per feature, the number of sign-gradient steps taken before the prediction first
    differs from ``y`` (0 if it is already wrong; ``max_steps`` if it never changes). ``z`` is normalised."""
    z, y, anchors = _prepare(z, y, anchors)
    _check(z, y, anchors, alpha, max_steps, temperature)
    return _walk(z.clone(), y, anchors, alpha, max_steps, temperature, 0)[1]


def synthesize(z, y, anchors, alpha: float = 0.015, extra_steps: int = 2, max_steps: int = 100,
               temperature: float = 1.0, *, warn: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Eqs. (4)-(5): walk each (normalised) feature until its prediction changes, then ``extra_steps`` (c)
    more. Returns ``(z_ood, crossed)``: ``crossed`` (N,) marks the features that crossed within
    ``max_steps`` and ``z_ood`` holds exactly those rows, in order (the others are dropped, with a warning
    giving the count). No feature crossing raises :class:`BoundaryError`.
    """
    if not (isinstance(extra_steps, int) and extra_steps >= 0):
        raise ValueError(f"extra_steps (c) must be an integer >= 0, got {extra_steps!r}")
    z, y, anchors = _prepare(z, y, anchors)
    _check(z, y, anchors, alpha, max_steps, temperature)
    if len(z) == 0:
        raise BoundaryError("no features to synthesise from")
    out, _, crossed = _walk(z.clone(), y, anchors, alpha, max_steps, temperature, extra_steps)
    dropped = int((~crossed).sum())
    if dropped == len(z):
        raise BoundaryError(f"none of the {len(z)} features crossed a decision boundary within "
                            f"K={max_steps} steps of size alpha={alpha}: K is too small (or alpha)")
    if dropped and warn:
        warnings.warn(f"{dropped} of {len(z)} features never crossed the boundary within K={max_steps} steps "
                      "and were dropped", RuntimeWarning, stacklevel=2)
    return out[crossed], crossed


def class_margin(z, y, anchors, temperature: float = 1.0) -> torch.Tensor:
    """Own-class cosine logit minus the largest other one: > 0 on the correct side of the boundary, 0 on it."""
    logits = cosine_logits(torch.as_tensor(z).float(), torch.as_tensor(anchors).float(), temperature)
    y = torch.as_tensor(y).long()
    own = logits.gather(1, y[:, None]).squeeze(1)
    return own - logits.scatter(1, y[:, None], float("-inf")).max(1).values


def select_boundary(kappa, y, ratio: float, num_classes: int | None = None, *, margin=None,
                    skip_misclassified: bool = True) -> torch.Tensor:
    """Indices of the boundary features: per class, the ``ratio`` percent (floor of ratio% of the class
    size) of features with the lowest kappa. ``margin`` (optional, :func:`class_margin`) breaks ties of kappa,
    smallest first; remaining ties go by index, so the choice is deterministic. ``skip_misclassified``: leave
    out features with kappa = 0 (already wrong: see the module's note). Sorted indices;
    :class:`BoundaryError` if the selection is empty."""
    kappa, y = torch.as_tensor(kappa).long().cpu(), torch.as_tensor(y).long().cpu()
    if not 0 < ratio <= 100:
        raise ValueError(f"ratio r is a percentage in (0, 100], got {ratio}")
    if margin is not None and torch.as_tensor(margin).shape != kappa.shape:
        raise ValueError(f"margin must hold one value per feature: {tuple(torch.as_tensor(margin).shape)} "
                         f"for {len(kappa)} features")
    num_classes = num_classes or (int(y.max()) + 1 if len(y) else 0)
    margin = None if margin is None else torch.as_tensor(margin).float().cpu()
    chosen = []
    for c in range(num_classes):
        members = (y == c).nonzero().squeeze(1)           # increasing index
        n_keep = math.floor(len(members) * ratio / 100 + 1e-9)
        if skip_misclassified:
            members = members[kappa[members] > 0]
        if n_keep == 0 or len(members) == 0:
            continue
        if margin is not None:                            # stable sorts: by margin, then by kappa
            members = members[torch.argsort(margin[members], stable=True)]
        order = torch.argsort(kappa[members], stable=True)
        chosen.append(members[order[:n_keep]])
    if not chosen:
        raise BoundaryError(f"r={ratio}% selects no feature (largest class: "
                            f"{int(torch.bincount(y).max()) if len(y) else 0} features"
                            f"{', correctly classified ones only' if skip_misclassified else ''}); raise r")
    return torch.cat(chosen).sort().values


def boundary_features(z, y, anchors, ratio: float, alpha: float = 0.015, max_steps: int = 100,
                      temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sec. 3.2.1 in one call: kappa of every feature (eq. 3) and the selected boundary features (correctly
    classified, lowest kappa, ties by margin). Returns ``(indices, kappa)``."""
    kappa = boundary_steps(z, y, anchors, alpha, max_steps, temperature)
    margin = class_margin(z, y, anchors, temperature)
    return select_boundary(kappa, y, ratio, torch.as_tensor(anchors).shape[0], margin=margin), kappa


def calibrate_step(z, y, anchors, *, target_median: float = 20, max_steps: int = 100,
                   temperature: float = 1.0, max_n: int = 500, iters: int = 5, seed: int = 0) -> float:
    """The step size alpha at which the median kappa of the correctly classified features is about
    ``target_median`` (at most ``max_n`` of them, drawn with ``seed``).

    This is how the ``mini`` analogue states its step length relative to the latent geometry: kappa only
    measures a distance to the boundary if a walk takes many steps to get there (the paper's K = 100 and its
    K sweep presume tens of steps), and how many depends on the dimension, the temperature and how tight the
    clusters are, which differ between the paper's 768-d CIFAR space and a 384-d MNIST one.

    A walk of small steps covers a distance of about kappa * alpha, so ``iters`` fixed-point updates
    alpha <- alpha * median(kappa) / target, from alpha = 0.015, converge in a few walks; each walk stops
    once the median is known (2 * target steps)."""
    z, y, anchors = _prepare(z, y, anchors)
    _check(z, y, anchors, 1.0, max_steps, temperature)
    if not 0 < target_median < max_steps:
        raise ValueError(f"target_median must lie in (0, K={max_steps}), got {target_median}")
    correct = (predict(z, anchors) == y).nonzero().squeeze(1)
    if len(correct) == 0:
        raise BoundaryError("no feature is correctly classified: kappa measures nothing")
    gen = torch.Generator().manual_seed(seed)
    rows = correct[torch.randperm(len(correct), generator=gen)[:max_n]]
    cap = min(max_steps, int(2 * target_median))
    alpha = 0.015
    for _ in range(iters):
        median = float(_walk(z[rows].clone(), y[rows], anchors, alpha, cap, temperature, 0)[1].float().median())
        alpha *= max(median, 0.5) / target_median      # a median of 0 cannot happen: every row starts correct
    return alpha


def rescale_to_anchors(z: torch.Tensor, y, anchors: torch.Tensor) -> torch.Tensor:
    """Before decoding, an outlier feature takes the length of its class's token embedding: normalise
    first, then scale (the public script scales an un-normalised vector, which changes the length)."""
    y = torch.as_tensor(y).long().to(z.device)
    return F.normalize(z.float(), dim=1) * anchors.to(z).norm(dim=1)[y].unsqueeze(1)


@dataclass
class Outliers:
    """Synthesised outlier features, ready to decode: ``z`` rescaled to the anchor norm, ``labels`` the
    class each one came from, ``source`` the index of its ID feature, ``kappa`` of that feature."""

    z: torch.Tensor
    labels: torch.Tensor
    source: torch.Tensor
    kappa: torch.Tensor
    n_selected: int
    n_dropped: int
    method: str = "BOOD"

    def __len__(self):
        return len(self.labels)


def boundary_outliers(feats, labels, anchors, *, ratio: float = 5.0, alpha: float = 0.015,
                      extra_steps: int = 2, max_steps: int = 100, temperature: float = 1.0,
                      kappa=None) -> Outliers:
    """The whole of Sec. 3.2 on ID features: kappa (eq. 3), the r% boundary features per class, the walk
    across the boundary (eqs. 4-5), the rescaling to the anchor norm. ``kappa``: eq. (3) already computed
    with these alpha, K and t (sweeps over c or r reuse it)."""
    feats = torch.as_tensor(feats).float()
    labels = torch.as_tensor(labels).long()
    anchors = torch.as_tensor(anchors).float()
    if kappa is None:
        idx, kappa = boundary_features(feats, labels, anchors, ratio, alpha, max_steps, temperature)
    else:
        kappa = torch.as_tensor(kappa).long()
        if kappa.shape != labels.shape:
            raise ValueError(f"kappa must hold one value per feature, got {tuple(kappa.shape)}")
        idx = select_boundary(kappa, labels, ratio, anchors.shape[0],
                              margin=class_margin(feats, labels, anchors, temperature))
    z_ood, crossed = synthesize(feats[idx], labels[idx], anchors, alpha, extra_steps, max_steps, temperature)
    kept = idx[crossed]
    return Outliers(rescale_to_anchors(z_ood, labels[kept], anchors), labels[kept], kept, kappa[kept],
                    n_selected=len(idx), n_dropped=int((~crossed).sum()))
