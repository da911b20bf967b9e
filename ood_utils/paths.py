"""Where the kit keeps things.

Every path is derived from the repository root, which is found from this package's location, so a notebook
executed by papermill (cwd = caller) and by nbval (cwd = notebook folder) reads and writes the same files.
Each folder can be moved with an environment variable, e.g. ``OOD_KIT_DATA=/datasets`` on a GPU box.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

_ENV = {
    "data": "OOD_KIT_DATA",      # real benchmarks (downloaded by data_prep)
    "cache": "OOD_KIT_CACHE",    # checkpoints, extracted features, embedded-benchmark arrays
    "runs": "OOD_KIT_RUNS",      # executed notebooks, logs, manifests, result CSVs
    "figures": "OOD_KIT_FIGURES",
}


def _dir(kind: str, *parts: str, create: bool = True) -> Path:
    base = Path(os.environ.get(_ENV[kind], REPO_ROOT / kind)).expanduser()
    path = base.joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir(*parts: str, create: bool = False) -> Path:
    """Root of the real datasets (``data/`` or ``$OOD_KIT_DATA``)."""
    return _dir("data", *parts, create=create)


def cache_dir(*parts: str) -> Path:
    """Cache of everything the kit can rebuild: checkpoints, features, arrays."""
    return _dir("cache", *parts)


def runs_dir(*parts: str) -> Path:
    """Executed notebooks, logs, manifests and result records, one folder per profile."""
    return _dir("runs", *parts)


def figures_dir(profile: str) -> Path:
    """Figures written by runs, ``figures/<profile>/``."""
    return _dir("figures", profile)


def notebooks_dir() -> Path:
    return REPO_ROOT / "notebooks"
