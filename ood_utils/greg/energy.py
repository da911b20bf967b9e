"""The energy score and the energy loss with margins (GReg, eq. (1); Liu et al. 2020).

The score is ``S_En(x) = -LSE(f(x))``: LOWER means MORE in-distribution (the paper's sign). The detectors of
``ood_utils.detectors`` use the opposite convention (higher = more ID); :func:`id_score` converts.

The loss pushes ID energies below ``m_in`` and auxiliary-outlier energies above ``m_aux``; samples already
past their margin contribute nothing::

    L_S = mean_ID relu(S(x) - m_in)^2 + mean_aux relu(m_aux - S(x))^2          (eq. 1)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: the margins of the public code, for CIFAR-10 and CIFAR-100 alike
PAPER_M_IN, PAPER_M_AUX = -25.0, -7.0


def energy_score(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``S_En = -T * logsumexp(logits / T)`` per row; lower = more in-distribution."""
    if logits.ndim != 2:
        raise ValueError(f"energy_score expects logits of shape (N, classes), got {tuple(logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return -temperature * torch.logsumexp(logits / temperature, dim=1)


def id_score(logits: torch.Tensor) -> torch.Tensor:
    """The same score with the kit's detector convention: higher = more in-distribution (``-S_En``)."""
    return -energy_score(logits)


def check_margins(m_in: float, m_aux: float) -> None:
    """ID energies are pushed DOWN below ``m_in``, outliers UP above ``m_aux``: so ``m_in < m_aux``."""
    for name, value in (("m_in", m_in), ("m_aux", m_aux)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ValueError(f"margin {name} must be a number, got {value!r}")
    if not m_in < m_aux:
        raise ValueError(f"margins in the wrong order: m_in={m_in} must be below m_aux={m_aux} "
                         f"(the paper's CIFAR values are m_in={PAPER_M_IN:g}, m_aux={PAPER_M_AUX:g})")


def energy_loss(s_in: torch.Tensor, s_aux: torch.Tensor, m_in: float, m_aux: float) -> torch.Tensor:
    """Eq. (1): ``mean relu(s_in - m_in)^2 + mean relu(m_aux - s_aux)^2`` (energies, not logits)."""
    check_margins(m_in, m_aux)
    if s_in.ndim != 1 or s_aux.ndim != 1:
        raise ValueError(f"energy_loss expects 1-D energies, got shapes {tuple(s_in.shape)} and "
                         f"{tuple(s_aux.shape)} (compute them with energy_score(logits))")
    return F.relu(s_in - m_in).pow(2).mean() + F.relu(m_aux - s_aux).pow(2).mean()
