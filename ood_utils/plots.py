"""One plotting style for the whole kit, and the few figure helpers the notebooks share.

    plots.setup_style()
    fig, ax = plt.subplots()
    plots.image_grid(images, nrow=8, ax=ax)
    plots.savefig(fig, "mini_benchmark", cfg.profile)   # -> figures/mini/mini_benchmark.png

Colours: one palette for the whole kit, :data:`PALETTE`, read through :func:`color`. A colour means one
thing: each *method* (MSP, Energy, ODIN, ReAct, DICE, MME, GReg, BOOD, OE, POEM, ...), each *OOD group*
(ID, near, far, aux), each *verdict* of a claim (agrees, tie within noise, disagrees, undetermined) and
each *source* of a number (reproduced, paper) has its own, the same in every notebook::

    ax.plot(x, y, color=plots.color("method", "GReg"), label="GReg")
    ax.hist(s_near, color=plots.color("group", "near"))
    ax.legend(handles=plots.legend_handles("group", ["ID", "near", "far"]))

Names are matched without regard to case, spaces or a trailing "-OOD" (``"near-OOD"`` is ``"near"``);
an unknown name is an error that names the known ones (add a new method to ``PALETTE["method"]`` rather
than picking a colour by hand). Colour a figure by one kind only: the same hue is used in two kinds (near-OOD
and GReg are both vermillion), never twice in one kind. ``COLORS`` (Okabe-Ito) stays the cycle for lines
that are none of these (classes, seeds, panels).

Helpers: ``image_grid`` (a mosaic of images), ``heatmap`` (a matrix with its values written in the cells),
``interval_dots`` (one dot and its interval per method: numbers that differ in the third decimal),
``place_labels`` (labels on a scatter plot that avoid each other), ``bar_compare`` (reproduced beside
published, for values on a common zero-based scale).

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

#: the kit's one palette: kind -> name (lower case) -> colour
PALETTE: dict[str, dict[str, str]] = {
    "method": {
        # the three papers' methods
        "greg": "#D55E00", "greg+": "#CC79A7", "mme": "#009E73", "bood": "#E69F00",
        # the classifier and the post-hoc scores it is compared with
        "base classifier": "#7F7F7F", "msp": "#56B4E9", "energy": "#0072B2", "mls": "#88CCEE",
        "odin": "#DDCC77", "mahalanobis": "#6699CC", "knn": "#999933", "vim": "#332288",
        "react": "#CC6677", "dice": "#882255", "ash-s": "#AA4499", "scale": "#44AA99", "vra": "#117733",
        "nme+": "#EE7733", "co+": "#4B0092",
        # training with outliers: the baselines of GReg and BOOD
        "oe": "#B8860B", "energy loss": "#1A5E8A", "poem": "#8C564B", "dos": "#E377C2",
        "dreamood": "#BCBD22", "vos": "#17BECF", "npos": "#9467BD",
    },
    "group": {"id": "#000000", "near": "#D55E00", "far": "#0072B2", "aux": "#999999"},
    "verdict": {"agrees": "#009E73", "tie within noise": "#9A9A9A", "disagrees": "#D55E00",
                "undetermined": "#56B4E9"},
    "source": {"reproduced": "#0072B2", "paper": "#BBBBBB"},
}

#: other spellings of the same name
ALIASES: dict[str, dict[str, str]] = {
    "method": {"base": "base classifier", "baseline": "base classifier", "maxlogit": "mls", "max logit": "mls",
               "ash": "ash-s", "energy score": "energy", "energy-ft": "energy loss", "energy fine-tune": "energy loss",
               "outlier exposure": "oe", "greg plus": "greg+", "nme": "nme+", "co": "co+"},
    "group": {"in-distribution": "id", "near-ood": "near", "far-ood": "far", "auxiliary": "aux"},
    "verdict": {"tie": "tie within noise"},
    "source": {"ours": "reproduced", "published": "paper"},
}


def _key(kind: str, name: str) -> str:
    if kind not in PALETTE:
        raise ValueError(f"unknown colour kind {kind!r}; kinds: {', '.join(PALETTE)}")
    key = " ".join(str(name).lower().split())
    return ALIASES[kind].get(key, key)


def color(kind: str, name: str) -> str:
    """The kit's colour of a method, OOD group, verdict or source (``color("group", "near")``), as a hex
    string; every notebook colours the same name the same way."""
    key = _key(kind, name)
    if key not in PALETTE[kind]:
        raise KeyError(f"no {kind} colour for {name!r}; known: {', '.join(PALETTE[kind])} "
                       f"(add it to plots.PALETTE[{kind!r}])")
    return PALETTE[kind][key]


def colors(kind: str, names: Sequence[str]) -> list[str]:
    """:func:`color` of each name, e.g. a seaborn ``palette`` or the bar colours of a grouped plot."""
    return [color(kind, n) for n in names]


def legend_handles(kind: str, names: Sequence[str], labels: Sequence[str] | None = None):
    """Legend patches for ``names`` in their kit colours (``ax.legend(handles=...)``), labelled ``labels``
    or the names themselves."""
    from matplotlib.patches import Patch

    labels = list(names) if labels is None else list(labels)
    return [Patch(color=color(kind, n), label=str(lab)) for n, lab in zip(names, labels)]


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
            cmap: str = "viridis", colorbar: bool = True, vmin: float | None = None, vmax: float | None = None,
            fontsize: float = 8, colorbar_label: str = ""):
    """A labelled matrix with each value written in its cell (e.g. AUROC per truncation x scoring function).

    The text is black or white by the relative luminance of the cell's colour, so it stays readable at both
    ends of any map, diverging ones included (give ``vmin = -vmax`` to centre those on 0). NaN cells stay
    empty. Returns the image (for a shared colour bar)."""
    import matplotlib as mpl

    m = np.asarray(matrix, dtype=float)
    if m.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"matrix shape {m.shape} does not match {len(row_labels)} row and "
                         f"{len(col_labels)} column labels")
    image = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(col_labels)), labels=[str(c) for c in col_labels], rotation=30, ha="right")
    ax.set_yticks(range(len(row_labels)), labels=[str(r) for r in row_labels])
    ax.grid(False)
    colours = mpl.colormaps[cmap] if isinstance(cmap, str) else cmap
    for (i, j), value in np.ndenumerate(m):
        if np.isfinite(value):
            r, g, b, _ = colours(image.norm(value))
            light = 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5  # relative luminance of the cell
            ax.text(j, i, format(value, fmt), ha="center", va="center", fontsize=fontsize,
                    color="black" if light else "white")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=colorbar_label)
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
    ax.bar(x - width / 2, ours, width, yerr=errors, capsize=3, label="reproduced", color=color("source", "reproduced"))
    known = np.isfinite(theirs)
    ax.bar(x[known] + width / 2, theirs[known], width, label="paper", color=color("source", "paper"))
    ax.set_xticks(x, labels=[str(label) for label in labels], rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.legend(ncols=2, loc="lower center", bbox_to_anchor=(0.5, 1.0))  # above the bars, never on them
    return ax


#: where a point's label may go, in points from the point, tried in this order
_LABEL_OFFSETS = [(5, 4), (5, -4), (-5, 4), (-5, -4), (0, 8), (0, -8), (9, 0), (-9, 0),
                  (12, 12), (-12, 12), (12, -12), (-12, -12), (0, 18), (0, -18), (22, 0), (-22, 0),
                  (20, 22), (-20, 22), (20, -22), (-20, -22)]


def place_labels(ax, xs, ys, labels, fontsize: float = 8, weights=None, avoid=None):
    """Label scattered points without overlaps where possible: each label takes the first position (of a
    few around its point) that overlaps no label placed before, no other point (nor the points ``avoid``,
    an (M, 2) array) and stays inside the axes; failing that, the least-overlapping one. A thin leader line
    ties every label to its point. Call it last: the figure's layout must be final."""
    from matplotlib.transforms import Bbox

    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    pts = ax.transData.transform(np.column_stack([xs, ys]))
    others = ax.transData.transform(np.asarray(avoid, dtype=float).reshape(-1, 2)) if avoid is not None else []
    r = 4.5 * fig.dpi / 72.0    # a marker's radius, in pixels
    pad = 2.0 * fig.dpi / 72.0  # free space kept around each label
    point_boxes = [Bbox.from_bounds(px - r, py - r, 2 * r, 2 * r) for px, py in pts]
    obstacles = [Bbox.from_bounds(px - r, py - r, 2 * r, 2 * r) for px, py in others]
    frame = ax.get_window_extent(renderer)
    placed = []

    def overlap(a, b):
        w = min(a.x1, b.x1) - max(a.x0, b.x0)
        h = min(a.y1, b.y1) - max(a.y0, b.y0)
        return w * h if w > 0 and h > 0 else 0.0

    order = np.argsort(-np.asarray(weights)) if weights is not None else range(len(labels))
    for i in order:
        best = None
        for dx, dy in _LABEL_OFFSETS:
            ha = "left" if dx > 0 else "right" if dx < 0 else "center"
            va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
            text = ax.annotate(labels[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points",
                               fontsize=fontsize, ha=ha, va=va)
            box = text.get_window_extent(renderer)
            box = Bbox.from_extents(box.x0 - pad, box.y0 - pad, box.x1 + pad, box.y1 + pad)
            cost = sum(overlap(box, b) for b in placed)
            cost += sum(overlap(box, b) for k, b in enumerate(point_boxes) if k != i)
            cost += sum(overlap(box, b) for b in obstacles)
            outside = box.width * box.height - overlap(box, frame)
            cost += 4 * outside
            text.remove()
            if best is None or cost < best[0]:
                best = (cost, dx, dy, ha, va, box)
            if cost == 0:
                break
        cost, dx, dy, ha, va, box = best
        # a leader line from every label to its own marker, so a label in a crowd names the right point
        ax.annotate(labels[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                    ha=ha, va=va, arrowprops=dict(arrowstyle="-", color="#999999", lw=0.6, shrinkA=0, shrinkB=3))
        placed.append(box)
    return ax


def interval_dots(ax, labels: Sequence[str], values, lo=None, hi=None, *, highlight: Sequence[str] = (),
                  colors: Sequence[str] | None = None, paper=None, paper_label: str = "paper", xlabel: str = "",
                  digits: int = 3, chance: float | None = None):
    """One row per label: a dot at ``values`` with its interval [lo, hi] as a line, and (optionally)
    ``paper`` values as hollow diamonds: the plot for numbers that differ in the third decimal, where a bar's
    length would only show where its axis was cut. ``colors`` gives each row its colour (e.g.
    ``plots.colors("group", groups)``); without it the rows are ``COLORS[0]`` and the ``highlight`` labels
    ``COLORS[3]``, whose labels are also set in bold. ``chance`` draws a dotted reference line there (0.5
    for an AUROC). Values are written beside the dots with ``digits`` decimals; ``paper_label`` names the
    diamonds (say which setting they come from). Returns the axes."""
    values = np.asarray(values, dtype=float)
    n = len(labels)
    if values.shape != (n,):
        raise ValueError(f"got {n} labels and {values.shape} values")
    y = np.arange(n)[::-1]  # first label at the top
    if colors is None:
        colors = [COLORS[3] if label in set(highlight) else COLORS[0] for label in labels]
    elif len(colors) != n:
        raise ValueError(f"got {n} labels and {len(colors)} colours")
    if chance is not None:
        ax.axvline(chance, color="#777777", ls=":", lw=1, zorder=1)
        ax.annotate("chance", (chance, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                    textcoords="offset points", fontsize=7, color="#777777", va="top")
    if lo is not None and hi is not None:
        lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
        ax.hlines(y, lo, hi, colors=colors, lw=2.2, alpha=0.6)
    ax.scatter(values, y, color=colors, s=36, zorder=3)
    if paper is not None:
        theirs = np.array([np.nan if v is None else v for v in paper], dtype=float)
        known = np.isfinite(theirs)
        ax.scatter(theirs[known], y[known], marker="D", facecolor="none", edgecolor="#555555", s=34, zorder=4,
                   label=paper_label)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    right = np.nanmax(hi) if hi is not None else np.nanmax(values)
    for yy, v in zip(y, values):
        ax.annotate(f"{v:.{digits}f}", (right, yy), xytext=(6, 0), textcoords="offset points", va="center",
                    fontsize=8, annotation_clip=False)
    ax.set_yticks(y, labels=[str(label) for label in labels])
    for tick, label in zip(ax.get_yticklabels(), labels):
        if label in set(highlight):
            tick.set_fontweight("bold")
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", visible=False)
    return ax
