"""Execute notebooks with papermill: kernel, manifest, resume, failures.

For each notebook the runner writes ``runs/<profile>/<name>.ipynb`` (the executed copy),
``runs/<profile>/logs/<name>.log`` (everything it printed) and its entry in ``runs/<profile>/manifest.json``
(status, seconds, parameters, the inputs :mod:`.freshness` compares), then stops at the first failing
notebook, naming the cell that failed.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from .. import paths, profiles
from . import freshness
from .notebooks import NOTEBOOK_GLOB, RunError, check_params, find_notebooks, parameters_of, read, select

#: the kit's kernel (``make setup`` installs it); the runner always maps it to this interpreter
KERNEL_NAME = "ood-kit"
MANIFEST = "manifest.json"


class NotebookFailed(RuntimeError):
    """A notebook raised. Carries the failing cell and the runs so far, so a caller can summarise them."""

    def __init__(self, name: str, cell_index: int | None, cell_line: str, ename: str, evalue: str,
                 log: Path, runs: list["NotebookRun"]):
        self.name, self.cell_index, self.cell_line = name, cell_index, cell_line
        self.ename, self.evalue, self.log, self.runs = ename, evalue, log, runs
        where = f" in cell {cell_index} (counting from 0): {cell_line!r}" if cell_index is not None else ""
        super().__init__(f"notebook {name} failed{where}: {ename}: {evalue}\n  log: {log}")


@dataclass
class NotebookRun:
    """Outcome of one notebook in this invocation: status is 'ok', 'skipped' (resumed) or 'failed'."""

    name: str
    status: str
    seconds: float
    output: Path
    log: Path


@dataclass
class Step:
    """One selected notebook before it runs: what it would be given and whether it runs (see ``plan``)."""

    notebook: Path
    params: dict[str, Any]
    inputs: dict[str, Any]
    decision: freshness.Decision
    output: Path
    log: Path

    @property
    def name(self) -> str:
        return self.notebook.stem


# --------------------------------------------------------------------------------------------- environment

def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(paths.REPO_ROOT), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(paths.REPO_ROOT), "status", "--porcelain", "--", "ood_utils",
                                "notebooks"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # not installed, or broken: the manifest says so instead of failing the run
        return None


def _device_name() -> str:
    try:
        import torch
    except ImportError:
        return "cpu"
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def environment() -> dict[str, Any]:
    """What a reader needs to trust (or re-create) a run."""
    return {
        "git_sha": _git_sha(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "papermill": _version("papermill"),
        "versions": freshness.installed_versions(),
        "device": _device_name(),
        "cpus": os.cpu_count(),
        "smoke": profiles.smoke_mode(),
    }


# ------------------------------------------------------------------------------------------------ manifest

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_manifest(out_dir: Path) -> dict[str, Any]:
    """The manifest of earlier runs, or an empty one (an unreadable file is reported and replaced)."""
    path = out_dir / MANIFEST
    if path.exists():
        try:
            manifest = json.loads(path.read_text())
            if isinstance(manifest.get("notebooks"), dict):
                return manifest
        except (OSError, ValueError, AttributeError):
            pass
        print(f"warning: {path} is unreadable; starting a new manifest", file=sys.stderr)
    return {"notebooks": {}}


def _save(out: Path, manifest: dict[str, Any]) -> None:
    manifest["updated"] = _now()
    paths.write_json(out / MANIFEST, manifest)


# ------------------------------------------------------------------------------------------------- execute

def _kernel_manager_class(stderr=None):
    """A kernel manager whose ``python3`` kernel is always this interpreter, its stderr sent to ``stderr``.

    Jupyter resolves kernel names through kernelspec folders, and a user-level ``python3`` (or an old
    ``ood-kit``) spec can point at another Python. The kit's notebooks must import the ``ood_utils`` installed next to the runner, so the
    runner builds the spec from ipykernel (``sys.executable -m ipykernel_launcher``), as nbval's
    ``--nbval-current-env`` does. The kernel process's own stderr (C-level warnings, crash messages) goes to
    the notebook's log instead of the console, and its progress bars are off.
    """
    from ipykernel.kernelspec import RESOURCES, get_kernel_dict
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    class ThisPythonSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            if kernel_name in (KERNEL_NAME, "python3"):
                return KernelSpec(resource_dir=RESOURCES, **get_kernel_dict())
            return super().get_kernel_spec(kernel_name)

    class ThisPythonKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            kwargs.setdefault("kernel_spec_manager", ThisPythonSpecs())
            super().__init__(**kwargs)

        async def start_kernel(self, **kwargs):
            if stderr is not None:
                kwargs.setdefault("stderr", stderr)
            # nobody watches a batch run's tqdm bars: kept in the executed notebook they read "0%" forever
            kwargs.setdefault("env", {**os.environ, "TQDM_DISABLE": "1"})
            return await super().start_kernel(**kwargs)

    return ThisPythonKernelManager


def _failing_cell(output: Path, err: BaseException) -> tuple[int | None, str, str, str]:
    """(index in the source notebook, first source line, exception name, message) of the failing cell.

    Papermill counts its injected-parameters cell; the index reported here is the one the user sees when
    opening the notebook, found by reading the executed copy and skipping papermill's own cells.
    """
    ename = getattr(err, "ename", type(err).__name__)
    evalue = (str(getattr(err, "evalue", err)).strip().splitlines() or [""])[0]
    try:
        cells = [c for c in read(output).cells
                 if not {"injected-parameters", "papermill-error-cell-tag"} & set(c.metadata.get("tags", []))]
    except Exception:
        cells = []
    for index, cell in enumerate(cells):
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            first = next((line for line in cell.source.splitlines() if line.strip()), "")
            return index, first.strip(), ename, evalue
    source = getattr(err, "source", "") or ""
    first = next((line for line in source.splitlines() if line.strip()), "")
    return (getattr(err, "cell_index", None) if first else None), first.strip(), ename, evalue


ENGINE_NAME = "ood-kit"


@functools.cache
def _register_engine() -> None:
    """Register the papermill engine the runner executes with: papermill's own, minus nbclient's stand-in
    for the ipywidgets ``Output`` widget.

    Every ``interact`` draws into an ``Output`` widget. nbclient mimics a browser for it: each output the
    kernel sends is copied into the widget's state and sent back to the kernel on the shell socket, the
    socket on which nbclient is at that moment waiting for the cell's reply. That send-while-waiting
    sometimes leaves the wait blocked after the kernel has finished (an open nbclient defect; here it
    stopped notebook 31 under ``paper`` at its widget cell). Without the stand-in nothing is sent during a
    cell, and the widget's first frame lands in the cell as an ordinary output, which every static
    rendering of the executed copy shows; in JupyterLab the widget works as before.
    """
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, logger, papermill_engines, remove_args

    class BatchClient(PapermillNotebookClient):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.widget_registry = {}      # widgets are still recorded; none is mimicked

    class BatchEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None, **kwargs):
            kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
            return BatchClient(nb_man, timeout=execution_timeout, startup_timeout=start_timeout,
                               kernel_name=kernel_name, log=logger, log_output=log_output,
                               stdout_file=stdout_file, stderr_file=stderr_file, **kwargs).execute()

    papermill_engines.register(ENGINE_NAME, BatchEngine)


def _execute(src: Path, output: Path, log: Path, params: dict, progress: bool, timeout: int | None) -> None:
    import papermill as pm

    _register_engine()
    log.write_text(f"# {src.name}  parameters={params}  started={_now()}\n")
    with open(log, "a") as f:  # append mode: the kernel process writes to the same file
        pm.execute_notebook(
            str(src), str(output), parameters=params, kernel_name=KERNEL_NAME, language="python",
            engine_name=ENGINE_NAME,
            cwd=str(src.parent),
            progress_bar=progress, stdout_file=f, stderr_file=f, request_save_on_cell_execute=True,
            execution_timeout=timeout, kernel_manager_class=_kernel_manager_class(stderr=f),
        )


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plan(profile: str, only: Iterable[str] | None = None, params: dict[str, Any] | None = None,
         force: bool = False, notebooks_dir: Path | str | None = None, out_dir: Path | str | None = None,
         package_dir: Path | None = None, entries: dict | None = None) -> list[Step]:
    """What a run would do, notebook by notebook, without starting a kernel. Every check (profile, ``only``,
    parameter names and values) happens here, before any work. ``entries``: the manifest's notebooks, when
    the caller has read it already."""
    profiles.check_profile(profile)
    params = dict(params or {})
    chosen = select(find_notebooks(notebooks_dir), only)
    if not chosen:
        raise RunError(f"no notebooks matching {NOTEBOOK_GLOB} in {notebooks_dir or paths.notebooks_dir()}")
    defined = {nb.name: set(parameters_of(nb)) for nb in chosen}
    check_params(profile, params, defined)
    out = Path(out_dir) if out_dir is not None else paths.runs_dir(profile)
    if entries is None:
        entries = load_manifest(out)["notebooks"] if (out / MANIFEST).exists() else {}
    package, versions = freshness.package_hash(package_dir), freshness.installed_versions()
    steps = []
    for nb in chosen:
        nb_params = {"profile": profile, **{k: v for k, v in params.items() if k in defined[nb.name]}}
        results = freshness.results_hash(profile) if freshness.reads_results(nb) else None
        inputs = freshness.current_inputs(freshness.source_hash(nb), nb_params, package, versions, results)
        output = out / nb.name
        decision = freshness.decide(entries.get(nb.stem), inputs, output, force)
        steps.append(Step(nb, nb_params, inputs, decision, output, out / "logs" / f"{nb.stem}.log"))
    return steps


def _refresh(step: Step, profile: str, entries: dict, force: bool) -> Step:
    """A notebook that reads the others' records decides at its turn: notebooks before it may have re-run."""
    if "results" not in step.inputs:
        return step
    inputs = {**step.inputs, "results": freshness.results_hash(profile)}
    step.inputs, step.decision = inputs, freshness.decide(entries.get(step.name), inputs, step.output, force)
    return step


def run_notebooks(profile: str, only: Iterable[str] | None = None, params: dict[str, Any] | None = None,
                  force: bool = False, notebooks_dir: Path | str | None = None,
                  out_dir: Path | str | None = None, progress: bool = False,
                  cell_timeout: int | None = None, html: bool = True,
                  package_dir: Path | None = None) -> list[NotebookRun]:
    """Execute the selected notebooks in order; return one :class:`NotebookRun` per notebook.

    A notebook is skipped when its last run finished and nothing it depends on changed (see
    :mod:`.freshness`). With ``html``, each executed notebook is also rendered to ``<out>/html/`` with an
    index page (see :mod:`.html`). Raises :class:`NotebookFailed` at the first failing notebook (after
    recording it in the manifest and rendering it).
    """
    profiles.check_profile(profile)  # before runs_dir(profile) creates a folder named after it
    out = Path(out_dir) if out_dir is not None else paths.runs_dir(profile)
    manifest = load_manifest(out)
    steps = plan(profile, only, params, force, notebooks_dir, out_dir, package_dir, manifest["notebooks"])
    (out / "logs").mkdir(parents=True, exist_ok=True)
    manifest.update(profile=profile, updated=_now(), environment=environment())
    manifest.setdefault("created", manifest["updated"])
    runs: list[NotebookRun] = []
    try:
        for i, step in enumerate(steps, 1):
            step = _refresh(step, profile, manifest["notebooks"], force)
            runs.append(_run_step(step, f"[{i}/{len(steps)}] {step.name}", manifest, out, progress, cell_timeout,
                                  runs))
    except NotebookFailed:  # the failed notebook's rendering shows where it stopped
        if html:
            _render(out, profile, manifest, runs, notebooks_dir)
        raise
    if html:
        _render(out, profile, manifest, runs, notebooks_dir)
    return runs


def _render(out: Path, profile: str, manifest: dict, runs: list[NotebookRun], notebooks_dir) -> None:
    from . import html as renderings

    renderings.update(out, profile, manifest, [r for r in runs if r.status != "skipped"], notebooks_dir)


def _run_step(step: Step, prefix: str, manifest: dict, out: Path, progress: bool, timeout: int | None,
              runs: list[NotebookRun]) -> NotebookRun:
    """Skip or execute one notebook, keeping its manifest entry up to date."""
    if not step.decision.run:
        print(f"{prefix}: skipped: {step.decision.reason} (--force re-runs it)", flush=True)
        return NotebookRun(step.name, "skipped", 0.0, step.output, step.log)
    print(f"{prefix}: running ({step.decision.reason}) {step.params}", flush=True)
    entry = {"status": "running", "parameters": step.params, "inputs": step.inputs, "reason": step.decision.reason,
             "git_sha": manifest["environment"]["git_sha"], "started": _now(), "seconds": None,
             "output": str(step.output), "log": str(step.log)}
    manifest["notebooks"][step.name] = entry
    _save(out, manifest)
    start = time.perf_counter()
    try:
        _execute(step.notebook, step.output, step.log, step.params, progress, timeout)
    except KeyboardInterrupt:  # Ctrl-C: the manifest says so, and the next run starts this notebook again
        entry.update(status="interrupted", seconds=round(time.perf_counter() - start, 2), finished=_now())
        _save(out, manifest)
        raise
    except Exception as err:  # papermill's execution error, a dead kernel, a timeout
        seconds = time.perf_counter() - start
        index, line, ename, evalue = _failing_cell(step.output, err)
        entry.update(status="failed", seconds=round(seconds, 2), finished=_now(),
                     error={"cell": index, "line": line, "ename": ename, "evalue": evalue})
        _save(out, manifest)
        runs.append(NotebookRun(step.name, "failed", seconds, step.output, step.log))
        with open(step.log, "a") as f:
            f.write(f"\n{_ANSI.sub('', str(err))}\n"
                    f"# FAILED after {seconds:.1f} s in cell {index}: {ename}: {evalue}\n")
        raise NotebookFailed(step.name, index, line, ename, evalue, step.log, list(runs)) from err
    seconds = time.perf_counter() - start
    entry.update(status="ok", seconds=round(seconds, 2), finished=_now())
    _save(out, manifest)
    with open(step.log, "a") as f:
        f.write(f"\n# ok in {seconds:.1f} s\n")
    print(f"{prefix}: ok in {seconds:.1f} s", flush=True)
    return NotebookRun(step.name, "ok", seconds, step.output, step.log)
