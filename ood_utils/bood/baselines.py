"""Other ways to make outlier features: the ablations of BOOD's Tables 3 and 6, and DreamOOD's sampler.

Every generator returns :class:`boundary.Outliers` (features rescaled to the anchor norm, ready to decode),
so the decoder, the regulariser and the evaluation are the same for all of them and only the features
differ. Features are L2-normalised first, as in BOOD.

- Table 3: ``boundary_only`` decodes the boundary features themselves (identification, no perturbation);
  ``random_then_perturb`` walks randomly chosen features across the boundary (perturbation, no
  identification).
- Table 6: ``gaussian_noise`` and ``away_from_centroids`` move the boundary features by the same mean
  distance as BOOD's walks, in a random direction or away from the class centroid.
- ``dreamood``: DreamOOD's low-likelihood sampling: per class, the features with the largest k-NN distance
  are the anchors, Gaussian noise makes candidates around them, the candidate farthest from the class
  (largest k-NN distance) is kept.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .boundary import Outliers, boundary_features, boundary_steps, rescale_to_anchors, synthesize

METHODS = ("boundary_only", "random_then_perturb", "gaussian_noise", "away_from_centroids", "dreamood")


def _inputs(feats, labels, anchors):
    return (F.normalize(torch.as_tensor(feats).float(), dim=1), torch.as_tensor(labels).long(),
            torch.as_tensor(anchors).float())


def _outliers(z, labels, idx, kappa, anchors, method, n_selected=None, n_dropped=0) -> Outliers:
    return Outliers(rescale_to_anchors(z, labels[idx], anchors), labels[idx], idx, kappa[idx],
                    n_selected=len(idx) if n_selected is None else n_selected, n_dropped=n_dropped, method=method)


def boundary_only(feats, labels, anchors, *, ratio=5.0, alpha=0.015, max_steps=100, temperature=1.0) -> Outliers:
    """Table 3 row 1: the r% lowest-kappa features per class, decoded as they are."""
    z, y, g = _inputs(feats, labels, anchors)
    idx, kappa = boundary_features(z, y, g, ratio, alpha, max_steps, temperature)
    return _outliers(z[idx], y, idx, kappa, g, "boundary identification only")


def random_selection(labels, ratio: float, num_classes: int, seed: int = 0) -> torch.Tensor:
    """As many features per class as :func:`select_boundary` takes, chosen at random (sorted indices)."""
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(num_classes):
        members = (labels == c).nonzero().squeeze(1)
        n_keep = int(len(members) * ratio / 100 + 1e-9)
        chosen.append(members[torch.randperm(len(members), generator=gen)[:n_keep]])
    return torch.cat(chosen).sort().values


def random_then_perturb(feats, labels, anchors, *, ratio=5.0, alpha=0.015, extra_steps=2, max_steps=100,
                        temperature=1.0, seed=0) -> Outliers:
    """Table 3 row 2: random features (no boundary identification) walked across the boundary."""
    z, y, g = _inputs(feats, labels, anchors)
    idx = random_selection(y, ratio, len(g), seed)
    kappa = boundary_steps(z, y, g, alpha, max_steps, temperature)
    z_ood, crossed = synthesize(z[idx], y[idx], g, alpha, extra_steps, max_steps, temperature)
    return _outliers(z_ood, y, idx[crossed], kappa, g, "feature perturbation only", len(idx),
                     int((~crossed).sum()))


def gaussian_noise(feats, labels, anchors, distance: float, *, ratio=5.0, alpha=0.015, max_steps=100,
                   temperature=1.0, seed=0) -> Outliers:
    """Table 6 (1): boundary features plus isotropic Gaussian noise of expected length ``distance``."""
    z, y, g = _inputs(feats, labels, anchors)
    idx, kappa = boundary_features(z, y, g, ratio, alpha, max_steps, temperature)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(idx), z.shape[1], generator=gen) * (distance / z.shape[1] ** 0.5)
    return _outliers(z[idx] + noise, y, idx, kappa, g, "Gaussian noise")


def class_centroids(z: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean normalised feature of each class (C, D)."""
    return torch.stack([z[y == c].mean(0) for c in range(num_classes)])


def away_from_centroids(feats, labels, anchors, distance: float, *, ratio=5.0, alpha=0.015, max_steps=100,
                        temperature=1.0) -> Outliers:
    """Table 6 (2): boundary features pushed ``distance`` further along (z - centroid of their class)."""
    z, y, g = _inputs(feats, labels, anchors)
    idx, kappa = boundary_features(z, y, g, ratio, alpha, max_steps, temperature)
    mu = class_centroids(z, y, len(g))
    direction = F.normalize(z[idx] - mu[y[idx]], dim=1)
    return _outliers(z[idx] + distance * direction, y, idx, kappa, g, "away from class centroids")


def knn_distance(queries: torch.Tensor, bank: torch.Tensor, k: int, exclude_self: bool = False) -> torch.Tensor:
    """Distance of each query to its k-th nearest neighbour in ``bank`` (exact, dense)."""
    d = torch.cdist(queries, bank)
    k_eff = max(1, min(k + int(exclude_self), bank.shape[0]))
    return d.topk(k_eff, dim=1, largest=False).values[:, -1]


def dreamood(feats, labels, anchors, *, ratio=5.0, k=300, sigma=0.07, n_candidates=20, seed=0) -> Outliers:
    """DreamOOD's sampler, per class: r% lowest-density features (largest k-NN distance) as anchors, then
    ``n_candidates`` Gaussian samples (std ``sigma``) around each, keeping the farthest from the class."""
    z, y, g = _inputs(feats, labels, anchors)
    gen = torch.Generator().manual_seed(seed)
    picked, rows = [], []
    for c in range(len(g)):
        members = (y == c).nonzero().squeeze(1)
        n_keep = int(len(members) * ratio / 100 + 1e-9)
        if n_keep == 0:
            continue
        zc = z[members]
        kc = min(k, len(members) - 1)
        density = knn_distance(zc, zc, kc, exclude_self=True)
        order = torch.argsort(-density, stable=True)[:n_keep]
        cand = zc[order].unsqueeze(1) + sigma * torch.randn(n_keep, n_candidates, z.shape[1], generator=gen)
        far = knn_distance(cand.reshape(-1, z.shape[1]), zc, kc).reshape(n_keep, n_candidates)
        picked.append(cand[torch.arange(n_keep), far.argmax(1)])
        rows.append(members[order])
    if not rows:
        raise ValueError(f"r={ratio}% selects no feature in any class; raise r")
    idx = torch.cat(rows)
    kappa = torch.full((len(z),), -1, dtype=torch.long)   # DreamOOD does not count boundary steps
    return Outliers(rescale_to_anchors(torch.cat(picked), y[idx], g), y[idx], idx, kappa[idx],
                    n_selected=len(idx), n_dropped=0, method="DreamOOD")


def mean_walk_distance(feats, labels, anchors, *, ratio=5.0, alpha=0.015, extra_steps=2, max_steps=100,
                       temperature=1.0) -> float:
    """Mean L2 distance BOOD's walk moves a boundary feature: Table 6's variants move as far."""
    z, y, g = _inputs(feats, labels, anchors)
    idx, kappa = boundary_features(z, y, g, ratio, alpha, max_steps, temperature)
    z_ood, crossed = synthesize(z[idx], y[idx], g, alpha, extra_steps, max_steps, temperature, warn=False)
    return float((z_ood - z[idx][crossed]).norm(dim=1).mean())
