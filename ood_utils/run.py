"""Run the whole kit with papermill: ``python -m ood_utils.run --profile mini``.

Every notebook ``notebooks/NN_<paper>_<topic>.ipynb`` is executed in numeric order with the Python of the
running interpreter, in the notebook's own folder (the same working directory nbval uses), with the
parameters ``profile=P`` plus any ``-p key value`` overrides. For each notebook the runner writes

    runs/<profile>/<name>.ipynb        the executed copy (outputs included)
    runs/<profile>/logs/<name>.log     everything the notebook printed
    runs/<profile>/manifest.json       git sha, package versions, device, parameters, seconds, status

and stops at the first failing notebook, naming the cell that failed. A second run resumes: a notebook that
already finished with the same parameters and an unchanged source is skipped (``--force`` re-runs it).
Changes inside ``ood_utils`` are not tracked here; the caches of the module itself handle those, and
``--force`` re-executes the notebooks.

    python -m ood_utils.run --list
    python -m ood_utils.run --profile quick --only 11 12 -p seed 1 -p device cuda:1
"""
from __future__ import annotations

import argparse
import ast
import fnmatch
import hashlib
import json
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import paths, profiles

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
KERNEL_NAME = "python3"
MANIFEST = "manifest.json"


class RunError(ValueError):
    """The request cannot be run (unknown parameter, no matching notebook, ...). Raised before any work."""


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


# ----------------------------------------------------------------------------------------------- notebooks

def find_notebooks(notebooks_dir: Path | str | None = None) -> list[Path]:
    """The kit's notebooks, in numeric order (``00_...`` first)."""
    folder = Path(notebooks_dir) if notebooks_dir is not None else paths.notebooks_dir()
    return sorted(folder.glob(NOTEBOOK_GLOB), key=lambda p: p.name)


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


def _read(path: Path):
    import nbformat

    return nbformat.read(str(path), as_version=4)


def parameters_of(path: Path) -> dict[str, str]:
    """Names assigned in the notebook's ``parameters`` cell, with the source text of their default.

    Read with ``ast`` rather than executed, so checking ``-p`` keys starts no kernel.
    """
    names: dict[str, str] = {}
    for cell in _read(path).cells:
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


def source_hash(path: Path) -> str:
    """Hash of the cells' types and sources: saving outputs in Jupyter does not invalidate a finished run."""
    cells = [(cell.cell_type, cell.source) for cell in _read(path).cells]
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()[:16]


def parse_value(text: str) -> Any:
    """``-p`` values are Python literals when they parse (``3``, ``0.1``, ``None``, ``['svhn']``), else strings."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _check_params(profile: str, params: dict[str, Any], defined: dict[str, set[str]]) -> None:
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
        "device": _device_name(),
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


def _is_done(entry: dict | None, params: dict, digest: str, output: Path) -> bool:
    return (entry is not None and entry.get("status") == "ok" and entry.get("source_sha256") == digest
            and json.dumps(entry.get("parameters"), sort_keys=True, default=str)
            == json.dumps(params, sort_keys=True, default=str)
            and output.exists())


# ------------------------------------------------------------------------------------------------- execute

def _kernel_manager_class(stderr=None):
    """A kernel manager whose ``python3`` kernel is always this interpreter, its stderr sent to ``stderr``.

    Jupyter resolves kernel names through kernelspec folders, and a user-level ``python3`` spec can point at
    another Python. The kit's notebooks must import the ``ood_utils`` installed next to the runner, so the
    runner builds the spec from ipykernel (``sys.executable -m ipykernel_launcher``), as nbval's
    ``--nbval-current-env`` does. The kernel process's own stderr (C-level warnings, crash messages) goes to
    the notebook's log instead of the console.
    """
    from ipykernel.kernelspec import RESOURCES, get_kernel_dict
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    class ThisPythonSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            if kernel_name == KERNEL_NAME:
                return KernelSpec(resource_dir=RESOURCES, **get_kernel_dict())
            return super().get_kernel_spec(kernel_name)

    class ThisPythonKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            kwargs.setdefault("kernel_spec_manager", ThisPythonSpecs())
            super().__init__(**kwargs)

        async def start_kernel(self, **kwargs):
            if stderr is not None:
                kwargs.setdefault("stderr", stderr)
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
        cells = [c for c in _read(output).cells
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


def _execute(src: Path, output: Path, log: Path, params: dict, progress: bool, timeout: int | None) -> None:
    import papermill as pm

    log.write_text(f"# {src.name}  parameters={params}  started={_now()}\n")
    with open(log, "a") as f:  # append mode: the kernel process writes to the same file
        pm.execute_notebook(
            str(src), str(output), parameters=params, kernel_name=KERNEL_NAME, language="python",
            cwd=str(src.parent),
            progress_bar=progress, stdout_file=f, stderr_file=f, request_save_on_cell_execute=True,
            execution_timeout=timeout, kernel_manager_class=_kernel_manager_class(stderr=f),
        )


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def run_notebooks(profile: str, only: Iterable[str] | None = None, params: dict[str, Any] | None = None,
                  force: bool = False, notebooks_dir: Path | str | None = None,
                  out_dir: Path | str | None = None, progress: bool = False,
                  cell_timeout: int | None = None) -> list[NotebookRun]:
    """Execute the selected notebooks in order; return one :class:`NotebookRun` per notebook.

    Every check (profile, ``only``, parameter names and values) happens before the first kernel starts.
    Raises :class:`NotebookFailed` at the first failing notebook (after recording it in the manifest).
    """
    profiles.check_profile(profile)
    params = dict(params or {})
    chosen = select(find_notebooks(notebooks_dir), only)
    if not chosen:
        folder = notebooks_dir or paths.notebooks_dir()
        raise RunError(f"no notebooks matching {NOTEBOOK_GLOB} in {folder}")
    defined = {nb.name: set(parameters_of(nb)) for nb in chosen}
    _check_params(profile, params, defined)

    out = Path(out_dir) if out_dir is not None else paths.runs_dir(profile)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(out)
    manifest.update(profile=profile, updated=_now(), environment=environment())
    manifest.setdefault("created", manifest["updated"])
    entries: dict[str, dict] = manifest["notebooks"]
    sha = manifest["environment"]["git_sha"]

    runs: list[NotebookRun] = []
    for i, nb in enumerate(chosen, 1):
        name = nb.stem
        nb_params = {"profile": profile, **{k: v for k, v in params.items() if k in defined[nb.name]}}
        digest = source_hash(nb)
        output, log = out / nb.name, out / "logs" / f"{name}.log"
        prefix = f"[{i}/{len(chosen)}] {name}"
        if not force and _is_done(entries.get(name), nb_params, digest, output):
            print(f"{prefix}: done before with the same parameters, skipped (--force re-runs it)", flush=True)
            runs.append(NotebookRun(name, "skipped", 0.0, output, log))
            continue

        print(f"{prefix}: running {nb_params}", flush=True)
        entry = {"status": "running", "parameters": nb_params, "source_sha256": digest, "git_sha": sha,
                 "started": _now(), "seconds": None, "output": str(output), "log": str(log)}
        entries[name] = entry
        _save(out, manifest)
        start = time.perf_counter()
        try:
            _execute(nb, output, log, nb_params, progress, cell_timeout)
        except KeyboardInterrupt:  # Ctrl-C: the manifest says so, and the next run starts this notebook again
            entry.update(status="interrupted", seconds=round(time.perf_counter() - start, 2), finished=_now())
            _save(out, manifest)
            raise
        except Exception as err:  # papermill's execution error, a dead kernel, a timeout
            seconds = time.perf_counter() - start
            index, line, ename, evalue = _failing_cell(output, err)
            entry.update(status="failed", seconds=round(seconds, 2), finished=_now(),
                         error={"cell": index, "line": line, "ename": ename, "evalue": evalue})
            _save(out, manifest)
            runs.append(NotebookRun(name, "failed", seconds, output, log))
            with open(log, "a") as f:
                f.write(f"\n{_ANSI.sub('', str(err))}\n"
                        f"# FAILED after {seconds:.1f} s in cell {index}: {ename}: {evalue}\n")
            raise NotebookFailed(name, index, line, ename, evalue, log, runs) from err
        seconds = time.perf_counter() - start
        entry.update(status="ok", seconds=round(seconds, 2), finished=_now())
        _save(out, manifest)
        with open(log, "a") as f:
            f.write(f"\n# ok in {seconds:.1f} s\n")
        print(f"{prefix}: ok in {seconds:.1f} s", flush=True)
        runs.append(NotebookRun(name, "ok", seconds, output, log))
    return runs


# ------------------------------------------------------------------------------------------------- summary

def _results_summary(profile: str, out: Path) -> str | None:
    """Count the result records the notebooks saved and write them to one CSV (if ``ood_utils.results`` exists)."""
    try:
        from . import results
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


def list_notebooks(profile: str, notebooks_dir: Path | None, out_dir: Path | None) -> None:
    """Print every notebook, the parameters it accepts and its last status for this profile."""
    out = Path(out_dir) if out_dir is not None else paths.runs_dir(profile)
    entries = load_manifest(out)["notebooks"] if (out / MANIFEST).exists() else {}
    for nb in find_notebooks(notebooks_dir):
        entry = entries.get(nb.stem, {})
        status = entry.get("status", "not run")
        if entry.get("seconds") is not None:
            status += f" ({entry['seconds']:.1f} s)"
        print(f"{nb.stem:<32} {status:<18} parameters: {', '.join(parameters_of(nb)) or '(none)'}")


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


DESCRIPTION = """Execute the kit's notebooks in numeric order with papermill. Executed copies, logs and a manifest
go to runs/<profile>/; the run stops at the first failing notebook and names its cell. Notebooks that
already finished with the same parameters and source are skipped unless --force."""

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
    parser.add_argument("--list", action="store_true", help="list the notebooks, their parameters and status")
    parser.add_argument("--cell-timeout", type=int, default=None, metavar="S",
                        help="fail a cell that runs longer than S seconds (default: no limit)")
    parser.add_argument("--notebooks-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 success, 1 a notebook failed, 2 a bad request (nothing was run)."""
    parser = build_parser()
    args = parser.parse_args(_split_key_value(sys.argv[1:] if argv is None else argv))
    try:
        profiles.check_profile(args.profile)
        if args.list:
            list_notebooks(args.profile, args.notebooks_dir, args.out_dir)
            return 0
        runs = run_notebooks(args.profile, only=args.only, params=_parse_params(args.params), force=args.force,
                             notebooks_dir=args.notebooks_dir, out_dir=args.out_dir, progress=True,
                             cell_timeout=args.cell_timeout)
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


if __name__ == "__main__":
    sys.exit(main())
