"""The rehearsal of the paper profiles: one notebook per track under ``quick``, on stand-in data, in smoke mode.

The full rehearsal (every notebook, ``quick`` and ``paper``, plus the ImageNet variants) is ``make rehearse``;
this runs the part that fits in a test session: a few minutes on a 2-core CPU.
"""
from __future__ import annotations

import os

import pytest

from data_prep import rehearse, standins
from ood_utils import paths
from ood_utils.run import find_notebooks

# One notebook per track, the first that exists: the one whose quick branch trains or scores the most.
TRACK_NOTEBOOKS = {"mme": ("21", "20"), "greg": ("11",), "bood": ("32",)}


def _notebook_of(track: str):
    for number in TRACK_NOTEBOOKS[track]:
        found = rehearse.matching(find_notebooks(), [f"{number}_*"])
        if found:
            return found[0]
    return None


@pytest.fixture(scope="module")
def standin_root(tmp_path_factory):
    return standins.build(tmp_path_factory.mktemp("rehearsal") / "data", say=lambda _: None)


@pytest.mark.parametrize("track", list(TRACK_NOTEBOOKS))
def test_a_notebook_of_each_track_runs_under_quick_on_standins(track, standin_root, tmp_path):
    nb = _notebook_of(track)
    if nb is None:
        pytest.skip(f"no notebook {' or '.join(TRACK_NOTEBOOKS[track])} of the {track} track in "
                    f"{paths.notebooks_dir()}: nothing of it to rehearse yet")
    rows = rehearse.rehearse(["quick"], [nb.stem], "cpu", root=standin_root, out=tmp_path, say=lambda _: None)
    assert [(r.notebook, r.status) for r in rows] == [(nb.stem, "ok")], rows[0].note
    assert (tmp_path / "runs" / "quick" / "default" / nb.name).exists()        # the executed copy
    assert "| quick | " + nb.stem in (tmp_path / "rehearsal.md").read_text()


def test_plan_covers_every_notebook_and_profile_and_adds_variants_on_request():
    notebooks = find_notebooks()
    runs = rehearse.plan(["quick", "paper"], None, "cpu", variants=False)
    assert [(p, nb) for p, nb, *_ in runs] == [(p, nb) for p in ("quick", "paper") for nb in notebooks]
    assert all(params == {"device": "cpu"} for _, _, params, _, _ in runs)
    with_variants = rehearse.plan(["quick", "paper"], None, "cpu", variants=True)
    extra = [r for r in with_variants if r[3]]
    reachable = [v for v in rehearse.VARIANTS for _ in rehearse.matching(notebooks, v.only)]
    assert len(extra) == len(reachable) > 0          # each variant once, under its own profile
    for profile, nb, params, label, ckpt in extra:
        variant = next(v for v in rehearse.VARIANTS if v.label == label)
        assert profile == variant.profile == "paper"
        assert params == {"device": "cpu", **variant.params} and ckpt == variant.checkpoint
    with pytest.raises(ValueError, match="the variants run under paper"):
        rehearse.plan(["quick"], None, "cpu", variants=True)


def test_bad_requests_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="valid: quick, paper"):
        rehearse.rehearse(["mini"], out=tmp_path)
    with pytest.raises(ValueError, match="valid: cpu, cuda"):
        rehearse.rehearse(["quick"], device="tpu", out=tmp_path)
    assert not (tmp_path / "runs").exists()


def test_environment_is_private_and_restored(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_KIT_RUNS", "/somewhere/else")
    monkeypatch.delenv("OOD_KIT_DATA", raising=False)
    with rehearse.rehearsal_env(tmp_path / "data", tmp_path / "out"):
        assert os.environ["OOD_KIT_SMOKE"] == "1" and paths.data_dir() == tmp_path / "data"
        assert paths.runs_dir() == tmp_path / "out" / "runs"
    assert os.environ["OOD_KIT_RUNS"] == "/somewhere/else" and "OOD_KIT_DATA" not in os.environ


def test_time_table_is_written(tmp_path):
    rows = [rehearse.Row("quick", "21_mme_ensemble", "", "ok", 12.5),
            rehearse.Row("paper", "21_mme_ensemble", "MME ImageNet-1K, ViT-B/16", "failed", 3.0, "cell 4: boom")]
    rehearse.write_table(rows, tmp_path)
    csv_text = (tmp_path / "rehearsal.csv").read_text()
    assert "quick,21_mme_ensemble,,ok,12.5," in csv_text and "cell 4: boom" in csv_text
    assert "2 runs, 1 failed, 16 s in all" in (tmp_path / "rehearsal.md").read_text()


def test_a_variant_parameter_the_notebook_lacks_fails_the_run_instead_of_running_the_default(tmp_path):
    nb = paths.REPO_ROOT / "tests" / "fixtures" / "00_hello.ipynb"
    row = rehearse.run_one(nb, "quick", {"device": "cpu", "id_datasets": ["imagenet10"]}, tmp_path, "a variant",
                           required=frozenset({"id_datasets"}))
    assert row.status == "failed" and "defines no parameter id_datasets" in row.note
    assert not (tmp_path / "runs").exists()                      # nothing was executed


def test_each_planned_run_names_its_recipe_card_without_running_anything():
    """The card printed next to each run follows the notebook, the profile and a variant's parameters."""
    runs = rehearse.plan(["quick", "paper"], None, "cpu", variants=True)
    cards = {(p, nb.stem[:2], label): rehearse.card_summary(nb, p, params) for p, nb, params, label, _ in runs}
    assert cards[("paper", "12", "")].startswith("greg_table5 (Table 5 ")
    assert cards[("paper", "12", "GReg ImageNet-10")].startswith("greg_table3 (Table 3")
    assert cards[("paper", "32", "BOOD ImageNet-100")].startswith("bood_table2")
    assert cards[("quick", "21", "")].startswith("mme_table1") and cards[("paper", "00", "")] == "no card"
    assert all(" as published, " in c for k, c in cards.items() if k[1] not in ("00", "90")), cards


def test_time_table_shows_the_card_next_to_the_time(tmp_path):
    row = rehearse.Row("paper", "12_greg_plus_sampling", "", "ok", 30.0)
    row.card = rehearse.card_summary("12_greg_plus_sampling", "paper", {"device": "cpu"})
    rehearse.write_table([row], tmp_path)
    line = next(l for l in (tmp_path / "rehearsal.md").read_text().splitlines() if l.startswith("| paper | 12_"))
    assert "| 30.0 | greg_table5 (Table 5 " in line
    assert "greg_table5" in (tmp_path / "rehearsal.csv").read_text()
