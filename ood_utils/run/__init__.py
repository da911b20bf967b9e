"""Run the whole kit with papermill: ``python -m ood_utils.run --profile mini``.

Every notebook ``notebooks/NN_<paper>_<topic>.ipynb`` is executed in numeric order with the Python of the
running interpreter, in the notebook's own folder (the same working directory nbval uses), with the
parameters ``profile=P`` plus any ``-p key value`` overrides. For each notebook the runner writes

    runs/<profile>/<name>.ipynb        the executed copy (outputs included)
    runs/<profile>/logs/<name>.log     everything the notebook printed
    runs/<profile>/manifest.json       git sha, package versions, device, parameters, inputs, seconds, status
    runs/<profile>/html/<name>.html    a rendering that opens in any browser, and html/index.html

and stops at the first failing notebook, naming the cell that failed. A second run resumes: a finished
notebook is skipped only when nothing it depends on changed: its source, its parameters, the ``ood_utils``
package (a hash over its .py/.csv/.json files) and the installed versions of the pinned dependencies, plus,
for a notebook that reads the others' results (the summary), those results. ``--list`` says, per notebook, whether it would run and why; ``--force`` re-runs finished notebooks.

    python -m ood_utils.run --list
    python -m ood_utils.run --profile quick --only 11 12 -p seed 1 -p device cuda:1

The parts: :mod:`.notebooks` (finding, selecting, parameters), :mod:`.freshness` (what a run depends on,
run or skip), :mod:`.execute` (papermill, manifest, failures), :mod:`.html` (renderings, index page),
:mod:`.cli` (the command line and the summary it prints).
"""
from .cli import _parse_params, _results_summary, _split_key_value, build_parser, list_notebooks, main, print_summary
from .execute import (KERNEL_NAME, MANIFEST, NotebookFailed, NotebookRun, Step, _failing_cell,
                      _kernel_manager_class, environment, load_manifest, plan, run_notebooks)
from .freshness import Decision, decide, installed_versions, package_hash, source_hash
from .notebooks import (NOTEBOOK_GLOB, RunError, find_notebooks, parameters_of, parameters_of_source, parse_value,
                        select)

__all__ = ["KERNEL_NAME", "MANIFEST", "NOTEBOOK_GLOB", "Decision", "NotebookFailed", "NotebookRun", "RunError",
           "Step", "build_parser", "decide", "environment", "find_notebooks", "installed_versions",
           "list_notebooks", "load_manifest", "main", "package_hash", "parameters_of", "parameters_of_source",
           "parse_value", "plan", "print_summary", "run_notebooks", "select", "source_hash"]
