"""Where the kit keeps things.

Every path is derived from the repository root, which is found from this package's location, so a notebook
executed by papermill (cwd = caller) and by nbval (cwd = notebook folder) reads and writes the same files.
Each folder can be moved with an environment variable, e.g. ``OOD_KIT_DATA=/datasets`` on a GPU box.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

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


NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"


def find_notebooks(folder: Path | str | None = None) -> list[Path]:
    """The kit's notebooks ``NN_<topic>.ipynb`` (in ``folder``, default :func:`notebooks_dir`), in numeric
    order (``00_...`` first)."""
    folder = Path(folder) if folder is not None else notebooks_dir()
    return sorted(folder.glob(NOTEBOOK_GLOB), key=lambda p: p.name)


# ----------------------------------------------------------------------------------------------------------
# Atomic writes: every file the kit writes (checkpoints, caches, figures, records, manifests) goes through
# here, so an interrupted run leaves the old file or the new one, never half of one.
# ----------------------------------------------------------------------------------------------------------

def _process_umask() -> int:
    mask = os.umask(0)  # the only portable way to read the umask is to set it and put it back
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_process_umask()  # what a plain open() would give a new file


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write the file to. When the block ends without an error,
    the file is flushed to disk and renamed over ``path`` in one step; on an error it is removed and
    ``path`` is left as it was. The finished file gets the permissions of a plain ``open()`` (a bare
    temporary file would be private to its owner, unreadable for the other users of a shared GPU box)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        with open(tmp, "r+b") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON with sorted keys (the same content gives the same file, so a committed
    one diffs cleanly), atomically; values JSON does not know, such as paths, are written as strings."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())
