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

from . import decoders
from .boundary import sign_step
from .latent import cosine_logits


@torch.no_grad()
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


@torch.no_grad()
def classify(model, images01: torch.Tensor, dataset: str, batch_size: int = 256) -> np.ndarray:
    """Logits of a classifier of ``dataset`` on decoded images in [0, 1] (normalised and resized first)."""
    device = next(model.parameters()).device
    x = decoders.to_classifier_input(images01, dataset)
    model.eval()
    return torch.cat([model(x[i:i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(x), batch_size)]).numpy()


def energy(logits: np.ndarray) -> np.ndarray:
    """E(x) = -logsumexp(logits): higher = less in-distribution (the score BOOD evaluates with)."""
    logits = np.asarray(logits, dtype=np.float64)
    m = logits.max(1)
    return -(m + np.log(np.exp(logits - m[:, None]).sum(1)))


def away_from_source(logits: np.ndarray, y) -> np.ndarray:
    """1.0 where the classifier does not predict the class the feature came from."""
    return (np.asarray(logits).argmax(1) != np.asarray(y)).astype(float)


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


def pick_walks(kappa: torch.Tensor, y: torch.Tensor, n: int, max_kappa: int) -> torch.Tensor:
    """``n`` features of different classes that cross within ``max_kappa`` steps (lowest kappa first),
    so the walk figure shows crossings, one class per walk where possible."""
    order = torch.argsort(kappa.float() + (kappa <= 0).float() * 1e6, stable=True)
    chosen, seen = [], set()
    for i in order.tolist():
        if 0 < int(kappa[i]) <= max_kappa and int(y[i]) not in seen:
            chosen.append(i)
            seen.add(int(y[i]))
        if len(chosen) == n:
            break
    return torch.tensor(chosen, dtype=torch.long)


# ------------------------------------------------------------------------------------------ figures

def plot_walk(axes_images, axes_bars, frames, probs, y, class_names, steps, crossing):
    """Fig. 2: one decoded frame per chosen step with the classifier's probabilities beneath it."""
    from .. import plots

    for k, (ax_i, ax_b, s) in enumerate(zip(axes_images, axes_bars, steps)):
        img = frames[s].squeeze(0) if frames[s].shape[0] == 1 else frames[s].permute(1, 2, 0)
        ax_i.imshow(img.numpy(), cmap="gray", vmin=0, vmax=1)
        ax_i.set_xticks([]), ax_i.set_yticks([])
        tag = " (crossed)" if crossing >= 0 and s >= crossing else ""
        ax_i.set_title(f"step {s}{tag}", fontsize=9)
        p = probs[s].numpy()
        colors = [plots.COLORS[3] if c == int(y) else plots.COLORS[0] for c in range(len(p))]
        ax_b.bar(range(len(p)), p, color=colors)
        ax_b.set_ylim(0, max(0.3, float(probs.max())))
        ax_b.set_xticks(range(len(p)))
        ax_b.set_xticklabels([n[:2] for n in class_names], fontsize=6, rotation=90)
        if k:
            ax_b.set_yticklabels([])
