"""When a finished notebook may be skipped: only when nothing it depends on changed.

A notebook's result depends on four inputs, recorded in the manifest when it finishes:

- ``source``: its cells' types and sources (saving outputs in Jupyter is not an edit);
- ``parameters``: the values injected by papermill (``profile`` and any ``-p``);
- ``ood_utils``: every ``.py`` / ``.csv`` / ``.json`` file of the package (a fix in a detector re-runs the
  notebooks, which then re-use or rebuild their caches as those decide);
- ``versions``: Python and the installed versions of the kit's pinned dependencies;
- ``results``, only for a notebook whose metadata says ``"ood_kit": {"reads_results": true}`` (the summary):
  the result records and claims the other notebooks saved for the profile. It is compared just before the
  notebook's turn, so a summary re-runs after any notebook before it re-ran.

:func:`decide` compares them with the current ones and says why a notebook runs or is skipped.
"""
from __future__ import annotations

import hashlib
import json
import platform
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import paths
from .notebooks import read

PACKAGE_DIR = Path(__file__).resolve().parent.parent
PACKAGE_SUFFIXES = (".py", ".csv", ".json")
#: input -> the reason given when it changed, in the order reasons are listed
REASONS = {"source": "source changed", "parameters": "parameters changed", "ood_utils": "ood_utils changed",
           "versions": "versions changed", "results": "results of other notebooks changed"}
DONE = "finished, nothing changed"


def source_hash(path: Path) -> str:
    """Hash of the cells' types and sources: saving outputs in Jupyter does not invalidate a finished run."""
    cells = [(cell.cell_type, cell.source) for cell in read(path).cells]
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()[:16]


def package_hash(package: Path | None = None) -> str:
    """Hash over the package's ``.py`` / ``.csv`` / ``.json`` files: their paths and contents, in path order."""
    root = Path(package) if package is not None else PACKAGE_DIR
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.suffix in PACKAGE_SUFFIXES and p.is_file()
                   and "__pycache__" not in p.parts and not p.name.startswith("."))
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


_PIN = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*==")


@lru_cache(maxsize=None)
def pinned_requirements() -> tuple[str, ...]:
    """Names of the dependencies pinned with ``==`` in ``pyproject.toml`` (or, for an installed kit without
    the source tree, in the package's metadata)."""
    pyproject = paths.REPO_ROOT / "pyproject.toml"
    if pyproject.exists():
        import tomllib

        requirements = tomllib.loads(pyproject.read_text()).get("project", {}).get("dependencies", [])
    else:
        try:
            requirements = [r for r in metadata.requires("ood-utils") or [] if "extra ==" not in r]
        except metadata.PackageNotFoundError:
            requirements = []
    return tuple(m.group(1) for r in requirements if (m := _PIN.match(r)))


def installed_versions() -> dict[str, str | None]:
    """Python's version and the installed version of every pinned dependency (None: not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in pinned_requirements():
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def reads_results(notebook: Path) -> bool:
    """Whether a notebook's output depends on the other notebooks' records (its metadata says so)."""
    return bool(read(notebook).metadata.get("ood_kit", {}).get("reads_results", False))


def results_hash(profile: str) -> str:
    """Hash over the result records and claims of ``profile`` (``runs/<profile>/results/**/*.csv``)."""
    root = paths.runs_dir(profile) / "results"
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.csv")) if root.is_dir() else []:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def current_inputs(source: str, params: dict[str, Any], package: str, versions: dict,
                   results: str | None = None) -> dict[str, Any]:
    """The inputs of one notebook run, as stored in its manifest entry (``results`` only for a notebook that
    reads the others' records)."""
    inputs = {"source": source, "parameters": params, "ood_utils": package, "versions": versions}
    if results is not None:
        inputs["results"] = results
    return inputs


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _version_changes(old: Any, new: dict) -> str:
    """``torch 2.14.1 -> 2.15.0`` for the first changed packages (old manifests may lack the dict)."""
    if not isinstance(old, dict):
        return ""
    changed = [f"{k} {old.get(k)} -> {new.get(k)}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    more = f", +{len(changed) - 3} more" if len(changed) > 3 else ""
    return f" ({', '.join(changed[:3])}{more})" if changed else ""


@dataclass(frozen=True)
class Decision:
    """Whether a notebook runs, and why (``reason`` is what ``--list`` and the run's log print)."""

    run: bool
    reason: str


def decide(entry: dict | None, inputs: dict[str, Any], output: Path, force: bool = False) -> Decision:
    """Run unless the last run finished, its executed copy exists and every input is unchanged."""
    if force:
        return Decision(True, "forced (--force)")
    if not entry:
        return Decision(True, "not run yet")
    status = entry.get("status")
    if status == "failed":
        return Decision(True, "last run failed")
    if status != "ok":
        return Decision(True, f"last run did not finish ({status})")
    if not Path(output).exists():
        return Decision(True, "executed copy missing")
    recorded = entry.get("inputs") or {}
    changed = [key for key in REASONS if key in inputs and not _same(recorded.get(key), inputs[key])]
    if not changed:
        return Decision(False, DONE)
    reasons = [REASONS[key] + (_version_changes(recorded.get(key), inputs[key]) if key == "versions" else "")
               for key in changed]
    return Decision(True, ", ".join(reasons))
