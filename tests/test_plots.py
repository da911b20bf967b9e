"""Plot helpers: atomic savefig into figures/<profile>/, image grids of every layout, heatmap, bar_compare."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from ood_utils import paths, plots


def test_savefig_writes_png_atomically():
    plots.setup_style()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = plots.savefig(fig, "unit_test_line", "mini")
    plt.close(fig)
    assert path == paths.figures_dir("mini") / "unit_test_line.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(path.parent.glob("*.tmp"))
    with pytest.raises(ValueError, match="plain file name"):
        plots.savefig(fig, "../escape", "mini")


@pytest.mark.parametrize("images", [
    np.random.rand(5, 8, 8),                                    # (N,H,W)
    np.random.rand(5, 8, 8, 3),                                 # (N,H,W,C)
    (np.random.rand(5, 8, 8, 1) * 255).astype(np.uint8),        # uint8
    torch.rand(5, 3, 8, 8),                                     # channels-first tensor
])
def test_image_grid_layouts(images):
    fig, ax = plt.subplots()
    plots.image_grid(images, nrow=3, titles=list("abcde"), ax=ax)
    grid = ax.get_images()[0].get_array()
    gap = 2 + 4  # padding + room for the titles
    assert grid.shape[:2] == (2 * (8 + gap) + 2, 3 * (8 + 2) + 2)  # 2 rows of 3 tiles
    assert [t.get_text() for t in ax.texts] == list("abcde")
    plt.close(fig)


def test_image_grid_rejects_bad_shapes():
    with pytest.raises(ValueError, match="images must be"):
        plots.image_grid(np.zeros((2, 8, 8, 5)))
    with pytest.raises(ValueError, match="titles"):
        plots.image_grid(np.zeros((2, 8, 8)), titles=["one"])


def test_heatmap_and_bar_compare():
    fig, (a, b) = plt.subplots(1, 2)
    plots.heatmap(a, [[0.1, 0.9], [0.5, np.nan]], ["r1", "r2"], ["c1", "c2"], fmt=".1f")
    assert sorted(t.get_text() for t in a.texts) == ["0.1", "0.5", "0.9"]
    with pytest.raises(ValueError, match="does not match"):
        plots.heatmap(a, np.zeros((2, 3)), ["r1", "r2"], ["c1", "c2"])
    plots.bar_compare(b, ["Energy", "GReg"], [0.9, 0.95], [0.91, None], ylabel="AUROC")
    assert len(b.patches) == 3  # the missing paper value draws no bar
    plt.close(fig)


def test_one_colour_per_name_within_each_kind():
    for kind, mapping in plots.PALETTE.items():
        assert len(set(mapping.values())) == len(mapping), f"two {kind}s share a colour"
        assert all(c.startswith("#") and len(c) == 7 for c in mapping.values())
        for alias, target in plots.ALIASES[kind].items():
            assert target in mapping, f"{kind} alias {alias!r} points at nothing"
    from ood_utils import results
    assert set(results.VERDICTS) == set(plots.PALETTE["verdict"])      # every verdict the kit gives has one


def test_color_matches_spellings_and_rejects_unknown_names():
    assert plots.color("method", "GReg") == plots.color("method", " greg ") == plots.PALETTE["method"]["greg"]
    assert plots.color("group", "near-OOD") == plots.color("group", "near") != plots.color("group", "far")
    assert plots.color("group", "ID") == plots.PALETTE["group"]["id"]
    assert plots.color("method", "baseline") == plots.color("method", "base classifier")
    assert plots.colors("verdict", ["agrees", "tie"]) == [plots.PALETTE["verdict"]["agrees"],
                                                         plots.PALETTE["verdict"]["tie within noise"]]
    with pytest.raises(KeyError, match="known: .*greg"):
        plots.color("method", "my new method")
    with pytest.raises(ValueError, match="kinds: method"):
        plots.color("colour", "near")


def test_legend_handles_and_interval_dots_use_the_palette():
    import matplotlib.colors as mcolors

    handles = plots.legend_handles("group", ["ID", "near"], ["ID test", "near-OOD"])
    assert [h.get_label() for h in handles] == ["ID test", "near-OOD"]
    assert mcolors.to_hex(handles[1].get_facecolor()) == plots.color("group", "near").lower()
    fig, ax = plt.subplots()
    groups = ["near", "far", "near"]
    plots.interval_dots(ax, ["a", "b", "c"], [0.6, 0.99, 0.7], [0.55, 0.98, 0.65], [0.65, 1.0, 0.75],
                        colors=plots.colors("group", groups), highlight=["c"], chance=0.5)
    dots = ax.collections[-1].get_facecolors()
    assert [mcolors.to_hex(c) for c in dots] == [plots.color("group", g).lower() for g in groups]
    assert any(line.get_xdata()[0] == 0.5 for line in ax.get_lines())           # the chance line
    assert [t.get_fontweight() for t in ax.get_yticklabels()][2] == "bold"     # "c" is highlighted
    with pytest.raises(ValueError, match="colours"):
        plots.interval_dots(ax, ["a", "b"], [0.6, 0.7], colors=["#000000"])
    plt.close(fig)
