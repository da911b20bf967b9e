"""Training objectives of the GReg paper and its baselines, as ``loss_fn`` hooks of ``ood_utils.train.fit``.

A batch is ``(x_in, y_in, x_aux)``: ID images with labels and a batch of auxiliary outliers (with a
sampler: a candidate POOL the sampler picks from, see :mod:`.sampling`). :class:`IDAuxLoader` zips an ID
loader with an auxiliary loader into such batches. Every objective is::

    L = CE(ID) + lambda_S * L_S + lambda_grad * L_grad          (GReg, section 4.1)

with ``L_S`` the energy loss (eq. 1) or Outlier Exposure's cross-entropy to the uniform distribution, and
``L_grad`` the gradient regulariser (eq. 3) when ``grad=True``. ID and auxiliary rows go through the network
in ONE forward pass, as in the public code (BatchNorm sees both).

Methods of Tables 1-5 by name (:data:`METHODS`): ``energy``, ``greg`` (energy + grad), ``oe``, ``oe_grad``,
``poem``, ``poem_grad``, ``dos``, ``energy_clustering`` (GReg+ without the gradient term) and ``greg_plus``.
POEM and DOS are their outlier-mining schemes trained with the energy loss of eq. (1), so that Tables 4-5
compare samplers and the gradient term with everything else equal.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .energy import PAPER_M_AUX, PAPER_M_IN, check_margins, energy_loss, energy_score
from .regularizer import DEFAULT_FORM, check_form, gradient_term, needs_own_pass, regulariser_pass
from .sampling import make_sampler

#: what the score-shaping term of the loss is
LOSSES = ("energy", "oe")


@dataclass(frozen=True)
class Method:
    loss: str        # "energy" | "oe"
    grad: bool       # add the gradient regulariser (eq. 3)
    sampler: str     # see sampling.SAMPLERS
    title: str       # as the paper's tables name it


METHODS = {
    "energy": Method("energy", False, "none", "Energy Loss"),
    "greg": Method("energy", True, "none", "GReg"),
    "oe": Method("oe", False, "none", "OE"),
    "oe_grad": Method("oe", True, "none", "OE + Grad"),
    "poem": Method("energy", False, "poem", "POEM"),
    "poem_grad": Method("energy", True, "poem", "POEM + Grad"),
    "dos": Method("energy", False, "dos", "DOS"),
    "energy_clustering": Method("energy", False, "energy_cluster", "Energy only clustering"),
    "greg_plus": Method("energy", True, "energy_cluster", "GReg+"),
}

#: the paper's and public code's weights: lambda_S = 0.1 (Liu et al.), lambda_grad = 1; OE's lambda = 0.5
DEFAULTS = {"lambda_s": 0.1, "lambda_grad": 1.0, "lambda_oe": 0.5, "m_in": PAPER_M_IN, "m_aux": PAPER_M_AUX}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown GReg method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name]


def oe_loss(logits_aux: torch.Tensor) -> torch.Tensor:
    """Outlier Exposure: cross-entropy from the softmax of the outliers to the uniform distribution."""
    return -F.log_softmax(logits_aux, dim=1).mean(1).mean()


class Objective:
    """``loss_fn(model, (x_in, y_in, x_aux)) -> scalar`` for :func:`ood_utils.train.fit`.

    After each call ``last`` holds the step's parts as floats (``ce``, ``score_loss``, ``grad``, ``total``;
    ``grad`` only when the term is on) and the step's shares of rows: ``in_inside`` / ``aux_inside`` (ID rows
    with ``S > m_in``, auxiliary rows with ``S < m_aux``: the energy loss acts on them) and ``mask_in`` /
    ``mask_aux`` (the rows eq. (3)'s masks keep); ``log`` keeps every step's ``last``, for Fig. 3 curves and
    the health checks of the run.

    A step with a non-finite part is SKIPPED instead of stopping the run: the objective returns a zero that
    depends on every weight (so the step's gradient is zero; an SGD step still applies momentum and weight
    decay), warns once, and counts it in ``skipped``.
    """

    def __init__(self, method: str = "greg", *, lambda_s: float = DEFAULTS["lambda_s"],
                 lambda_grad: float = DEFAULTS["lambda_grad"], lambda_oe: float = DEFAULTS["lambda_oe"],
                 m_in: float = DEFAULTS["m_in"], m_aux: float = DEFAULTS["m_aux"], form: str = DEFAULT_FORM,
                 sampler: str | None = None, n_clusters: int | None = None, n_init: int = 3, seed: int = 0,
                 steps_per_epoch: int | None = None):
        self.method = get_method(method)
        check_margins(m_in, m_aux)
        check_form(form)
        for name, value in (("lambda_s", lambda_s), ("lambda_grad", lambda_grad), ("lambda_oe", lambda_oe)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.name = method
        self.lambda_s, self.lambda_grad, self.lambda_oe = lambda_s, lambda_grad, lambda_oe
        self.m_in, self.m_aux, self.form = m_in, m_aux, form
        self.sampler = make_sampler(sampler or self.method.sampler, seed=seed, n_clusters=n_clusters,
                                    n_init=n_init)
        self.steps_per_epoch = steps_per_epoch
        self.step = 0
        self.skipped = 0
        self.last: dict[str, float] = {}
        self.log: list[dict] = []

    def __repr__(self) -> str:
        return (f"Objective({self.name!r}: {self.method.title}; lambda_s={self.lambda_s}, lambda_grad="
                f"{self.lambda_grad if self.method.grad else 0}, m_in={self.m_in}, m_aux={self.m_aux}, "
                f"form={self.form!r}, sampler={self.sampler.name if self.sampler else 'none'})")

    def __call__(self, model: nn.Module, batch) -> torch.Tensor:
        x_in, y_in, x_aux = batch[0], batch[1], batch[2]
        self.step += 1
        if self.sampler is not None:
            x_aux = x_aux[self.sampler(model, x_aux, x_in).to(x_aux.device)]
        n_in = len(x_in)
        x = torch.cat([x_in, x_aux])
        own_pass = self.method.grad and needs_own_pass(model, x.device.type)
        if self.method.grad and not own_pass:   # rows independent and full precision: share the forward pass
            x = x.detach().requires_grad_(True)
        logits = model(x)
        ce = F.cross_entropy(logits[:n_in], y_in)
        s = energy_score(logits.float())
        if self.method.loss == "energy":
            score_loss = self.lambda_s * energy_loss(s[:n_in], s[n_in:], self.m_in, self.m_aux)
        else:
            score_loss = self.lambda_oe * oe_loss(logits[n_in:].float())
        parts = {"ce": ce, "score_loss": score_loss}
        if self.method.grad:
            # eq. (3) needs each row's own gradient in float32: a second pass with frozen BatchNorm and no
            # autocast when the training pass couples rows or runs in reduced precision
            xg, sg = regulariser_pass(model, x) if own_pass else (x, s)
            parts["grad"] = self.lambda_grad * gradient_term(xg, sg, n_in, self.m_in, self.m_aux, self.form)
        total = sum(parts.values())
        sd = s.detach()
        self.last = {**{k: v.item() for k, v in parts.items()}, "total": total.item(),
                     "in_inside": (sd[:n_in] > self.m_in).float().mean().item(),
                     "aux_inside": (sd[n_in:] < self.m_aux).float().mean().item(),
                     "mask_in": (sd[:n_in] <= self.m_in).float().mean().item(),
                     "mask_aux": (sd[n_in:] >= self.m_aux).float().mean().item(), "skipped": False}
        if not torch.isfinite(total):
            total = self._skip(model, parts)
        self.log.append(self.last)
        return total

    def _skip(self, model: nn.Module, parts: dict) -> torch.Tensor:
        """A zero loss with a zero gradient for every weight, and a warning naming the part and the step."""
        self.skipped += 1
        self.last["skipped"] = True
        if self.skipped == 1:
            bad = [k for k, v in parts.items() if not torch.isfinite(v)]
            where = f"step {self.step}"
            if self.steps_per_epoch:
                epoch, step = divmod(self.step - 1, self.steps_per_epoch)
                where = f"epoch {epoch + 1}, step {step + 1} of {self.steps_per_epoch}"
            warnings.warn(f"{self.name}: non-finite {', '.join(bad)} "
                          f"({', '.join(f'{k}={v.item():.4g}' for k, v in parts.items())}) at {where}: step "
                          "skipped (later skips are counted, not reported); if it recurs, lower the learning "
                          "rate or lambda_grad, or check the inputs", RuntimeWarning, stacklevel=3)
        return sum((p * 0.0).sum() for p in model.parameters() if p.requires_grad)


def make_objective(method: str = "greg", **kw) -> Objective:
    """The ``loss_fn`` of a named method (see :data:`METHODS`); keywords as :class:`Objective`."""
    return Objective(method, **kw)


class IDAuxLoader:
    """Zips an ID loader with an auxiliary loader into ``(x_in, y_in, x_aux)`` batches, one per ID batch.

    The auxiliary loader restarts when it runs out (it is usually much larger or much smaller than the ID
    set). ``generator`` is the ID loader's, so ``fit`` saves and restores the shuffling on resume; the
    position inside the auxiliary loader is not saved (a resumed epoch starts a fresh auxiliary pass), so a
    resumed run sees other outlier batches than an uninterrupted one.
    """

    def __init__(self, id_loader, aux_loader):
        if len(id_loader) == 0 or len(aux_loader) == 0:
            raise ValueError("IDAuxLoader: an empty ID or auxiliary loader")
        self.id_loader, self.aux_loader = id_loader, aux_loader
        self._aux_iter = None

    @property
    def generator(self):
        return getattr(self.id_loader, "generator", None)

    def __len__(self) -> int:
        return len(self.id_loader)

    def _next_aux(self):
        if self._aux_iter is None:
            self._aux_iter = iter(self.aux_loader)
        try:
            return next(self._aux_iter)
        except StopIteration:
            self._aux_iter = iter(self.aux_loader)
            return next(self._aux_iter)

    def __iter__(self):
        for x_in, y_in, *_ in self.id_loader:
            aux = self._next_aux()
            yield x_in, y_in, aux[0] if isinstance(aux, (list, tuple)) else aux
