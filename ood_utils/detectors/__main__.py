"""Print the detector table, or write it into a README between its markers.

    python -m ood_utils.detectors                     # the markdown table on stdout
    python -m ood_utils.detectors --readme README.md  # replace the table in README.md
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import describe_markdown, with_readme_table


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="the detector table (names, defaults, presets) as markdown")
    ap.add_argument("--readme", type=Path, help="rewrite the generated table inside this README")
    args = ap.parse_args(argv)
    if args.readme is None:
        print(describe_markdown())
        return
    args.readme.write_text(with_readme_table(args.readme.read_text()))
    print(f"updated the detector table in {args.readme}")


if __name__ == "__main__":
    main()
