"""Choosing which auxiliary outliers a training step sees (GReg+, Algorithm 1, and the baselines of Table 5).

Every sampler looks at a candidate pool of auxiliary images through the current network (eval mode, no
gradient) and returns the indices of the outliers to train on:

``energy_cluster`` Algorithm 1 (GReg+): K-Means (k = ID batch size) on L2-normalised penultimate features;
    from each cluster the LOWEST-energy outlier (most ID-like: work for the energy loss, eq. 1) and the
    HIGHEST-energy one (already well scored: work for the gradient term, eq. 3); topped up at random.
``dos``  DOS (Jiang et al. 2024): K-Means on normalised features, from each cluster the single most ID-like
    (lowest-energy) outlier, i.e. the one nearest the ID/OOD boundary. DOS ranks by an extra "absent class"
    logit; the kit's networks have no such class, so the energy score plays its part.
``poem`` POEM (Ming et al. 2022): Thompson sampling from a Bayesian linear model of the ID/OOD boundary on
    penultimate features (targets +1 ID, -1 outlier); the outliers the sampled boundary finds most ID-like
    are mined. POEM refits its posterior on re-extracted features every few epochs; here the posterior is
    updated online every step with exponential forgetting (features drift as the network trains).
``random`` a uniform draw from the pool (the no-mining baseline).

K-Means runs in torch on the run's device (k-means++ seeding, several restarts, Lloyd iterations), batched
over restarts: a CPU pool of a few hundred candidates clusters in milliseconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models import unwrap_model
from ..threads import one_cpu_thread
from .energy import energy_score


# ------------------------------------------------------------------------------------------------ K-Means
@dataclass
class KMeansResult:
    labels: torch.Tensor     # (n,) cluster of every point
    centers: torch.Tensor    # (k, d)
    inertia: float           # sum of squared distances to the assigned centers
    n_iter: int


def _sq_dists(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared distances between points (n, d) and batched centers (r, k, d) -> (r, n, k), clamped at 0."""
    d = (x * x).sum(1)[None, :, None] - 2 * (x @ c.transpose(1, 2)) + (c * c).sum(2)[:, None, :]
    return d.clamp_min_(0)


def _kmeans_pp(x: torch.Tensor, k: int, restarts: int, gen: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ seeding (2 + log k candidates per step, keep the one that lowers the potential most),
    for ``restarts`` independent runs at once -> (restarts, k, d)."""
    n, d = x.shape
    trials = 2 + int(math.log(k))
    rows = torch.arange(restarts, device=x.device)
    first = torch.randint(n, (restarts,), generator=gen, device=x.device)
    centers = x[first].unsqueeze(1)                                     # (r, 1, d)
    closest = _sq_dists(x, centers)[..., 0]                             # (r, n)
    for _ in range(1, k):
        weights = closest + 1e-12 * (closest.sum(1, keepdim=True) == 0)  # all-zero potential: uniform
        cand = torch.multinomial(weights, trials, replacement=True, generator=gen)   # (r, trials)
        cand_d = _sq_dists(x, x[cand])                                  # (r, n, trials)
        new_closest = torch.minimum(closest[..., None], cand_d)         # (r, n, trials)
        best = new_closest.sum(1).argmin(1)                             # (r,)
        closest = new_closest[rows, :, best]
        centers = torch.cat([centers, x[cand[rows, best]].unsqueeze(1)], dim=1)
    return centers


def kmeans(x: torch.Tensor, k: int, *, n_init: int = 3, max_iter: int = 100, tol: float = 1e-4,
           seed: int = 0) -> KMeansResult:
    """Lloyd's K-Means with k-means++ seeding, ``n_init`` restarts run as one batch; keeps the lowest inertia.

    ``tol`` is relative to the mean per-feature variance, as in scikit-learn: iterations stop when the centers
    move less than ``tol * mean(var(x))`` (summed squared shift). An emptied cluster keeps its center.
    """
    if x.ndim != 2:
        raise ValueError(f"kmeans expects points of shape (n, d), got {tuple(x.shape)}")
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"kmeans needs 1 <= k <= number of points, got k={k} for {n} points")
    if n_init < 1 or max_iter < 1:
        raise ValueError(f"n_init and max_iter must be >= 1, got {n_init}, {max_iter}")
    with one_cpu_thread(x.device):
        return _lloyd(x.float(), k, n_init, max_iter, tol, seed)


def _lloyd(x: torch.Tensor, k: int, n_init: int, max_iter: int, tol: float, seed: int) -> KMeansResult:
    n = len(x)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    centers = _kmeans_pp(x, k, n_init, gen)
    threshold = tol * x.var(0, unbiased=False).mean().item()
    ones = torch.ones(n_init, n, device=x.device)
    for it in range(1, max_iter + 1):
        labels = _sq_dists(x, centers).argmin(2)                        # (r, n)
        sums = torch.zeros_like(centers).scatter_add_(1, labels[..., None].expand(-1, -1, x.shape[1]),
                                                      x.expand(n_init, -1, -1))
        counts = torch.zeros(n_init, k, device=x.device).scatter_add_(1, labels, ones)
        new = torch.where(counts[..., None] > 0, sums / counts.clamp_min(1)[..., None], centers)
        shift = (new - centers).pow(2).sum((1, 2))
        centers = new
        if bool((shift <= threshold).all()):
            break
    dists = _sq_dists(x, centers)
    best_d, labels = dists.min(2)
    inertia = best_d.sum(1)
    best = int(inertia.argmin())
    return KMeansResult(labels[best], centers[best], float(inertia[best]), it)


# ------------------------------------------------------------------------------------------ Algorithm 1
def _check_pool(feats: torch.Tensor, energies: torch.Tensor, k: int) -> None:
    if feats.ndim != 2 or energies.ndim != 1 or len(feats) != len(energies):
        raise ValueError(f"need features (n, d) and energies (n,), got {tuple(feats.shape)} and "
                         f"{tuple(energies.shape)}")
    if k < 1:
        raise ValueError(f"the number of clusters must be >= 1, got {k}")
    if len(feats) < k:
        raise ValueError(f"candidate pool of {len(feats)} outliers is smaller than k={k} clusters: "
                         f"give the sampler a pool of at least k (the paper uses ~6x the ID batch)")


def _top_up(picked: torch.Tensor, n_pool: int, n_select: int, gen: torch.Generator) -> torch.Tensor:
    """Add random not-yet-picked pool indices until ``n_select`` are chosen."""
    if n_select > n_pool:
        raise ValueError(f"cannot select {n_select} outliers from a pool of {n_pool}")
    if len(picked) > n_select:
        raise ValueError(f"the clusters gave {len(picked)} outliers, more than the {n_select} requested")
    free = torch.ones(n_pool, dtype=torch.bool)
    free[picked.cpu()] = False
    rest = free.nonzero().squeeze(1)
    extra = rest[torch.randperm(len(rest), generator=gen)[: n_select - len(picked)]]
    return torch.cat([picked.cpu(), extra])


def cluster_extremes(labels: torch.Tensor, energies: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the lowest- and of the highest-energy point of every non-empty cluster."""
    order = torch.argsort(energies, stable=True)
    order = order[torch.argsort(labels[order], stable=True)]            # by cluster, energy ascending within
    sorted_labels = labels[order]
    starts = torch.ones_like(sorted_labels, dtype=torch.bool)
    starts[1:] = sorted_labels[1:] != sorted_labels[:-1]
    ends = torch.ones_like(starts)
    ends[:-1] = starts[1:]
    return order[starts], order[ends]


def energy_cluster_sample(feats: torch.Tensor, energies: torch.Tensor, k: int, n_select: int | None = None,
                          seed: int = 0, n_init: int = 3) -> torch.Tensor:
    """Algorithm 1: indices of the lowest- and highest-energy outlier of each of ``k`` K-Means clusters of the
    L2-normalised features, topped up at random to ``n_select`` (default ``2k``). Returns a CPU LongTensor."""
    _check_pool(feats, energies, k)
    n_select = 2 * k if n_select is None else n_select
    labels = kmeans(F.normalize(feats.float(), dim=1), k, n_init=n_init, seed=seed).labels
    low, high = cluster_extremes(labels, energies.to(labels.device))
    picked = torch.unique(torch.cat([low, high]))                      # a one-point cluster gives one index
    return _top_up(picked, len(feats), n_select, torch.Generator().manual_seed(seed))


def dos_sample(feats: torch.Tensor, energies: torch.Tensor, k: int, n_select: int | None = None,
               seed: int = 0, n_init: int = 3) -> torch.Tensor:
    """DOS: ``k`` K-Means clusters of the normalised features, the most ID-like (lowest-energy) outlier of
    each, topped up at random to ``n_select`` (default ``k``)."""
    _check_pool(feats, energies, k)
    n_select = k if n_select is None else n_select
    labels = kmeans(F.normalize(feats.float(), dim=1), k, n_init=n_init, seed=seed).labels
    low, _ = cluster_extremes(labels, energies.to(labels.device))
    return _top_up(low, len(feats), n_select, torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------- samplers for training
@torch.no_grad()
def pool_features(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features and energies of a candidate pool, in eval mode (the model's mode is restored)."""
    net = unwrap_model(model)
    was_training = net.training
    net.eval()
    feats = torch.cat([net.features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    net.train(was_training)
    return feats.float(), energy_score(net.head(feats).float())


class Sampler:
    """Picks ``2 * n_in`` outliers (the paper's count) from a candidate pool for one training step."""

    name = "random"

    def __init__(self, seed: int = 0, per_id: int = 2):
        self.per_id = per_id
        self.gen = torch.Generator().manual_seed(seed)
        self.steps = 0

    def n_select(self, n_pool: int, n_in: int) -> int:
        n = self.per_id * n_in
        if n_pool < n:
            raise ValueError(f"{self.name} sampler: candidate pool of {n_pool} is smaller than the {n} outliers "
                             f"a step needs ({self.per_id} x ID batch {n_in}); raise the pool size")
        return n

    def __call__(self, model: nn.Module, x_pool: torch.Tensor, x_in: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        return torch.randperm(len(x_pool), generator=self.gen)[: self.n_select(len(x_pool), len(x_in))]


class ClusterSampler(Sampler):
    """Algorithm 1 (``energy_cluster``) or DOS (``dos``); ``n_clusters`` caps k (the code's 32 / 64)."""

    def __init__(self, kind: str = "energy_cluster", n_clusters: int | None = None, n_init: int = 3,
                 seed: int = 0, per_id: int = 2):
        super().__init__(seed, per_id)
        self.name, self.n_clusters, self.n_init, self.seed = kind, n_clusters, n_init, seed

    def __call__(self, model, x_pool, x_in):
        self.steps += 1
        n = self.n_select(len(x_pool), len(x_in))
        feats, energies = pool_features(model, x_pool)
        step_seed = self.seed * 1_000_003 + self.steps
        if self.name == "dos":
            return dos_sample(feats, energies, n, n, seed=step_seed, n_init=self.n_init)
        k = min(self.n_clusters or len(x_in), len(x_in))
        return energy_cluster_sample(feats, energies, k, n, seed=step_seed, n_init=self.n_init)


class PosteriorSampler(Sampler):
    """POEM's outlier mining: Thompson sampling from a Bayesian linear regression of the ID/OOD boundary.

    Model ``t = w^T [h; 1] + noise`` with targets ``t = +1`` (ID) and ``-1`` (outlier), prior
    ``w ~ N(0, I / prior_precision)``. Each step: draw ``w`` from the posterior, mine the outliers with the
    largest ``w^T h`` (the ones the sampled boundary finds most ID-like), then add this step's ID features
    and mined outliers to the posterior, after discounting older evidence by ``forget``.
    """

    name = "poem"

    def __init__(self, prior_precision: float = 1.0, noise: float = 1.0, forget: float = 0.9, seed: int = 0,
                 per_id: int = 2):
        super().__init__(seed, per_id)
        self.prior_precision, self.noise, self.forget = prior_precision, noise, forget
        self.precision = self.xty = None

    def _draw(self, dim: int) -> torch.Tensor:
        if self.precision is None:
            self.precision = self.prior_precision * torch.eye(dim, dtype=torch.float64)
            self.xty = torch.zeros(dim, dtype=torch.float64)
        chol = torch.linalg.cholesky(self.precision)
        mean = torch.cholesky_solve(self.xty[:, None], chol)[:, 0]
        # w = mean + noise * L^-T z has covariance noise^2 * precision^-1
        z = torch.randn(dim, 1, generator=self.gen, dtype=torch.float64)
        return mean + self.noise * torch.linalg.solve_triangular(chol.T, z, upper=True)[:, 0]

    def update(self, h: torch.Tensor, targets: torch.Tensor) -> None:
        prior = self.prior_precision * torch.eye(h.shape[1], dtype=torch.float64)
        self.precision = self.forget * (self.precision - prior) + prior + h.T @ h
        self.xty = self.forget * self.xty + h.T @ targets

    def __call__(self, model, x_pool, x_in):
        self.steps += 1
        n = self.n_select(len(x_pool), len(x_in))
        feats, _ = pool_features(model, torch.cat([x_in, x_pool]))
        h = F.pad(F.normalize(feats, dim=1), (0, 1), value=1.0).double().cpu()   # unit features + bias
        h_in, h_pool = h[: len(x_in)], h[len(x_in):]
        w = self._draw(h.shape[1])
        picked = torch.argsort(h_pool @ w, descending=True)[:n]
        self.update(torch.cat([h_in, h_pool[picked]]),
                    torch.cat([torch.ones(len(h_in)), -torch.ones(n)]).double())
        return picked


SAMPLERS = {"none": None, "random": Sampler, "energy_cluster": ClusterSampler, "dos": ClusterSampler,
            "poem": PosteriorSampler}


def make_sampler(name: str, *, seed: int = 0, n_clusters: int | None = None, n_init: int = 3) -> Sampler | None:
    """A sampler by name (``None`` for ``"none"``: train on the auxiliary batch as it comes)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")
    if name == "none":
        return None
    if name in ("energy_cluster", "dos"):
        return ClusterSampler(name, n_clusters=n_clusters, n_init=n_init, seed=seed)
    return SAMPLERS[name](seed=seed)
