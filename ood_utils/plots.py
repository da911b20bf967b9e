"""One plotting style for the whole kit, and the few figure helpers the notebooks share.

    plots.setup_style()
    fig, ax = plt.subplots()
    plots.image_grid(images, nrow=8, ax=ax)
    plots.savefig(fig, "mini_benchmark", cfg.profile)   # -> figures/mini/mini_benchmark.png

Nothing here calls ``plt.show`` or picks a GUI backend: every helper works under the non-interactive Agg
backend (scripts, papermill, CI) as well as inline in Jupyter.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from . import paths

# Okabe-Ito: distinguishable with the common colour-vision deficiencies and in greyscale print.
COLORS = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]

STYLE = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 120,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linestyle": "-",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "lines.linewidth": 1.8,
    "image.cmap": "viridis",
}


def setup_style() -> None:
    """Apply the kit's style to matplotlib (idempotent; call once at the top of a notebook)."""
    import matplotlib as mpl
    from cycler import cycler

    mpl.rcParams.update(STYLE)
    mpl.rcParams["axes.prop_cycle"] = cycler(color=COLORS)


def savefig(fig, name: str, profile: str = "mini", dpi: int = 120) -> Path:
    """Save ``fig`` as ``figures/<profile>/<name>.png`` and return the path.

    Written to a temporary file first and renamed, so an interrupted run never leaves a truncated image.
    """
    name = name[:-4] if name.endswith(".png") else name
    if not name or Path(name).name != name:
        raise ValueError(f"figure name must be a plain file name such as 'greg_fig1a', got {name!r}")
    folder = paths.figures_dir(profile)
    path = folder / f"{name}.png"
    with paths.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


def _as_nhwc(images) -> np.ndarray:
    """(N,H,W), (N,H,W,C) or channels-first (N,C,H,W) tensors/arrays -> float (N,H,W,C) in [0, 1]."""
    if hasattr(images, "detach"):  # a torch tensor
        images = images.detach().cpu().numpy()
    arr = np.asarray(images)
    if arr.dtype == np.uint8:
        arr = arr / 255.0
    arr = arr.astype(np.float32)
    if arr.ndim == 3:
        arr = arr[..., None]
    elif arr.ndim == 4 and arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(0, 2, 3, 1)
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (N,H,W), (N,H,W,C) or (N,C,H,W) with C in (1, 3); got {arr.shape}")
    return np.clip(arr, 0.0, 1.0)


def image_grid(images, nrow: int = 8, titles: Sequence[str] | None = None, ax=None, cmap: str = "gray",
               pad: int = 2):
    """Show images as one mosaic, ``nrow`` images per row (as in ``torchvision.utils.make_grid``).

    ``images`` are in [0, 1] (uint8 is rescaled); ``titles`` label each tile. Returns the axes.
    """
    import matplotlib.pyplot as plt

    arr = _as_nhwc(images)
    n, h, w, c = arr.shape
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    ncol = max(1, min(nrow, n))
    rows = -(-n // ncol)
    gap = pad + (max(4, h // 3) if titles is not None else 0)  # room above each tile for its title
    grid = np.ones((rows * (h + gap) + pad, ncol * (w + pad) + pad, c), dtype=np.float32)
    for i, img in enumerate(arr):
        r, k = divmod(i, ncol)
        top, left = gap + r * (h + gap), pad + k * (w + pad)
        grid[top:top + h, left:left + w] = img
    if ax is None:
        _, ax = plt.subplots(figsize=(min(1.1 * ncol, 14), 1.1 * rows * (h + gap) / h))
    if c == 1:
        ax.imshow(grid[..., 0], cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(grid, interpolation="nearest")
    if titles is not None:
        if len(titles) != n:
            raise ValueError(f"got {len(titles)} titles for {n} images")
        for i, title in enumerate(titles):
            r, k = divmod(i, ncol)
            ax.text(pad + k * (w + pad) + w / 2, gap + r * (h + gap) - 1, str(title),
                    ha="center", va="bottom", fontsize=7)
    ax.set_axis_off()
    return ax


def heatmap(ax, matrix, row_labels: Sequence[str], col_labels: Sequence[str], fmt: str = ".2f",
            cmap: str = "viridis", colorbar: bool = True):
    """A labelled matrix with its values written in each cell (e.g. AUROC per truncation x scoring)."""
    m = np.asarray(matrix, dtype=float)
    if m.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"matrix shape {m.shape} does not match {len(row_labels)} row and "
                         f"{len(col_labels)} column labels")
    image = ax.imshow(m, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(col_labels)), labels=[str(c) for c in col_labels], rotation=30, ha="right")
    ax.set_yticks(range(len(row_labels)), labels=[str(r) for r in row_labels])
    ax.grid(False)
    finite = m[np.isfinite(m)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (i, j), value in np.ndenumerate(m):
        if np.isfinite(value):
            # dark text on the light end of the colour map, light text on the dark end
            color = "black" if value > middle else "white"
            ax.text(j, i, format(value, fmt), ha="center", va="center", color=color, fontsize=8)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return image


def bar_compare(ax, labels: Sequence[str], reproduced: Sequence[float], paper: Sequence[float | None],
                ylabel: str = "", errors: Sequence[float] | None = None):
    """Reproduced numbers beside the paper's, one pair of bars per label (missing paper values are skipped)."""
    x = np.arange(len(labels))
    width = 0.38
    ours = np.asarray(reproduced, dtype=float)
    theirs = np.array([np.nan if v is None else v for v in paper], dtype=float)
    if not len(ours) == len(theirs) == len(labels):
        raise ValueError(f"got {len(labels)} labels, {len(ours)} reproduced and {len(theirs)} paper values")
    ax.bar(x - width / 2, ours, width, yerr=errors, capsize=3, label="reproduced", color=COLORS[0])
    known = np.isfinite(theirs)
    ax.bar(x[known] + width / 2, theirs[known], width, label="paper", color=COLORS[1])
    ax.set_xticks(x, labels=[str(label) for label in labels], rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.legend(ncols=2, loc="lower center", bbox_to_anchor=(0.5, 1.0))  # above the bars, never on them
    return ax
