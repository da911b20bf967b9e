"""How cards read: plain text for a terminal, a DataFrame for a notebook, JSON, the README's table.

Pure formatting of the checks :func:`ood_utils.recipes.check` computes; nothing here reads the kit.
"""
from __future__ import annotations

import textwrap
from typing import Any

MARK = {"as published": "=", "departure": "~", "differs": "!", "documented": " "}


def show(value: Any) -> str:
    """A value as a reader expects it: tuples without quotes, floats without trailing noise."""
    if isinstance(value, (list, tuple)):
        return ", ".join(show(v) for v in value) if value else "(none)"
    if isinstance(value, dict):
        return "; ".join(f"{k} {show(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return "None" if value is None else str(value)


def card_text(card, checks, profile: str) -> str:
    """A card as text: one line per field, its source and, where the kit runs something else, why."""
    head = f"{card.name} · {card.paper} {card.target} · notebook(s) {', '.join(card.notebooks)} · profile {profile}"
    lines = [head, "-" * min(len(head), 110)]
    width = max(len(c.field) for c in checks) if checks else 10
    for c in checks:
        kit = "" if c.status in ("as published", "documented") else f"   [kit: {show(c.kit)}: {c.status}]"
        lines.append(f"{MARK[c.status]} {c.field:<{width}}  {show(c.published)}{kit}")
        lines.append(textwrap.indent(textwrap.fill(f"source: {c.source}", 104), " " * (width + 4)))
        if c.note:
            lines.append(textwrap.indent(textwrap.fill(c.note, 104), " " * (width + 4)))
    lines.append("= as published   ~ deliberate departure (README)   ! differs from the published recipe")
    return "\n".join(lines)


def card_dict(card, checks, profile: str) -> dict:
    return {"card": card.name, "paper": card.paper, "target": card.target, "notebooks": list(card.notebooks),
            "profile": profile,
            "fields": [{"field": c.field, "published": c.published, "kit": c.kit, "status": c.status,
                        "source": c.source, "note": c.note} for c in checks]}


def frame(checks):
    import pandas as pd

    return pd.DataFrame({"field": [c.field for c in checks], "published": [show(c.published) for c in checks],
                         "source": [c.source for c in checks],
                         "kit": [show(c.kit) if c.kit is not None else "" for c in checks],
                         "status": [c.status for c in checks],
                         "why": [c.note for c in checks]})


def departures_table(departures, cards: dict) -> str:
    """Markdown: card, field, profiles, published value, kit value, reason."""
    lines = ["| card (target) | field | profiles | published | kit | why |", "|---|---|---|---|---|---|"]
    for d in departures:
        card = cards[d.card]
        published = card.field(d.field).value
        lines.append(f"| `{d.card}` ({card.target}) | {d.field} | {', '.join(d.profiles)} | {show(published)} | "
                     f"{show(d.kit)} | {d.reason} |")
    return "\n".join(lines)


def choices_table(cards: dict) -> str:
    """Markdown: every field where paper and public code differ (a field with a note) and the cards' choice,
    one row per choice with the cards that share it."""
    groups: dict[tuple, list[str]] = {}
    for card in cards.values():
        for f in card.fields:
            if f.note:
                groups.setdefault((f.name, show(f.value), f.source, f.note), []).append(card.name)
    lines = ["| cards | field | the cards follow | source | why |", "|---|---|---|---|---|"]
    for (name, value, source, note), names in groups.items():
        lines.append(f"| {', '.join(f'`{n}`' for n in names)} | {name} | {value} | {source} | {note} |")
    return "\n".join(lines)
