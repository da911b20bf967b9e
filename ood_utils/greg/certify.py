"""The certified radius of eq. (4) and the local Lipschitz constants it needs.

If ``|S(x') - S(x)| <= L_S ||x' - x||`` on the ball ``B(x, eps)`` and ``x`` is detected as ID
(``S(x) <= gamma``), every ``x'`` with::

    ||x' - x|| <= eps* = min(eps, (gamma - S(x)) / L_S)                 (eq. 4)

is detected as ID too (for an OOD point, ``(S(x) - gamma) / L_S``). A smaller ``L_S`` (what GReg trains for)
gives a larger radius. Three estimates of ``L_S`` (``lipschitz=``):

``"gradient"``  ``||grad S(x)||`` at the point: the paper's proxy (exact for a function linear near x).
``"sampled"``   the largest ``||grad S||`` over ``x`` and points drawn uniformly in ``B(x, eps)``: an
                estimate from below of the Lipschitz constant over the ball (not a guarantee).
``"region"``    for a ReLU network of Linear/ReLU layers: inside the linear region around x the logits are
                ``A x' + b``, so ``grad S(x') = -A^T softmax(f(x'))`` and ``||grad S|| <= max_c ||A_c||``; with
                ``eps`` capped by the distance to the region's nearest ReLU switch this radius is a true
                certificate (:func:`linear_region`).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .energy import energy_score
from .regularizer import scores_and_gradient_norms

ESTIMATES = ("gradient", "sampled", "region")


def sample_ball(x: torch.Tensor, eps: float, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` points uniform in the L2 ball ``B(x_i, eps)`` for every row: (rows, n, *x.shape[1:])."""
    d = x[0].numel()
    direction = torch.randn(len(x), n, d, generator=gen, dtype=x.dtype)
    direction = direction / direction.norm(dim=2, keepdim=True)
    radius = eps * torch.rand(len(x), n, 1, generator=gen, dtype=x.dtype) ** (1.0 / d)
    return x[:, None] + (direction * radius).to(x.device).view(len(x), n, *x.shape[1:])


def sampled_lipschitz(model: nn.Module, x: torch.Tensor, eps: float, n_samples: int = 64,
                      seed: int = 0) -> torch.Tensor:
    """Largest ``||grad S||`` over ``x_i`` and ``n_samples`` uniform points of ``B(x_i, eps)``, per row."""
    gen = torch.Generator().manual_seed(seed)
    pts = sample_ball(x.detach().cpu(), eps, n_samples, gen).to(x.device)
    _, norms = scores_and_gradient_norms(model, pts.flatten(0, 1))
    _, at_x = scores_and_gradient_norms(model, x)
    return torch.maximum(norms.view(len(x), n_samples).amax(1), at_x)


def _linear_relu_layers(model: nn.Module) -> list[nn.Module]:
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.ReLU))]
    others = [m for m in model.modules() if len(list(m.children())) == 0 and not isinstance(m, (nn.Linear, nn.ReLU))]
    if others or not layers or not isinstance(layers[-1], nn.Linear):
        raise ValueError("the 'region' estimate needs a network of Linear and ReLU layers only (applied in the "
                         f"order they are defined); found {sorted({type(m).__name__ for m in others})}")
    return layers


@torch.no_grad()
def linear_region(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a Linear/ReLU network: the logits' Jacobian ``A`` (rows, classes, d) in the linear region of
    each point and the radius of the largest L2 ball around it inside that region (distance to the nearest
    hyperplane where a ReLU switches, ``min_j |z_j| / ||grad z_j||``)."""
    h = x.flatten(1)
    jac = torch.eye(h.shape[1], dtype=h.dtype, device=h.device).expand(len(h), -1, -1)   # dh/dx
    radius = torch.full((len(h),), float("inf"), dtype=h.dtype, device=h.device)
    for layer in _linear_relu_layers(model):
        if isinstance(layer, nn.Linear):
            h, jac = layer(h), layer.weight @ jac
        else:
            dist = h.abs() / jac.norm(dim=2).clamp_min(1e-12)
            radius = torch.minimum(radius, dist.amin(1))
            active = (h > 0).to(h.dtype)
            h, jac = h * active, jac * active[..., None]
    return jac, radius


def lipschitz(model: nn.Module, x: torch.Tensor, eps: float, estimate: str = "sampled", n_samples: int = 64,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_S, eps_cap)`` per row for :func:`certified_radius` (``eps_cap`` = ``eps``, or the linear-region
    radius when that is smaller for the ``region`` estimate)."""
    if estimate not in ESTIMATES:
        raise ValueError(f"unknown Lipschitz estimate {estimate!r}; valid: {', '.join(ESTIMATES)}")
    cap = torch.full((len(x),), float(eps), device=x.device)
    if estimate == "gradient":
        return scores_and_gradient_norms(model, x)[1], cap
    if estimate == "sampled":
        return sampled_lipschitz(model, x, eps, n_samples, seed), cap
    jac, region = linear_region(model, x)
    return jac.norm(dim=2).amax(1).to(cap.dtype), torch.minimum(cap, region.to(cap.dtype))


def certified_radius(model: nn.Module, x: torch.Tensor, gamma: float, eps: float, *, side: str = "id",
                     estimate: str = "sampled", n_samples: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """Eq. (4) per row: ``radius`` (0 where the point is on the wrong side of ``gamma``), the score ``s``, the
    Lipschitz estimate ``lipschitz`` and ``detected`` (ID: ``S <= gamma``; OOD: ``S > gamma``)."""
    if side not in ("id", "ood"):
        raise ValueError(f"side must be 'id' or 'ood', got {side!r}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    with torch.no_grad():
        s = energy_score(model(x))
    lip, cap = lipschitz(model, x, eps, estimate, n_samples, seed)
    margin = (gamma - s) if side == "id" else (s - gamma)
    detected = margin >= 0 if side == "id" else margin > 0
    radius = torch.minimum(cap, margin.clamp_min(0) / lip.clamp_min(1e-12))
    return {"radius": torch.where(detected, radius, torch.zeros_like(radius)), "s": s, "lipschitz": lip,
            "detected": detected}


def steepest_flip(model: nn.Module, x: torch.Tensor, gamma: float, eps: float, side: str = "ood") -> torch.Tensor:
    """Move every point a distance ``eps`` along the direction that pushes its score across ``gamma``
    fastest (``-grad S`` for OOD points, ``+grad S`` for ID) and report which now land on the wrong side:
    the "perturbed points that flip" of Fig. 1a."""
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(energy_score(model(xg)).sum(), xg)
    unit = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.ndim - 1))
    moved = x + (-eps if side == "ood" else eps) * unit
    with torch.no_grad():
        s = energy_score(model(moved))
    return s <= gamma if side == "ood" else s > gamma
