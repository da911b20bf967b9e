"""The command line: ``python -m ood_utils.run``. See the package docstring."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from .. import paths, profiles
from .execute import MANIFEST, NotebookFailed, NotebookRun, load_manifest, plan, run_notebooks
from .notebooks import RunError, parameters_of, parse_value

# ------------------------------------------------------------------------------------------------- summary

def _results_summary(profile: str, out: Path) -> str | None:
    """Count the result records the notebooks saved and write them to one CSV (if ``ood_utils.results`` exists)."""
    try:
        from .. import results
    except ImportError:
        return None
    try:
        frame = results.load_all(profile)
    except Exception as err:  # the run itself succeeded; a broken results folder should not hide that
        return f"results: could not be read ({type(err).__name__}: {err})"
    if frame is None or len(frame) == 0:
        return None
    csv = out / "results_summary.csv"
    with paths.atomic_path(csv) as tmp:
        frame.to_csv(tmp, index=False)
    return f"results: {len(frame)} records -> {csv}"


def print_summary(runs: Sequence[NotebookRun], profile: str, out: Path) -> None:
    print(f"\nprofile {profile}: {out}")
    for run in runs:
        seconds = "" if run.status == "skipped" else f"{run.seconds:8.1f} s"
        print(f"  {run.name:<32} {run.status:<8} {seconds}")
    total = sum(run.seconds for run in runs)
    print(f"  {'total':<32} {'':<8} {total:8.1f} s")
    line = _results_summary(profile, out)
    if line:
        print(line)
    index = out / "html" / "index.html"
    if index.exists():
        print(f"HTML: {index}")



def list_notebooks(profile: str, notebooks_dir: Path | None, out_dir: Path | None, only=None,
                   params: dict[str, Any] | None = None, force: bool = False, package_dir: Path | None = None) -> None:
    """Print every notebook, whether a run would execute or skip it and why, its last status and parameters."""
    out = Path(out_dir) if out_dir is not None else paths.runs_dir(profile)
    entries = load_manifest(out)["notebooks"] if (out / MANIFEST).exists() else {}
    print(f"profile {profile}: {out}")
    print(f"  {'notebook':<28} {'next run':<9} {'last run':<18} why")
    for step in plan(profile, only, params, force, notebooks_dir, out_dir, package_dir):
        entry = entries.get(step.name, {})
        last = entry.get("status", "not run")
        if entry.get("seconds") is not None:
            last += f" ({entry['seconds']:.1f} s)"
        action = "run" if step.decision.run else "skip"
        print(f"  {step.name:<28} {action:<9} {last:<18} {step.decision.reason}")
        print(f"  {'':<28} parameters: {', '.join(parameters_of(step.notebook)) or '(none)'}")


# ----------------------------------------------------------------------------------------------------- CLI

def _split_key_value(argv: Sequence[str]) -> list[str]:
    """Accept ``-p epochs=3`` as well as papermill's ``-p epochs 3``."""
    out: list[str] = []
    args = list(argv)
    for i, token in enumerate(args):
        previous = args[i - 1] if i else ""
        if previous in ("-p", "--parameter") and "=" in token and token.split("=", 1)[0].isidentifier():
            out.extend(token.split("=", 1))
        else:
            out.append(token)
    return out


def _parse_params(pairs: Sequence[Sequence[str]] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in pairs or []:
        if not key.isidentifier():
            raise RunError(f"-p takes a parameter name and a value (-p epochs 3), got {key!r}")
        params[key] = parse_value(value)
    return params



DESCRIPTION = """Execute the kit's notebooks in numeric order with papermill. Executed copies, logs, a manifest and
HTML renderings (html/index.html) go to runs/<profile>/; the run stops at the first failing notebook and
names its cell. A finished notebook is skipped unless its source, its parameters, the ood_utils package or
the installed versions of the pinned dependencies changed (for the summary: also the other notebooks'
results); --list says which. --force re-runs finished notebooks."""

EXAMPLES = """examples:
  python -m ood_utils.run --list
  python -m ood_utils.run --profile mini
  python -m ood_utils.run --profile quick --only 11 12 -p seed 1 -p device cuda:1
  python -m ood_utils.run --profile paper --only mme --force
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ood_utils.run", description=DESCRIPTION, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="mini", help=f"one of {', '.join(profiles.PROFILES)} (default mini)")
    parser.add_argument("--only", nargs="+", action="extend", metavar="PATTERN",
                        help="run only notebooks whose name contains PATTERN (or matches it as a glob)")
    parser.add_argument("--force", action="store_true", help="re-run notebooks that already finished")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("KEY", "VALUE"), dest="params",
                        help="override a parameter of the notebooks that define it; VALUE is a Python literal "
                             "or a string (repeatable)")
    parser.add_argument("--list", action="store_true",
                        help="list the notebooks: would each run or be skipped, and why; last status; parameters")
    parser.add_argument("--no-html", action="store_true", help="skip the HTML renderings and index page")
    parser.add_argument("--cell-timeout", type=int, default=None, metavar="S",
                        help="fail a cell that runs longer than S seconds (default: no limit)")
    parser.add_argument("--notebooks-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--package-dir", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 success, 1 a notebook failed, 2 a bad request (nothing was run)."""
    parser = build_parser()
    args = parser.parse_args(_split_key_value(sys.argv[1:] if argv is None else argv))
    try:
        profiles.check_profile(args.profile)
        params = _parse_params(args.params)
        if args.list:
            list_notebooks(args.profile, args.notebooks_dir, args.out_dir, args.only, params, args.force,
                           args.package_dir)
            return 0
        runs = run_notebooks(args.profile, only=args.only, params=params, force=args.force,
                             notebooks_dir=args.notebooks_dir, out_dir=args.out_dir, progress=True,
                             cell_timeout=args.cell_timeout, html=not args.no_html, package_dir=args.package_dir)
    except ValueError as err:  # RunError, profiles.ConfigError
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NotebookFailed as err:
        out = args.out_dir or paths.runs_dir(args.profile)
        print_summary(err.runs, args.profile, Path(out))
        print(f"\nerror: {err}", file=sys.stderr)
        return 1
    print_summary(runs, args.profile, Path(args.out_dir or paths.runs_dir(args.profile)))
    return 0
