"""Test session setup: smoke mode and private folders, for the unit tests and for every notebook kernel.

``python -m pytest`` collects ``tests/`` and ``notebooks/`` (see ``[tool.pytest.ini_options]``); nbval
executes each notebook in a kernel that inherits this process's environment, so the variables set here
reach the notebooks too:

- ``OOD_KIT_SMOKE=1``: every profile shrinks to seconds (1 epoch, a few hundred samples).
- ``OOD_KIT_RUNS`` and ``OOD_KIT_FIGURES``: a temporary folder of this session, so tests never overwrite
  a user's executed notebooks, result records or figures.
- ``OOD_KIT_CACHE``: a temporary folder as well, so a test never reads or writes a user's checkpoints and
  features, and always exercises the build-from-scratch path. Smoke-mode artefacts are small and quick to
  rebuild. To reuse them across sessions (faster local iteration) point ``OOD_KIT_TEST_CACHE`` at a folder
  of your choice; it is used as the cache and kept.
- ``OOD_KIT_DATA`` is left alone: real datasets are only read, and the ``mini`` profile needs none.

The temporary folder is removed at the end of the session (set ``OOD_KIT_TEST_KEEP=1`` to keep it).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# The runner's fixture notebooks (one fails on purpose) are run by tests/test_run.py, not by nbval.
collect_ignore = ["fixtures"]

FIXTURES = Path(__file__).parent / "fixtures"

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="ood-kit-tests-"))


def _isolate_environment() -> None:
    """Set the variables at import time: before any test runs and before nbval starts a kernel."""
    os.environ["OOD_KIT_SMOKE"] = "1"
    os.environ["OOD_KIT_RUNS"] = str(_SESSION_DIR / "runs")
    os.environ["OOD_KIT_FIGURES"] = str(_SESSION_DIR / "figures")
    os.environ["OOD_KIT_CACHE"] = os.environ.get("OOD_KIT_TEST_CACHE") or str(_SESSION_DIR / "cache")


_isolate_environment()


def pytest_report_header(config):
    return f"ood-kit: smoke mode, runs/figures/cache under {_SESSION_DIR} (cache: {os.environ['OOD_KIT_CACHE']})"


def pytest_unconfigure(config):
    if os.environ.get("OOD_KIT_TEST_KEEP", "") in ("", "0"):
        shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    """Mark nbval's cells ``notebook`` (``-m "not notebook"`` runs the unit tests alone) and remember which
    notebooks nbval collected, before ``-k`` deselects any, for test_notebooks.py."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebook)
            _COLLECTED_NOTEBOOKS.add(item.path.name)


_COLLECTED_NOTEBOOKS: set[str] = set()


@pytest.fixture
def collected_notebooks() -> set[str]:
    """File names of the notebooks that nbval collected in this session."""
    return _COLLECTED_NOTEBOOKS


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
