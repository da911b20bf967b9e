"""The gradient regulariser of GReg, eq. (3), by double backpropagation.

For every correctly scored training sample (ID with ``S(x) <= m_in``, auxiliary outlier with
``S(x) >= m_aux``) the regulariser penalises the norm of the input gradient of the energy score, so that the
score stays put in a neighbourhood of the sample (first-order Taylor, eq. (2))::

    L_grad = mean_ID ||1[S(x) <= m_in] grad_x S(x)|| + mean_aux ||1[S(x) >= m_aux] grad_x S(x)||   (eq. 3)

Mis-scored samples are left to the energy loss (eq. 1). ``create_graph=True`` keeps the input gradient
differentiable in the weights, so the optimiser can lower it (a Hessian-vector product per step).

Two forms (:data:`FORMS`):

``"public_code"`` (default: it produced the published tables) the input gradient of ONE scalar
    ``G = -mean_ID relu(m_in - S) + mean_aux relu(S - m_aux)`` over the concatenated batch, its per-row
    norm averaged over all ``B = B_in + B_aux`` rows. Each row carries a ``1/B_in`` or ``1/B_aux`` factor,
    so ``public_code = printed / B`` exactly, whatever share of rows the masks keep.
``"printed"`` eq. (3) as printed: per-sample norms averaged over ID and over auxiliary samples.

Per-sample means per sample: each row's gradient must be its own. BatchNorm in train mode normalises with
the batch's statistics, so ``grad_x S(x_i)`` would carry the other rows' energies; the regulariser's pass
(:func:`regulariser_pass`) therefore runs BatchNorm on its running statistics (frozen: not updated) and in
float32 even under mixed precision (input gradients of an image network are ~1e-5 per pixel, below
float16's normal range).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import distributed
from .energy import check_margins, energy_score

FORMS = ("public_code", "printed")
DEFAULT_FORM = "public_code"


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


def _training_batchnorms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]


def couples_rows(model: nn.Module) -> bool:
    """Whether a forward pass mixes rows: BatchNorm layers in train mode."""
    return bool(_training_batchnorms(model))


@contextmanager
def frozen_batchnorm(model: nn.Module):
    """Inside the block BatchNorm layers normalise with their running statistics and do not update them, so
    each row's output (and input gradient) depends on that row alone; their train mode comes back after."""
    layers = _training_batchnorms(model)
    for layer in layers:
        layer.eval()
    try:
        yield model
    finally:
        for layer in layers:
            layer.train()


def regulariser_pass(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward pass eq. (3) differentiates: ``(x, S(x))`` with ``x`` an (at least) float32 leaf that requires grad,
    rows independent (frozen BatchNorm) and autocast off (float32 inner gradient)."""
    x = x.detach().to(torch.promote_types(x.dtype, torch.float32)).requires_grad_(True)   # float64 stays
    with frozen_batchnorm(model), torch.autocast(x.device.type, enabled=False):
        out = model(x)
        s = energy_score(out.to(torch.promote_types(out.dtype, torch.float32)))
    return x, s


def needs_own_pass(model: nn.Module, device_type: str) -> bool:
    """Whether the training forward pass cannot be reused for eq. (3): rows coupled or reduced precision."""
    return couples_rows(model) or torch.is_autocast_enabled(device_type)


def correctly_scored(s: torch.Tensor, n_in: int, m_in: float, m_aux: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The masks of eq. (3): ID rows with ``S <= m_in`` and auxiliary rows with ``S >= m_aux`` (no gradient)."""
    s = s.detach()
    return s[:n_in] <= m_in, s[n_in:] >= m_aux


def row_terms(x: torch.Tensor, s: torch.Tensor, n_in: int, m_in: float, m_aux: float,
              form: str = DEFAULT_FORM, create_graph: bool = True) -> torch.Tensor:
    """Each row's share of eq. (3) (masked rows exactly zero), so that ``gradient_term = row_terms.sum()``.
    ``printed``: ``||grad S(x_i)|| / B_group``; ``public_code``: the row norm of ``grad G`` over ``B``."""
    check_form(form)
    check_margins(m_in, m_aux)
    if not x.requires_grad:
        raise ValueError("the gradient term needs the input to require grad: call x.requires_grad_(True) "
                         "before the forward pass (or use regulariser_pass)")
    if not 0 < n_in < len(s):
        raise ValueError(f"need at least one ID and one auxiliary row, got n_in={n_in} of {len(s)} rows")
    n_aux = len(s) - n_in
    if form == "public_code":
        g = -F.relu(m_in - s[:n_in]).mean() + F.relu(s[n_in:] - m_aux).mean()
        # batch-size dependent: when N processes share a batch (train.fit), each holds 1/N of the rows, so its
        # means carry N x the one-process factor 1/B_in; dividing by N gives the one-process value
        return row_norms(input_gradient(g, x, create_graph)) / (len(s) * distributed.processes().world)
    norms = row_norms(input_gradient(s.sum(), x, create_graph))
    keep = torch.cat(correctly_scored(s, n_in, m_in, m_aux))
    # where (not a product with the mask) makes the excluded rows exactly zero, derivative included
    scale = torch.cat([norms.new_full((n_in,), 1.0 / n_in), norms.new_full((n_aux,), 1.0 / n_aux)])
    return torch.where(keep, norms * scale, torch.zeros_like(norms))


def gradient_term(x: torch.Tensor, s: torch.Tensor, n_in: int, m_in: float, m_aux: float,
                  form: str = DEFAULT_FORM, create_graph: bool = True) -> torch.Tensor:
    """Eq. (3) from a forward pass already made: ``x`` (ID rows first, then auxiliary rows) must require
    grad and ``s = energy_score(model(x))`` with rows that do not interact (see :func:`regulariser_pass`)."""
    return row_terms(x, s, n_in, m_in, m_aux, form, create_graph).sum()


def _check_pair(x_in: torch.Tensor, x_aux: torch.Tensor) -> None:
    if x_in.shape[1:] != x_aux.shape[1:]:
        raise ValueError(f"ID and auxiliary inputs differ in shape: {tuple(x_in.shape[1:])} vs "
                         f"{tuple(x_aux.shape[1:])}")


def gradient_regularizer(model: nn.Module, x_in: torch.Tensor, x_aux: torch.Tensor, m_in: float, m_aux: float,
                         form: str = DEFAULT_FORM) -> torch.Tensor:
    """Eq. (3) for a batch of ID images ``x_in`` and auxiliary outliers ``x_aux`` (one regulariser pass over
    both); a scalar that is differentiable in the model's weights."""
    check_form(form)
    check_margins(m_in, m_aux)
    _check_pair(x_in, x_aux)
    x, s = regulariser_pass(model, torch.cat([x_in, x_aux]))
    return gradient_term(x, s, len(x_in), m_in, m_aux, form)


def per_sample_terms(model: nn.Module, x_in: torch.Tensor, x_aux: torch.Tensor, m_in: float, m_aux: float,
                     form: str = DEFAULT_FORM) -> torch.Tensor:
    """Each row's share of :func:`gradient_regularizer` (detached): ID rows first, then auxiliary rows."""
    _check_pair(x_in, x_aux)
    x, s = regulariser_pass(model, torch.cat([x_in, x_aux]))
    return row_terms(x, s, len(x_in), m_in, m_aux, form, create_graph=False).detach()


def scores_and_gradient_norms(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Energy ``S(x)`` and ``||grad_x S(x)||`` per sample, detached (monitoring, Fig. 3, certified radii),
    each row on its own (frozen BatchNorm, float32)."""
    with torch.enable_grad():
        x, s = regulariser_pass(model, x)
        norms = row_norms(input_gradient(s.sum(), x, create_graph=False))
    return s.detach(), norms.detach()


def form_gap(model: nn.Module, x_in: torch.Tensor, x_aux: torch.Tensor, m_in: float, m_aux: float) -> dict:
    """The printed and the public code's form of eq. (3) on one batch: ``ratio == 1 / batch`` exactly."""
    values = {}
    for form in FORMS:
        with torch.enable_grad():
            x, s = regulariser_pass(model, torch.cat([x_in, x_aux]))
            values[form] = gradient_term(x, s, len(x_in), m_in, m_aux, form, create_graph=False).item()
    keep_in, keep_aux = correctly_scored(s, len(x_in), m_in, m_aux)
    batch = len(x_in) + len(x_aux)
    ratio = values["public_code"] / values["printed"] if values["printed"] > 0 else float("nan")
    return {"printed": values["printed"], "public_code": values["public_code"], "ratio": ratio,
            "one_over_batch": 1.0 / batch, "batch": batch,
            "kept_in": int(keep_in.sum()), "kept_aux": int(keep_aux.sum())}
