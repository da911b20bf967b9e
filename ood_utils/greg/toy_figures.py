"""Figures of the 2D toy (notebook 10): data, score surface with the threshold plane, contours with the
input-gradient field, perturbation arrows, certified-radius circles, and the Fig. 3 training curves."""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.patches import Circle

from .. import plots
from .energy import energy_score
from .toy import ToyData

METHOD_COLORS = {"energy": plots.color("method", "energy loss"), "greg": plots.color("method", "greg")}
METHOD_LABELS = {"energy": "Energy loss", "greg": "Energy loss + GReg"}
CLASS_COLORS = ("#1f77b4", "#9467bd", "#17becf")


def plot_data(ax, data: ToyData, title: str = "the toy: ID, auxiliary and held-out OOD") -> None:
    ax.scatter(*data.x_aux.T, s=4, c="0.6", label="auxiliary outliers (train)")
    for c, color in enumerate(CLASS_COLORS):
        ax.scatter(*data.x_in[data.y_in == c].T, s=5, color=color, label=f"ID class {c}")
    ax.scatter(*data.x_near.T, s=6, marker="x", c="#d62728", label="near-OOD (test)")
    ax.scatter(*data.x_far.T, s=6, marker="x", c="#ff7f0e", label="far-OOD (test)")
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, markerscale=2)


def plot_surface(ax, grid, gamma: float, title: str, zlim: tuple[float, float] | None = None) -> None:
    """The score manifold S(x) over the plane and the grey threshold plane S = gamma (Fig. 1a). ``zlim``
    shares the z axis (and the colour scale) between panels, so steepness compares across them."""
    X, Y, S = grid
    vmin, vmax = zlim if zlim is not None else (None, None)
    ax.plot_surface(X, Y, S, cmap="viridis", linewidth=0, antialiased=True, alpha=0.9, rstride=2, cstride=2,
                    vmin=vmin, vmax=vmax)
    if zlim is not None:
        ax.set_zlim(*zlim)
    ax.plot_surface(X, Y, np.full_like(S, gamma), color="0.5", alpha=0.35, linewidth=0)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_zlabel("$S_{En}(x)$")
    ax.set_title(title)
    ax.view_init(elev=28, azim=-60)


def gradient_field(model, lim: float = 9.5, n: int = 21) -> tuple[np.ndarray, ...]:
    """``(X, Y, U, V, norm)``: the input gradient of S on a coarse grid (for a quiver plot)."""
    t = torch.linspace(-lim, lim, n)
    xx, yy = torch.meshgrid(t, t, indexing="xy")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1).requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(energy_score(model(pts)).sum(), pts)
    g = g.detach().view(n, n, 2).numpy()
    return xx.numpy(), yy.numpy(), g[..., 0], g[..., 1], np.linalg.norm(g, axis=2)


def plot_contour(ax, grid, gamma: float, title: str, model=None, data: ToyData | None = None,
                 levels: int = 30, vmin=None, vmax=None, fig=None):
    """Filled contours of S, the threshold line S = gamma (black), and the direction of -grad S (arrows,
    coloured by ||grad S||): where arrows are dark the score is flat and a perturbation changes little."""
    X, Y, S = grid
    cs = ax.contourf(X, Y, S, levels=levels, cmap="viridis", vmin=vmin, vmax=vmax)
    ax.contour(X, Y, S, levels=[gamma], colors="k", linewidths=1.6)
    if data is not None:
        ax.scatter(*data.x_in.T, s=2, c="w", alpha=0.5)
        ax.scatter(*data.x_near.T, s=3, c="#d62728", alpha=0.6, marker="x")
    if model is not None:
        gx, gy, u, v, norm = gradient_field(model)
        scale = np.maximum(norm, 1e-12)
        arrows = ax.quiver(gx, gy, -u / scale, -v / scale, np.log10(scale), cmap="magma", scale=35, width=0.004)
        if fig is not None:
            fig.colorbar(arrows, ax=ax, shrink=0.8, pad=0.02, label=r"arrows: $\log_{10}\|\nabla_x S\|$")
    ax.set_aspect("equal")
    ax.set_title(title)
    return cs


def plot_flips(ax, model, points: torch.Tensor, gamma: float, eps: float, flipped: torch.Tensor) -> None:
    """Arrows of length eps from OOD points along -grad S; the end is red where the detection flipped."""
    x = points.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(energy_score(model(x)).sum(), x)
    step = -eps * g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
    for p, d, f in zip(points.numpy(), step.numpy(), flipped.numpy()):
        ax.annotate("", xy=p + d, xytext=p, arrowprops={"arrowstyle": "->", "color": "#d62728" if f else "w",
                                                         "lw": 1.0})
    ax.scatter(*points.T, s=10, c="w", edgecolors="k", linewidths=0.5, zorder=3)


def plot_radii(ax, centers: torch.Tensor, radii: torch.Tensor, color: str) -> None:
    """Certified balls of eq. (4) as circles (points whose radius is 0 are drawn as crosses)."""
    for c, r in zip(centers.numpy(), radii.numpy()):
        if r > 0:
            ax.add_patch(Circle(tuple(c), float(r), fill=False, color=color, lw=1.0))
        else:
            ax.plot(*c, marker="x", color=color, ms=4)


def radii_legend(ax, items) -> None:
    """Legend of :func:`plot_radii`: ``items`` = (label, colour) per point set; crosses = radius 0."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", markersize=9, markerfacecolor="none", color=c, linestyle="none",
                      label=f"{label}: certified ball") for label, c in items]
    handles.append(Line2D([], [], marker="x", color="0.3", linestyle="none", label="radius 0 (wrong side of gamma)"))
    handles.append(Line2D([], [], color="k", linewidth=1.6, label=r"threshold $S = \gamma$"))
    ax.legend(handles=handles, loc="lower left", fontsize=7, framealpha=0.85)


def plot_fig3(axes, runs: dict) -> None:
    """Fig. 3: energy loss (eq. 1) and mean ||grad_x S|| per iteration, mean +- std over seeds."""
    for method in ("energy", "greg"):
        step = runs[method][0]["history"]["step"]
        for ax, key in zip(axes, ("energy_loss", "grad_norm")):
            values = np.stack([r["history"][key] for r in runs[method]])
            mean, std = values.mean(0), values.std(0)
            ax.plot(step, mean, color=METHOD_COLORS[method], label=f"{METHOD_LABELS[method]} (n={len(values)})")
            ax.fill_between(step, mean - std, mean + std, color=METHOD_COLORS[method], alpha=0.25)
    axes[0].set_yscale("log")
    axes[0].set_title("energy loss, eq. (1)")
    axes[1].set_title(r"mean $\|\nabla_x S_{En}(x)\|$ over training points")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.legend()
