"""How often a notebook of widget cells blocks under papermill's own engine and under the runner's.

    .venv/bin/python benchmarks/bench_runner.py [--runs 15] [--cells 10] [--timeout 90]

Every notebook of the kit ends with an ``ipywidgets.interact``. papermill's engine (nbclient) mimics the
browser's ``Output`` widget: it copies each output into the widget's state and sends that state back to
the kernel on the shell socket, while it waits on the same socket for the cell's reply; now and then the
wait never ends although the kernel is idle. The runner's engine (``ood_utils.run.execute``) leaves the
mimic out. This script executes one notebook of ``--cells`` widget cells ``--runs`` times with each
engine, alternating, each run in its own process under ``--timeout`` seconds, and counts the runs that
did not finish. A hang is a chance event: the counts are rates, not a guarantee.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]

SETUP = '''import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

names = [f"class {i}" for i in range(100)]

def show(step=0):
    fig, (a, b) = plt.subplots(1, 2, figsize=(6.5, 2.6))
    a.imshow(np.random.rand(256, 256, 3))
    b.bar(range(100), np.random.rand(100))
    b.set_xticks(range(100), names, rotation=90, fontsize=7)
    print("frame", step)
    plt.show()'''
WIDGET = "widgets.interact(show, step=widgets.IntSlider(min=0, max=4, value=1));"

RUN = '''import sys
import papermill as pm
from ood_utils.run.execute import ENGINE_NAME, KERNEL_NAME, _kernel_manager_class, _register_engine
engine = sys.argv[3]
if engine == "runner":
    _register_engine()
pm.execute_notebook(sys.argv[1], sys.argv[2], kernel_name=KERNEL_NAME, progress_bar=False,
                    engine_name=ENGINE_NAME if engine == "runner" else None,
                    kernel_manager_class=_kernel_manager_class())'''


def write_notebook(path: Path, cells: int) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SETUP)] + [nbformat.v4.new_code_cell(WIDGET) for _ in range(cells)]
    nbformat.write(nb, str(path))


def one_run(notebook: Path, engine: str, timeout: float) -> tuple[bool, float]:
    """(finished, seconds) of one execution in a fresh process."""
    start = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-c", RUN, str(notebook), str(notebook.with_suffix(".out.ipynb")), engine],
                       cwd=ROOT, timeout=timeout, check=True, capture_output=True)
        return True, time.perf_counter() - start
    except subprocess.TimeoutExpired:
        return False, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--cells", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args(argv)
    engines = ("papermill", "runner")
    finished = {e: [] for e in engines}
    with tempfile.TemporaryDirectory() as tmp:
        notebook = Path(tmp) / "widgets.ipynb"
        write_notebook(notebook, args.cells)
        for i in range(args.runs):
            for engine in engines:
                ok, seconds = one_run(notebook, engine, args.timeout)
                finished[engine].append(seconds if ok else None)
                print(f"run {i + 1:2d} {engine:9s} {'ok' if ok else 'BLOCKED'} {seconds:5.1f} s", flush=True)
    print(f"\n{args.runs} runs of {args.cells} widget cells per engine, timeout {args.timeout:.0f} s\n")
    print("| engine | blocked runs | median s of the finished runs |\n|---|---|---|")
    for engine in engines:
        done = sorted(s for s in finished[engine] if s is not None)
        median = f"{done[len(done) // 2]:.1f}" if done else "-"
        print(f"| {engine} | {args.runs - len(done)} of {args.runs} | {median} |")


if __name__ == "__main__":
    main()
