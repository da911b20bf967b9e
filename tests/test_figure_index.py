"""figures/README.md: every figure the notebooks write, read from the code; stale file -> failing test."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from ood_utils import figure_index as fi
from ood_utils import paths

README = paths.REPO_ROOT / "figures" / "README.md"


def _notebook(folder: Path, name: str, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# title")] + [nbformat.v4.new_code_cell(s) for s in sources]
    path = folder / name
    nbformat.write(nb, str(path))
    return path


def test_readme_lists_every_figure_of_the_notebooks():
    expected = fi.markdown(fi.collect())
    assert README.exists() and README.read_text() == expected, (
        "figures/README.md is stale: run `python -m ood_utils.figure_index --write figures/README.md`")


def test_every_figure_is_named_after_its_notebook():
    wrong = [f"{f.notebook}: {f.name}" for f in fi.misnamed(fi.collect())]
    assert not wrong, f"figures not named NN_<topic> after the notebook that writes them: {wrong}"


def test_call_sites_names_conditions_and_mirrors(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder, "10_greg_toy.ipynb",
              '%matplotlib inline\nplots.savefig(fig, "greg_fig1a_surface", cfg.profile)',
              'for ds in cfg.id_datasets:\n    plots.savefig(fig, f"greg_table4_{ds}", cfg.profile)',
              'if cfg.profile != "mini":\n    pass\nelse:\n'
              '    # mirrors: GReg Fig. 3 (loss curves)\n    plots.savefig(fig, "greg_curves", cfg.profile)',
              'plots.savefig(fig, name="bood_eq6_alg1_walk.png")\nfig.savefig("not_the_kit.png")',
              'plots.savefig(fig, "toy_overview")\nplots.savefig(fig, "mme_score_view")\n'
              'bood.figures.savefig(fig, "bood_fig2_grid", cfg.profile)\nplt.savefig("elsewhere.png", dpi=80)')
    package = tmp_path / "pkg"
    (package / "greg").mkdir(parents=True)
    (package / "greg" / "figures.py").write_text(
        "from .. import plots\n\n\ndef draw_radius(cfg):\n    fig = None\n"
        "    plots.savefig(fig, 'greg_eq4_radius', cfg.profile)\n\n\n"
        "def helper(fig, name, profile):\n    plots.savefig(fig, name, profile)  # name from the caller\n\n\n"
        "def unused(fig):\n    plots.savefig(fig, 'greg_orphan')\n")
    _notebook(folder, "11_greg_finetune.ipynb", "greg.figures.draw_radius(cfg)")
    figures = fi.collect(folder, package)
    rows = {(f.name, f.notebook): f for f in figures}
    assert rows[("greg_fig1a_surface", "10_greg_toy")].mirrors == "GReg Fig. 1a"
    assert rows[("greg_fig1a_surface", "10_greg_toy")].site == "cell 1"  # counting every cell, from 0
    assert rows[("greg_table4_{ds}", "10_greg_toy")].mirrors == "GReg Table 4"
    assert rows[("greg_table4_{ds}", "10_greg_toy")].pattern() == "greg_table4_*.png"
    curves = rows[("greg_curves", "10_greg_toy")]
    assert curves.mirrors == "GReg Fig. 3 (loss curves)"  # the comment wins over the name
    assert curves.condition == "not (cfg.profile != 'mini')"
    assert rows[("bood_eq6_alg1_walk", "10_greg_toy")].mirrors == "BOOD eq. (6), Alg. 1"
    assert rows[("toy_overview", "10_greg_toy")].mirrors == f"{fi.KIT_OWN} (GReg)"  # the notebook's paper
    assert rows[("mme_score_view", "10_greg_toy")].mirrors == f"{fi.KIT_OWN} (MME)"
    assert rows[("greg_eq4_radius", "11_greg_finetune")].site == "pkg/greg/figures.py:6"
    assert rows[("greg_orphan", "ood_utils")].mirrors == fi.KIT_OWN + " (GReg)"
    assert rows[("bood_fig2_grid", "10_greg_toy")].mirrors == "BOOD Fig. 2"  # the kit's savefig, by another path
    assert not any(f.name in ("not_the_kit", "elsewhere", "{name}") for f in figures)
    assert [f.notebook for f in figures][:7] == ["10_greg_toy"] * 7  # notebook order, then call order
    table = fi.markdown(figures)
    assert "| `greg_curves.png` | 10_greg_toy | GReg Fig. 3 (loss curves) | when `not (cfg.profile != 'mini')` |" in table


def test_check_flags_a_stale_file(tmp_path, capsys, monkeypatch):
    figures = [fi.Figure("mme_fig2_x", "20_mme", "MME Fig. 2", "", "cell 3")]
    monkeypatch.setattr(fi, "collect", lambda: figures)  # not the live notebooks, which may change meanwhile
    stale = tmp_path / "README.md"
    stale.write_text("# Figures\nold\n")
    assert fi.main(["--check", str(stale)]) == 1
    assert "is stale" in capsys.readouterr().err
    assert fi.main(["--write", str(stale)]) == 0
    assert fi.main(["--check", str(stale)]) == 0


@pytest.mark.parametrize("name, mirrors", [("mme_fig5_sensitivity", "MME Fig. 5"), ("greg_figure3_x", "GReg Fig. 3"),
                                           ("mme_table5_6_variants", "MME Table 5, Table 6"),
                                           ("bood_fig4_2_walks", "BOOD Fig. 4, Fig. 2"),
                                           ("mme_prop1_check", "MME Proposition 1"), ("00_metrics", fi.KIT_OWN),
                                           ("31_bood_fig2_grid", "BOOD Fig. 2"), ("12_greg_table5_x", "GReg Table 5")])
def test_mirrors_from_the_name(name, mirrors):
    assert fi.mirrors_of(name, [""], 1) == mirrors


def test_section_headings_name_what_a_figure_mirrors(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("## 4. Walking across the boundary (Fig. 2)\nframes"),
                nbformat.v4.new_code_cell('plots.savefig(fig, "bood_31_walks", cfg.profile)'),
                nbformat.v4.new_code_cell('plots.savefig(fig, "bood_fig4_pca", cfg.profile)'),  # the name wins
                nbformat.v4.new_markdown_cell("## 5. Decoding (eq. (6), Figs. 1 and 7)"),
                nbformat.v4.new_code_cell('plots.savefig(fig, "decoded", cfg.profile)  # mirrors: BOOD Fig. 7'),
                nbformat.v4.new_code_cell('plots.savefig(fig, "decoded_too", cfg.profile)'),
                nbformat.v4.new_markdown_cell("## 6. Our own view (a histogram)"),
                nbformat.v4.new_code_cell('plots.savefig(fig, "own_view", cfg.profile)')]
    nbformat.write(nb, str(folder / "31_bood_walks.ipynb"))
    nb.cells = nb.cells[:2]
    nbformat.write(nb, str(folder / "00_start.ipynb"))  # not a paper's notebook: headings name no paper
    rows = {(f.name, f.notebook): f.mirrors for f in fi.collect(folder, tmp_path / "no_package")}
    assert rows[("bood_31_walks", "31_bood_walks")] == "BOOD Fig. 2"
    assert rows[("bood_fig4_pca", "31_bood_walks")] == "BOOD Fig. 4"
    assert rows[("decoded", "31_bood_walks")] == "BOOD Fig. 7"
    assert rows[("decoded_too", "31_bood_walks")] == "BOOD eq. (6), Figs. 1 and 7"
    assert rows[("own_view", "31_bood_walks")] == f"{fi.KIT_OWN} (BOOD)"
    assert rows[("bood_31_walks", "00_start")] == f"{fi.KIT_OWN} (BOOD)"  # from the name's paper prefix


def test_misnamed_lists_figures_not_named_after_their_notebook(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder, "00_start.ipynb", 'plots.savefig(fig, "00_benchmark", cfg.profile)')
    _notebook(folder, "31_bood_walks.ipynb", 'plots.savefig(fig, "bood_31_walks", cfg.profile)',
              'plots.savefig(fig, f"31_walks_{ds}", cfg.profile)\nplots.savefig(fig, "310_typo")',
              "bood.figures.draw(cfg)")
    package = tmp_path / "pkg"
    (package / "bood").mkdir(parents=True)
    (package / "bood" / "figures.py").write_text(
        "def draw(cfg):\n    plots.savefig(None, 'bood_fig2_grid', cfg.profile)\n\n\n"
        "def unused():\n    plots.savefig(None, 'greg_orphan')\n")
    figures = fi.collect(folder, package)
    wrong = {(f.name, f.notebook) for f in fi.misnamed(figures)}
    assert wrong == {("bood_31_walks", "31_bood_walks"), ("310_typo", "31_bood_walks"),
                     ("bood_fig2_grid", "31_bood_walks")}          # a package figure counts for its caller
    monkeypatch.setattr(fi, "collect", lambda: figures)
    assert fi.main(["--misnamed"]) == 1
    assert "31_bood_walks: bood_31_walks.png (cell 1)" in capsys.readouterr().out
    monkeypatch.setattr(fi, "collect", lambda: [f for f in figures if f.name == "00_benchmark"])
    assert fi.main(["--misnamed"]) == 0
