"""Input-space detectors: they need the model, because they perturb the input before scoring.

Sibling API of the feature-space detectors:

    det = get_detector("odin", preset="cifar")
    det.fit()                              # nothing to learn; accepts (and ignores) the usual fit arguments
    scores = det.score_inputs(model, x)    # x: normalised input batch (torch), scores higher = more ID
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import ranges as rg
from .base import Detector, NotFittedError

CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ODIN(Detector):
    """ODIN (Liang et al. 2018): x_hat = x - eps * sign(-grad_x log softmax_y(f(x)/T)) / std, y = argmax;
    score = max softmax(f(x_hat) / T). T = 1000, eps = 0.0014. Inputs are normalised images, so the
    gradient sign is divided by the per-channel normalisation std (``std``; None = no division): a step of
    eps in pixel units. Run the model in eval mode; gradients of the model's parameters are not touched."""

    name, title, kind = "odin", "ODIN", "input"
    summary = "max softmax at temperature T after a small input step that raises it"
    defaults = {"temperature": 1000.0, "eps": 0.0014, "std": None, "batch_size": 256}
    presets = {"cifar": {"std": CIFAR10_STD}, "imagenet": {"std": IMAGENET_STD}}
    ranges = {"temperature": rg.positive, "eps": rg.non_negative, "std": rg.NoneOrPositiveNumbers(),
              "batch_size": rg.count}

    def fit(self, *args, **kwargs) -> "ODIN":
        """Nothing to fit (kept so that every detector can be driven the same way)."""
        self._fitted = True
        return self

    def score(self, feats, logits=None):
        raise TypeError("ODIN perturbs the input: use score_inputs(model, x) instead of score(feats, logits)")

    def score_inputs(self, model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
        if not self._fitted:
            raise NotFittedError("detector 'odin' is not fitted: call .fit() first")
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            raise ValueError("x must be a torch tensor batch (N, C, ...)")
        out = []
        for start in range(0, x.shape[0], int(self.batch_size)):
            out.append(self._score_batch(model, x[start:start + int(self.batch_size)]))
        scores = np.concatenate(out).astype(np.float64)
        if not np.all(np.isfinite(scores)):
            raise FloatingPointError("odin: non-finite scores")
        return scores

    def _score_batch(self, model, x):
        x = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = model(x) / self.temperature
            loss = F.cross_entropy(logits, logits.argmax(dim=1))
            (grad,) = torch.autograd.grad(loss, x)
        step = grad.sign()
        if self.std is not None:
            std = torch.as_tensor(self.std, dtype=step.dtype, device=step.device)
            if x.ndim >= 3 and std.numel() != x.shape[1]:
                raise ValueError(f"std has {std.numel()} entries but the input has {x.shape[1]} channels")
            step = step / std.view(1, -1, *([1] * (x.ndim - 2)))
        with torch.no_grad():
            x_hat = x.detach() - self.eps * step
            probs = torch.softmax(model(x_hat).double() / self.temperature, dim=1)
        return probs.max(dim=1).values.cpu().numpy()
