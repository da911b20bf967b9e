"""``python -m ood_utils.recipes [--profile paper] [--card NAME ...] [--json] [--departures]``: print the
recipe cards, each field with its source and what the kit runs under the profile."""
from __future__ import annotations

import argparse
import json
import sys

from .. import profiles
from . import as_json, cards, choices_markdown, departures_markdown, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ood_utils.recipes", description=__doc__)
    parser.add_argument("--profile", default="paper", choices=profiles.PROFILES)
    parser.add_argument("--card", nargs="+", metavar="NAME", help=f"cards to print (default: all): {', '.join(cards())}")
    parser.add_argument("--json", action="store_true", help="JSON instead of text")
    parser.add_argument("--departures", action="store_true", help="the Markdown tables of the deliberate "
                        "departures and of the card's choices where paper and public code differ")
    args = parser.parse_args(argv)
    unknown = [n for n in args.card or () if n not in cards()]
    if unknown:
        print(f"error: unknown card(s) {', '.join(unknown)}; valid: {', '.join(cards())}", file=sys.stderr)
        return 2
    if args.departures:
        print(departures_markdown() + "\n\nWhere paper and public code differ, the cards follow:\n\n"
              + choices_markdown())
    elif args.json:
        print(json.dumps(as_json(args.profile, args.card), indent=1, default=str))
    else:
        print(render(args.profile, args.card))
    return 0


if __name__ == "__main__":
    sys.exit(main())
