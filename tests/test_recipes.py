"""Recipe cards: every card against what ``profiles.resolve`` gives its notebook, the departures table, the
command line, and the cards shown in the notebooks."""
from __future__ import annotations

import json
import re

import nbformat
import pytest

from ood_utils import paths, recipes
from ood_utils.recipes import __main__ as cli

CARDS = recipes.cards()
RUNS = [(name, profile) for name, card in CARDS.items() for profile in card.profiles]


@pytest.mark.parametrize("name, profile", RUNS)
def test_card_matches_what_the_kit_runs(name, profile):
    """A field whose kit value is neither the published value nor a listed departure fails, by name."""
    rows = recipes.check(name, profile)
    differ = [f"{r.field}: published {r.published!r} ({r.source}), kit runs {r.kit!r}"
              for r in rows if r.status == "differs"]
    assert not differ, f"card {name} under {profile} differs from the published recipe:\n  " + "\n  ".join(differ)


@pytest.mark.parametrize("name", list(CARDS))
def test_every_value_names_its_source(name):
    card = CARDS[name]
    assert card.fields and len({f.name for f in card.fields}) == len(card.fields)
    for f in card.fields:
        assert f.source.strip(), f"{name}.{f.name} has no source"
    assert card.notebooks and all(re.fullmatch(r"\d\d", n) for n in card.notebooks)


def test_departures_are_real_and_point_at_fields():
    """Each departure names a field of a card and a kit value other than the published one, under a
    profile the card is run with; and that value is what the kit runs now (no stale entries)."""
    for d in recipes.departures():
        card = recipes.get_card(d.card)
        published = card.field(d.field).value
        assert not recipes.same(d.kit, published), f"{d.card}.{d.field}: departure equals the published value"
        assert d.reason.strip() and set(d.profiles) <= set(card.profiles), d
        for profile in d.profiles:
            row = next(r for r in recipes.check(card, profile) if r.field == d.field)
            assert row.status == "departure", f"{d.card}.{d.field} under {profile}: kit runs {row.kit!r}, not {d.kit!r}"


def test_a_changed_value_is_caught(monkeypatch):
    """The check reads the profiles: change a value there and the card reports that field."""
    from ood_utils import profiles

    monkeypatch.setitem(profiles.TRACK_DEFAULTS["bood"], "step_size", {"mini": 0.015, "quick": 0.015, "paper": 0.02})
    row = next(r for r in recipes.check("bood_synthesis", "paper") if r.field == "step_size")
    assert row.status == "differs" and row.kit == 0.02 and row.published == 0.015


def test_same_compares_recipe_values():
    assert recipes.same(0.1, 0.1 + 1e-17) and recipes.same([1, 2], (1, 2)) and recipes.same({"a": 1.0}, {"a": 1})
    assert not recipes.same(True, 1) and not recipes.same(None, 2000) and not recipes.same((5,), (5, 6))


def test_smoke_mode_does_not_leak_into_cards(monkeypatch):
    monkeypatch.setenv("OOD_KIT_SMOKE", "1")
    row = next(r for r in recipes.check("bood_synthesis", "paper") if r.field == "sd_steps")
    assert row.kit == 50


def test_cards_follow_the_notebook_parameters():
    assert [c.name for c in recipes.cards_for("12")] == ["greg_table5"]
    assert [c.name for c in recipes.cards_for("12_greg_plus_sampling", {"id_datasets": ["imagenet10"]})] == ["greg_table3"]
    assert [c.name for c in recipes.cards_for("32", {"id_datasets": ["imagenet100"]}, "paper")] == ["bood_table2"]
    assert "bood_table2" not in [c.name for c in recipes.cards_for("32", profile="quick")]
    assert [c.name for c in recipes.cards_for("21", {"preset": "openood"})] == ["mme_openood"]
    assert recipes.cards_for("90") == [] and recipes.cards_for("00") == []


def test_command_line_prints_text_and_json(capsys):
    assert cli.main(["--profile", "paper", "--card", "greg_table5"]) == 0
    text = capsys.readouterr().out
    assert "greg_table5" in text and "source: GReg Sec. 5" in text
    assert cli.main(["--profile", "quick", "--json"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert {c["card"] for c in cards} == set(CARDS)
    assert all(f["source"] and f["status"] in ("as published", "departure", "differs", "documented")
               for c in cards for f in c["fields"])
    assert cli.main(["--card", "nope"]) == 2
    assert "valid:" in capsys.readouterr().err


def test_readme_lists_every_departure():
    readme = (paths.REPO_ROOT / "README.md").read_text()
    for table in (recipes.departures_markdown(), recipes.choices_markdown()):
        assert table in readme, "README's tables are out of date: paste `python -m ood_utils.recipes --departures`"


def _notebooks_with_cards():
    return sorted(p for p in paths.notebooks_dir().glob("[0-9][0-9]_*.ipynb")
                  if any(p.name[:2] in c.notebooks for c in CARDS.values()))


@pytest.mark.parametrize("nb", _notebooks_with_cards(), ids=lambda p: p.stem)
def test_each_notebook_shows_its_card_where_it_runs_at_other_scales(nb):
    cells = nbformat.read(nb, as_version=4).cells
    heads = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and "Running at other scales" in c.source]
    assert heads, f"{nb.name} has no 'Running at other scales' section"
    section = cells[heads[0] + 1:]
    end = next((i for i, c in enumerate(section) if c.cell_type == "markdown" and c.source.startswith("## ")),
               len(section))
    assert any(c.cell_type == "code" and "recipes.card_frame" in c.source for c in section[:end]), nb.name
