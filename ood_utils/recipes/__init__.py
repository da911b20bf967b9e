"""Recipe cards: the published recipe behind each paper table or figure the kit reproduces.

A card lists what a GPU run under ``quick`` / ``paper`` should train and evaluate to match a published
number: datasets and OOD sets (and which are averaged), network and initial weights, epochs, optimiser,
schedule, learning rate, weight decay, momentum / Nesterov, batch sizes, loss weights and margins, sampler
pool, generation settings, precision and metric definitions. Every value names its source (a section or
table of the paper, or the authors' public code); where paper and code differ, the card says which it
follows and why (the published numbers came from the code unless the notes say otherwise).

Each field also knows how to read what the kit will actually run (from ``profiles.resolve`` through the
notebook's own config function, or from the code that builds the objective); :func:`check` compares the
two. A difference is either a deliberate departure listed by :func:`departures` (with its reason; the
README's table is generated from it) or a mismatch, which the tests report by field name.

    python -m ood_utils.recipes [--profile paper] [--card greg_table5] [--json]
"""
from __future__ import annotations

import os
from contextlib import contextmanager

from .. import profiles
from . import bood_cards, greg_cards, mme_cards, text
from .card import Card, Check, Departure, Field, same


@contextmanager
def no_smoke():
    """Cards describe real runs: resolve the profiles without the tests' smoke scaling."""
    saved = os.environ.pop(profiles.SMOKE_ENV, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[profiles.SMOKE_ENV] = saved


def _registry() -> dict[str, Card]:
    cards = [*greg_cards.CARDS, *mme_cards.CARDS, *bood_cards.CARDS]
    names = [c.name for c in cards]
    if len(set(names)) != len(names):
        raise RuntimeError(f"duplicate card names: {names}")
    return {c.name: c for c in cards}


def cards() -> dict[str, Card]:
    """Every card, by name."""
    return _registry()


def departures() -> tuple[Departure, ...]:
    """Every deliberate departure of the kit from a card (the README's table)."""
    return (*greg_cards.DEPARTURES, *mme_cards.DEPARTURES, *bood_cards.DEPARTURES)


def get_card(name: str) -> Card:
    table = cards()
    if name not in table:
        raise KeyError(f"unknown card {name!r}; valid: {', '.join(table)}")
    return table[name]


def cards_for(notebook: str, params: dict | None = None, profile: str | None = None) -> list[Card]:
    """The cards a notebook (number or stem, "12" or "12_greg_plus_sampling") runs with ``params``: a card
    whose selector the parameters match, else the notebook's default cards (empty selector); with
    ``profile``, only the cards that profile reproduces."""
    number = str(notebook).split("_")[0]
    params = params or {}
    mine = [c for c in cards().values() if number in c.notebooks]
    chosen = [c for c in mine if c.selector and all(same(params.get(k), v) for k, v in c.selector.items())]
    chosen = chosen or [c for c in mine if not c.selector]
    return [c for c in chosen if profile is None or profile in c.profiles]


def _departure(card: str, name: str, profile: str, kit: Any) -> Departure | None:
    for d in departures():
        if d.card == card and d.field == name and profile in d.profiles and same(d.kit, kit):
            return d
    return None


def check(card: Card | str, profile: str = "paper") -> list[Check]:
    """Every field of ``card`` against what the kit runs under ``profile``."""
    card = get_card(card) if isinstance(card, str) else card
    profiles.check_profile(profile)
    with no_smoke():
        ctx = card.context(profile)
        out = []
        for f in card.fields:
            if f.kit is None:
                out.append(Check(card.name, f.name, profile, f.value, None, "documented", f.source, f.note))
                continue
            try:
                kit = f.kit(ctx)
            except Exception as err:          # a value the kit cannot produce is a difference, said plainly
                kit = f"<error: {type(err).__name__}: {err}>"
            if same(kit, f.value):
                status, note = "as published", f.note
            elif (d := _departure(card.name, f.name, profile, kit)) is not None:
                status, note = "departure", d.reason
            else:
                status, note = "differs", f.note
            out.append(Check(card.name, f.name, profile, f.value, kit, status, f.source, note))
    return out


def differences(profile: str = "paper", names=None) -> list[Check]:
    """The fields whose kit value is neither the published one nor a listed departure."""
    chosen = names or list(cards())
    return [c for name in chosen for c in check(name, profile) if c.status == "differs"]


def summary(card: Card | str, profile: str) -> str:
    """One line: ``greg_table5 (Table 5): 14 as published, 2 departures, 1 differs (schedule)``."""
    rows = check(card, profile)
    name = rows[0].card if rows else str(card)
    counts = {s: sum(r.status == s for r in rows) for s in ("as published", "departure", "differs", "documented")}
    differ = [r.field for r in rows if r.status == "differs"]
    n_dep = counts["departure"]
    text = (f"{name} ({get_card(name).target}): {counts['as published']} as published, "
            f"{n_dep} departure{'' if n_dep == 1 else 's'}, {counts['documented']} documented")
    return text + (f", {len(differ)} DIFFER ({', '.join(differ)})" if differ else "")


def render(profile: str = "paper", names=None) -> str:
    """Every chosen card as text: each field's published value, source, and what the kit runs."""
    chosen = [get_card(n) for n in (names or cards())]
    return "\n\n".join(text.card_text(c, check(c, profile), profile) for c in chosen)


def card_frame(card: Card | str, profile: str = "paper"):
    """One card as a DataFrame (what a notebook shows)."""
    return text.frame(check(card, profile))


def as_json(profile: str = "paper", names=None) -> list[dict]:
    """Every chosen card as JSON-ready dicts."""
    chosen = [get_card(n) for n in (names or cards())]
    return [text.card_dict(c, check(c, profile), profile) for c in chosen]


def departures_markdown() -> str:
    """The README table of every deliberate departure."""
    return text.departures_table(departures(), cards())


def choices_markdown() -> str:
    """The README table of the values where paper and public code differ, and which one each card follows."""
    return text.choices_table(cards())


__all__ = ["Card", "Check", "Departure", "Field", "as_json", "card_frame", "cards", "cards_for", "check", "choices_markdown",
           "departures", "departures_markdown", "differences", "get_card", "render", "same", "summary"]
