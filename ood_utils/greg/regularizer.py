"""The gradient regulariser of GReg, eq. (3), by double backpropagation.

For every correctly scored training sample (ID with ``S(x) <= m_in``, auxiliary outlier with
``S(x) >= m_aux``) the regulariser penalises the norm of the input gradient of the energy score, so that the
score stays put in a neighbourhood of the sample (first-order Taylor, eq. (2))::

    L_grad = mean_ID ||1[S(x) <= m_in] grad_x S(x)|| + mean_aux ||1[S(x) >= m_aux] grad_x S(x)||   (eq. 3)

Mis-scored samples are left to the energy loss (eq. 1). ``create_graph=True`` keeps the input gradient
differentiable in the weights, so the optimiser can lower it (a Hessian-vector product per step).

Two forms:

``"paper"`` (default) eq. (3) as written: per-sample gradient norms, averaged over ID and over auxiliary
    samples separately. The gradient of ``sum_i S(x_i)`` gives every row its own ``grad S(x_i)`` as long as
    rows do not interact (eval-mode BatchNorm, or no BatchNorm, as in the ``mini`` CNN).
``"public_code"`` what the authors' code computes, which produced the published numbers: the input gradient
    of ONE scalar ``G = -mean_ID relu(m_in - S) + mean_aux relu(S - m_aux)`` over the concatenated batch,
    its per-row norm averaged over all ``B = B_in + B_aux`` rows. Each row carries a ``1/B_in`` or
    ``1/B_aux`` factor, so without BatchNorm coupling ``public_code = paper / B``; with BatchNorm in train
    mode the rows are coupled and masked rows get non-zero gradients too. :func:`form_gap` measures it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import distributed
from .energy import check_margins, energy_score

FORMS = ("paper", "public_code")


def check_form(form: str) -> str:
    if form not in FORMS:
        raise ValueError(f"unknown gradient-regulariser form {form!r}; valid: {', '.join(FORMS)}")
    return form


def input_gradient(scalar: torch.Tensor, x: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
    """``d scalar / d x`` (same shape as ``x``); ``create_graph`` keeps it differentiable in the weights."""
    (grad,) = torch.autograd.grad(scalar, x, create_graph=create_graph)
    return grad


def row_norms(grad: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm of the flattened gradient, at least in float32 (half-precision squares overflow);
    zero rows have a zero, finite derivative in torch."""
    return torch.linalg.vector_norm(grad.flatten(1).to(torch.promote_types(grad.dtype, torch.float32)), dim=1)


def correctly_scored(s: torch.Tensor, n_in: int, m_in: float, m_aux: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The masks of eq. (3): ID rows with ``S <= m_in`` and auxiliary rows with ``S >= m_aux`` (no gradient)."""
    s = s.detach()
    return s[:n_in] <= m_in, s[n_in:] >= m_aux


def gradient_term(x: torch.Tensor, s: torch.Tensor, n_in: int, m_in: float, m_aux: float,
                  form: str = "paper", create_graph: bool = True) -> torch.Tensor:
    """Eq. (3) from a forward pass already made: ``x`` (ID rows first, then auxiliary rows) must require
    grad and ``s = energy_score(model(x))``. Used by the training objectives to share one forward pass."""
    check_form(form)
    check_margins(m_in, m_aux)
    if not x.requires_grad:
        raise ValueError("gradient_term needs the input to require grad: call x.requires_grad_(True) "
                         "before the forward pass")
    if not 0 < n_in < len(s):
        raise ValueError(f"need at least one ID and one auxiliary row, got n_in={n_in} of {len(s)} rows")
    if form == "public_code":
        g = -F.relu(m_in - s[:n_in]).mean() + F.relu(s[n_in:] - m_aux).mean()
        # batch-size dependent: when N processes share a batch (train.fit), each holds 1/N of the rows, so its
        # means carry N x the one-process factor 1/B_in; dividing by N gives the one-process value
        return row_norms(input_gradient(g, x, create_graph)).mean() / distributed.processes().world
    norms = row_norms(input_gradient(s.sum(), x, create_graph))
    keep_in, keep_aux = correctly_scored(s, n_in, m_in, m_aux)
    # indexing (not multiplying by the mask) makes the excluded rows contribute exactly zero
    n_aux = len(s) - n_in
    return norms[:n_in][keep_in].sum() / n_in + norms[n_in:][keep_aux].sum() / n_aux


def gradient_regularizer(model: nn.Module, x_in: torch.Tensor, x_aux: torch.Tensor, m_in: float, m_aux: float,
                         form: str = "paper") -> torch.Tensor:
    """Eq. (3) for a batch of ID images ``x_in`` and auxiliary outliers ``x_aux`` (one forward pass over both,
    as in training); a scalar that is differentiable in the model's weights."""
    check_form(form)
    check_margins(m_in, m_aux)
    if x_in.shape[1:] != x_aux.shape[1:]:
        raise ValueError(f"ID and auxiliary inputs differ in shape: {tuple(x_in.shape[1:])} vs "
                         f"{tuple(x_aux.shape[1:])}")
    x = torch.cat([x_in, x_aux]).detach().requires_grad_(True)
    s = energy_score(model(x))
    return gradient_term(x, s, len(x_in), m_in, m_aux, form)


def scores_and_gradient_norms(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Energy ``S(x)`` and ``||grad_x S(x)||`` per sample, detached (monitoring, Fig. 3, certified radii).
    Uses the model's current mode; call ``model.eval()`` first for per-sample values under BatchNorm."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        s = energy_score(model(x))
        norms = row_norms(input_gradient(s.sum(), x, create_graph=False))
    return s.detach(), norms.detach()


def form_gap(model: nn.Module, x_in: torch.Tensor, x_aux: torch.Tensor, m_in: float, m_aux: float) -> dict:
    """How far apart the paper's form and the public code's form of eq. (3) are on one batch, in the model's
    current mode (train mode couples rows through BatchNorm). Without coupling ``ratio == 1 / batch``."""
    values = {}
    for form in FORMS:
        x = torch.cat([x_in, x_aux]).detach().requires_grad_(True)
        with torch.enable_grad():
            s = energy_score(model(x))
            values[form] = gradient_term(x, s, len(x_in), m_in, m_aux, form, create_graph=False).item()
    keep_in, keep_aux = correctly_scored(s, len(x_in), m_in, m_aux)
    batch = len(x_in) + len(x_aux)
    ratio = values["public_code"] / values["paper"] if values["paper"] > 0 else float("nan")
    return {"paper": values["paper"], "public_code": values["public_code"], "ratio": ratio,
            "ratio_without_coupling": 1.0 / batch, "batch": batch, "train_mode": model.training,
            "kept_in": int(keep_in.sum()), "kept_aux": int(keep_aux.sum())}
