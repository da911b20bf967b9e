"""Boundary walks made visible (notebook 31): trajectories of eq. (3)'s sign steps, the classifier's
probabilities along them, their decoded images, and the measurements behind the claims about decoded
outliers (BOOD Figs. 1-3, 7, 8).

    traj, probs = walks.walk(z, y, anchors, alpha=0.015, n_steps=40)     # (S+1, N, D), (S+1, N, C)
    images = walks.decode_steps(cfg, space, traj, y)                      # (S+1, N, C, H, W) in [0, 1]
    logits = walks.classify(model, images01, "mnist5k")                  # the base classifier's view
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..threads import one_cpu_thread
from . import decoders
from .boundary import boundary_steps, class_margin, select_boundary, sign_step
from .latent import cosine_logits


@torch.no_grad()
@one_cpu_thread()
def walk(z, y, anchors, alpha: float = 0.015, n_steps: int = 40, temperature: float = 1.0):
    """Every sign step of eq. (3) from the normalised features ``z`` for ``n_steps`` steps (past the boundary:
    the walk does not stop). Returns the trajectory (S+1, N, D) and the softmax of the cosine logits (S+1, N, C)."""
    z = F.normalize(torch.as_tensor(z).float(), dim=1)
    y, anchors = torch.as_tensor(y).long(), torch.as_tensor(anchors).float()
    traj = [z]
    for _ in range(n_steps):
        with torch.enable_grad():
            traj.append(sign_step(traj[-1], y, anchors, alpha, temperature))
    traj = torch.stack(traj)
    probs = torch.softmax(cosine_logits(traj.flatten(0, 1), anchors, temperature), 1).view(*traj.shape[:2], -1)
    return traj, probs


def crossing_step(probs: torch.Tensor, y) -> torch.Tensor:
    """First step at which the prediction differs from ``y`` (kappa of eq. 3); -1 if it never does."""
    wrong = probs.argmax(2) != torch.as_tensor(y).long()[None]
    first = wrong.float().argmax(0)
    return torch.where(wrong.any(0), first, torch.full_like(first, -1))


def decode_steps(cfg, space, traj: torch.Tensor, y, *, seed: int = 0, progress: bool = False) -> torch.Tensor:
    """Decode every step of the walks with the same diffusion noise per walk, so that only the condition
    changes from one frame to the next. Returns (S+1, N, C, H, W) in [0, 1]."""
    y = torch.as_tensor(y).long()
    norms = space.anchors.norms[y].unsqueeze(1)
    frames = [decoders.decode(cfg, space, F.normalize(step, dim=1) * norms, y, seed=seed, progress=progress)
              for step in traj]
    return torch.stack(frames)


classify = decoders.classify      # the base classifier's logits on decoded images (one home: decoders)


def energy(logits: np.ndarray) -> np.ndarray:
    """E(x) = -logsumexp(logits): higher = less in-distribution (the score BOOD evaluates with)."""
    logits = np.asarray(logits, dtype=np.float64)
    m = logits.max(1)
    return -(m + np.log(np.exp(logits - m[:, None]).sum(1)))


def away_from_source(logits: np.ndarray, y) -> np.ndarray:
    """1.0 where the classifier does not predict the class the feature came from."""
    return (np.asarray(logits).argmax(1) != np.asarray(y)).astype(float)


#: "reads confidently as another ID class": predicted class != source with a softmax probability >= this
CONFIDENT = 0.9


def confident_other(logits: np.ndarray, y) -> np.ndarray:
    """1.0 where the classifier reads an image as a class other than ``y`` with probability >= CONFIDENT:
    a clean digit of another ID class, not an outlier."""
    logits = np.asarray(logits, dtype=np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return ((p.argmax(1) != np.asarray(y)) & (p.max(1) >= CONFIDENT)).astype(float)


def premise(z, y, anchors, alpha: float, max_steps: int, ratio: float, temperature: float = 1.0, *,
            margin_ties: bool = True, skip_misclassified: bool = True) -> dict:
    """What eq. (3) must deliver for BOOD's selection to mean something, measured on ID features: kappa
    resolves distance (many distinct values, a median of several steps, few features crossing in one step),
    the selection is decided by kappa (few choices left to a tie-break, none to the index) and picks
    features on the correct side of their boundary."""
    z = F.normalize(torch.as_tensor(z).float(), dim=1)
    y, anchors = torch.as_tensor(y).long(), torch.as_tensor(anchors).float()
    kappa = boundary_steps(z, y, anchors, alpha, max_steps, temperature)
    margin = class_margin(z, y, anchors, temperature)
    chosen = select_boundary(kappa, y, ratio, len(anchors), margin=margin if margin_ties else None,
                             skip_misclassified=skip_misclassified)
    picked = torch.zeros(len(y), dtype=torch.bool)
    picked[chosen] = True
    tied = 0           # chosen features whose kappa equals an unchosen candidate's of their class
    for c in y[chosen].unique().tolist():
        cut = int(kappa[chosen][y[chosen] == c].max())
        rivals = (y == c) & ~picked & (kappa == cut) & ((kappa > 0) | (not skip_misclassified))
        if rivals.any():
            tied += int(((y == c) & picked & (kappa == cut)).sum())
    correct = kappa > 0
    return {"alpha": alpha, "distinct kappa": len(kappa.unique()),
            "median kappa": float(kappa[correct].float().median()) if correct.any() else 0.0,
            "cross in 1 step": float((kappa[correct] == 1).float().mean()) if correct.any() else 0.0,
            "never cross (kappa = K)": float((kappa == max_steps).float().mean()),
            "selected": len(chosen), "selected by a tie-break": tied,
            "tie-break": "margin" if margin_ties else "index",
            "misclassified selected": int((kappa[chosen] == 0).sum()),
            "misclassified in training": int((~correct).sum())}


def top2_margin(z, anchors, temperature: float = 1.0) -> np.ndarray:
    """Gap between the two largest cosine logits: 0 on a decision boundary of the latent space."""
    logits = cosine_logits(torch.as_tensor(z).float(), torch.as_tensor(anchors).float(), temperature)
    top = logits.topk(2, dim=1).values
    return (top[:, 0] - top[:, 1]).numpy()


def mean_difference(a, b, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """mean(a) - mean(b) of two independent samples with a percentile bootstrap interval."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("mean_difference needs two non-empty samples")
    rng = np.random.default_rng(seed)
    boots = np.array([a[rng.integers(0, len(a), len(a))].mean() - b[rng.integers(0, len(b), len(b))].mean()
                      for _ in range(n_boot)])
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(boots, [tail, 100 - tail])
    return {"delta": float(a.mean() - b.mean()), "lo": float(lo), "hi": float(hi), "a": float(a.mean()),
            "b": float(b.mean()), "n_a": len(a), "n_b": len(b)}


def per_class_rows(outliers, n_per_class: int) -> torch.Tensor:
    """Indices of the first ``n_per_class`` outliers of every class (for grids with one row per class)."""
    rows = [(outliers.labels == c).nonzero().squeeze(1)[:n_per_class] for c in outliers.labels.unique().tolist()]
    return torch.cat(rows)


def pick_walks(kappa: torch.Tensor, y: torch.Tensor, n: int, max_kappa: int, candidates=None) -> torch.Tensor:
    """``n`` features of different classes (among ``candidates``, default all) that cross within ``max_kappa``
    steps, the longest walks first, so that the walk figure shows the approach to the boundary as well as
    the crossing; one class per walk where possible."""
    kappa = torch.as_tensor(kappa).long()
    allowed = torch.zeros(len(kappa), dtype=torch.bool)
    allowed[torch.arange(len(kappa)) if candidates is None else torch.as_tensor(candidates).long()] = True
    allowed &= (kappa > 0) & (kappa <= max_kappa)
    order = torch.argsort(-kappa.float(), stable=True)
    chosen, seen = [], set()
    for i in order.tolist():
        if allowed[i] and int(y[i]) not in seen:
            chosen.append(i)
            seen.add(int(y[i]))
        if len(chosen) == n:
            break
    return torch.tensor(chosen, dtype=torch.long)


# ------------------------------------------------------------------------------------------ figures

SOURCE_COLOR = "#D55E00"      # the walk's source class in every bar chart ("dark orange")


def plot_walk(axes_images, axes_bars, frames, probs, y, class_names, steps, crossing):
    """Fig. 2: one decoded frame per chosen step with the cosine classifier's probabilities beneath it (the
    source class's bar in dark orange, ``SOURCE_COLOR``)."""
    from .. import plots

    for k, (ax_i, ax_b, s) in enumerate(zip(axes_images, axes_bars, steps)):
        img = frames[s].squeeze(0) if frames[s].shape[0] == 1 else frames[s].permute(1, 2, 0)
        ax_i.imshow(img.numpy(), cmap="gray", vmin=0, vmax=1)
        ax_i.set_xticks([]), ax_i.set_yticks([])
        tag = "\n(crossed)" if crossing >= 0 and s >= crossing else "\n"
        ax_i.set_title(f"step {s}{tag}", fontsize=8)
        p = probs[s].numpy()
        colors = [SOURCE_COLOR if c == int(y) else plots.COLORS[0] for c in range(len(p))]
        ax_b.bar(range(len(p)), p, color=colors)
        ax_b.set_ylim(0, max(0.3, float(probs.max())))
        ax_b.set_xticks(range(len(p)))
        ax_b.set_xticklabels([n[:2] for n in class_names], fontsize=6, rotation=90)
        if k:
            ax_b.set_yticklabels([])
