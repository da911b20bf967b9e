"""The shared figure helpers the MME notebooks introduced (plots.heatmap's text colours, plots.place_labels,
plots.interval_dots) and MME's own figures on constructed numbers."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from ood_utils import plots  # noqa: E402


def test_heatmap_text_is_dark_on_light_cells_and_light_on_dark_ones():
    fig, ax = plt.subplots()
    plots.heatmap(ax, np.array([[-1.0, 0.0, 1.0]]), ["r"], ["a", "b", "c"], cmap="RdBu", vmin=-1, vmax=1,
                  colorbar=False)
    colors = [t.get_color() for t in ax.texts]
    assert colors == ["white", "black", "white"]  # both ends of a diverging map are dark
    assert len(fig.axes) == 1  # no colour bar asked for
    plt.close(fig)


def test_place_labels_avoids_overlaps_in_a_cluster():
    fig, ax = plt.subplots(figsize=(4, 3))
    xs, ys = np.array([0.50, 0.51, 0.52, 0.50, 0.9]), np.array([0.50, 0.50, 0.51, 0.52, 0.1])
    ax.scatter(xs, ys)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    plots.place_labels(ax, xs, ys, ["Energy", "MLS", "SCALE", "ReAct", "far"])

    renderer = fig.canvas.get_renderer()
    boxes = []
    for t in ax.texts:  # the text's own box, without its leader line
        t.update_positions(renderer)
        boxes.append(Text.get_window_extent(t, renderer))
    assert len(boxes) == 5
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (ax.texts[i].get_text(), ax.texts[j].get_text())
    for t in ax.texts:  # every label points at its own marker
        assert tuple(t.xy) in set(zip(xs.tolist(), ys.tolist()))
    plt.close(fig)


def test_interval_dots_draw_one_row_per_label_with_values_written():
    fig, ax = plt.subplots()
    plots.interval_dots(ax, ["MME", "ViM", "MSP"], [0.95, 0.9512, 0.8], lo=[0.94, 0.94, 0.78],
                        hi=[0.96, 0.96, 0.82], highlight=["MME"], paper=[0.97, None, 0.85])
    at = {t.get_text(): y for t, y in zip(ax.get_yticklabels(), ax.get_yticks())}
    assert at["MME"] > at["ViM"] > at["MSP"]  # first label on top
    assert sorted(t.get_text() for t in ax.texts) == ["0.800", "0.950", "0.951"]
    assert ax.get_xlim()[0] < 0.78  # the axis shows every interval: nothing is cut off
    with pytest.raises(ValueError, match="labels"):
        plots.interval_dots(ax, ["a"], [0.1, 0.2])
    plt.close(fig)
