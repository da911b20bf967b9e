"""The kit's notebooks as the runner sees them: found by name, selected by pattern, parameters read without a
kernel, ``-p`` values parsed as Python literals."""
from __future__ import annotations

import ast
import fnmatch
from pathlib import Path
from typing import Any, Iterable, Sequence

from .. import profiles
from ..paths import NOTEBOOK_GLOB, find_notebooks  # noqa: F401  (the runner's names for them)


class RunError(ValueError):
    """The request cannot be run (unknown parameter, no matching notebook, ...). Raised before any work."""


def select(notebooks: Sequence[Path], only: Iterable[str] | None) -> list[Path]:
    """Notebooks matching any pattern: a glob (``1?_*``) or a plain substring of the name (``11``, ``mme``)."""
    patterns = list(only or [])
    if not patterns:
        return list(notebooks)

    def matches(nb: Path, pattern: str) -> bool:
        if any(ch in pattern for ch in "*?["):
            return fnmatch.fnmatch(nb.name, pattern) or fnmatch.fnmatch(nb.stem, pattern)
        return pattern in nb.name

    chosen = [nb for nb in notebooks if any(matches(nb, p) for p in patterns)]
    if not chosen:
        names = ", ".join(nb.stem for nb in notebooks) or "(none)"
        raise RunError(f"--only {' '.join(patterns)} matches no notebook; notebooks: {names}")
    return chosen


def read(path: Path):
    import nbformat

    return nbformat.read(str(path), as_version=4)


def parameters_of(path: Path) -> dict[str, str]:
    """Names assigned in the notebook's ``parameters`` cell, with the source text of their default.

    Read with ``ast`` rather than executed, so checking ``-p`` keys starts no kernel.
    """
    names: dict[str, str] = {}
    for cell in read(path).cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            names.update(parameters_of_source(cell.source))
    return names


def parameters_of_source(source: str) -> dict[str, str]:
    """Top-level assignments of one cell: ``{"epochs": "None", ...}``."""
    names: dict[str, str] = {}
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else [])
        for target in targets:
            if isinstance(target, ast.Name):
                names[target.id] = ast.get_source_segment(source, node.value) or ""
    return names


def parse_value(text: str) -> Any:
    """``-p`` values are Python literals when they parse (``3``, ``0.1``, ``None``, ``['svhn']``), else strings."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def check_params(profile: str, params: dict[str, Any], defined: dict[str, set[str]]) -> None:
    """Reject a key that no selected notebook defines, and values that ``profiles`` would reject later."""
    if "profile" in params:
        raise RunError("set the profile with --profile, not -p profile")
    known = set().union(*defined.values()) if defined else set()
    unknown = sorted(set(params) - known)
    if unknown:
        raise RunError(f"unknown parameter(s) {', '.join(unknown)}: no selected notebook defines them; "
                       f"valid: {', '.join(sorted(known - {'profile'})) or '(none)'}")
    # Values of the shared parameters are checked by profiles.resolve now rather than notebooks later.
    for track in (None, *profiles.TRACK_DEFAULTS):
        table = profiles.defaults(profile, track)
        subset = {k: v for k, v in params.items() if k in table}
        if subset:
            try:
                profiles.resolve(profile, track, seed_now=False, **subset)
            except ImportError:  # a registry module is not importable here; the notebook will check
                pass


