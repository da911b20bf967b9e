"""The notebook rules, and the check that nbval executes every notebook.

Rules for every ``notebooks/NN_<paper>_<topic>.ipynb`` in git:
- no outputs and no execution counts (strip them before committing). The version checked is the one staged
  in git (what a commit would record), so running a notebook in Jupyter and saving it does not fail the
  tests; outside a git checkout the file itself is checked;
- exactly one cell tagged ``parameters``, and it sets ``profile = "mini"``;
- papermill can read every parameter of that cell (``papermill --help-notebook`` lists them; an ``=`` inside
  a comment, as in ``epochs = None  # None = default``, hides the line from it);
- the name matches the runner's pattern, so ``python -m ood_utils.run`` and nbval see the same notebooks.

Execution itself is nbval's job: ``python -m pytest`` collects ``notebooks/`` with ``--nbval-lax`` (see
``[tool.pytest.ini_options]``), running each notebook top to bottom in smoke mode; a cell that raises
(including a failed ``assert``) fails its test. ``test_every_notebook_is_executed_by_nbval`` makes sure
that configuration is in place.
"""
from __future__ import annotations

import ast
import fnmatch
import json
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from ood_utils import paths, run

NOTEBOOKS = sorted(p for p in paths.notebooks_dir().glob("*.ipynb")) if paths.notebooks_dir().is_dir() else []


def _staged_text(path: Path) -> str:
    """The notebook as git's index holds it, or the file itself when it is not tracked (or git is absent)."""
    try:
        rel = path.resolve().relative_to(paths.REPO_ROOT)
        staged = subprocess.run(["git", "-C", str(paths.REPO_ROOT), "show", f":{rel.as_posix()}"],
                                capture_output=True, text=True, timeout=30)
        if staged.returncode == 0:
            return staged.stdout
    except (ValueError, OSError, subprocess.SubprocessError):
        pass
    return path.read_text()


def notebook_problems(path: Path) -> list[str]:
    """Every broken rule of one notebook, as readable sentences (empty list = clean)."""
    nb = nbformat.reads(_staged_text(path), as_version=4)
    problems = []
    if not fnmatch.fnmatch(path.name, run.NOTEBOOK_GLOB):
        problems.append(f"name does not match {run.NOTEBOOK_GLOB} (NN_<paper>_<topic>.ipynb)")
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {index} has outputs (strip them before committing)")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {index} has an execution count (strip it before committing)")
    if nb.metadata.get("kernelspec", {}).get("name") != run.KERNEL_NAME:
        problems.append(f"metadata.kernelspec.name must be {run.KERNEL_NAME!r} (JupyterLab then starts the kit's "
                        "kernel without asking)")
    tagged = [cell for cell in nb.cells if "parameters" in cell.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        problems.append(f"{len(tagged)} cells are tagged 'parameters'; exactly one must be")
    elif tagged[0].cell_type != "code":
        problems.append("the 'parameters' cell is not a code cell")
    else:
        if _assigned(tagged[0].source).get("profile") != "mini":
            problems.append("the 'parameters' cell must set profile = \"mini\"")
        hidden = sorted(set(run.parameters_of_source(tagged[0].source)) - _papermill_names(tagged[0]))
        if hidden:
            problems.append(f"papermill cannot read parameter(s) {', '.join(hidden)} of the 'parameters' cell "
                            "(an '=' inside a comment confuses it; reword the comment)")
    return problems


def _papermill_names(cell) -> set[str]:
    """The parameter names papermill's own parser finds (it reads the cell line by line with a regex)."""
    from papermill.translators import PythonTranslator

    return {parameter.name for parameter in PythonTranslator.inspect(cell)}


def _assigned(source: str) -> dict[str, object]:
    """Literal values assigned at the top level of a cell (non-literals are left out)."""
    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    try:
                        values[target.id] = ast.literal_eval(node.value)
                    except ValueError:
                        pass
    return values


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_follows_the_rules(path):
    problems = notebook_problems(path)
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


def test_rule_checker_catches_each_rule(tmp_path, fixtures_dir):
    assert notebook_problems(fixtures_dir / "10_steps.ipynb") == []
    nb = nbformat.read(str(fixtures_dir / "10_steps.ipynb"), as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="steps 1\n")]
    nb.cells[1].execution_count = 2
    nb.cells[0].source = 'profile = "quick"'
    path = tmp_path / "steps.ipynb"
    nbformat.write(nb, str(path))
    problems = "\n".join(notebook_problems(path))
    for expected in ("name does not match", "cell 1 has outputs", "cell 1 has an execution count",
                     'profile = "mini"'):
        assert expected in problems
    nb.cells[0].source = 'profile = "mini"\nepochs = None  # None = default'
    nbformat.write(nb, str(path))
    assert "papermill cannot read parameter(s) epochs" in "\n".join(notebook_problems(path))
    nb.cells[1].metadata["tags"] = ["parameters"]
    nbformat.write(nb, str(path))
    assert "2 cells are tagged 'parameters'" in "\n".join(notebook_problems(path))
    nb.metadata["kernelspec"]["name"] = "python3"
    nbformat.write(nb, str(path))
    assert "kernelspec.name must be 'ood-kit'" in "\n".join(notebook_problems(path))


def _selected(config, notebook: Path) -> bool:
    """Whether the paths given to pytest (or its testpaths) include this notebook."""
    root = Path(config.invocation_params.dir)
    for arg in config.args:
        target = (root / arg.split("::")[0]).resolve()
        if target == notebook.resolve() or target in notebook.resolve().parents:
            return True
    return False


def test_every_notebook_is_executed_by_nbval(request, collected_notebooks):
    if not NOTEBOOKS:
        pytest.skip(f"no notebooks in {paths.notebooks_dir()}")
    config = request.config
    assert config.getoption("nbval_lax", default=False), (
        "nbval is not enabled: [tool.pytest.ini_options] addopts needs --nbval-lax --nbval-current-env")
    assert config.getoption("nbval_current_env", default=False), (
        "notebooks must run in this environment's kernel: add --nbval-current-env to addopts")
    selected = [nb for nb in NOTEBOOKS if _selected(config, nb)]
    if not selected:
        pytest.skip("no notebook is part of this pytest run (run `python -m pytest` to include notebooks/)")
    missing = sorted(nb.name for nb in selected if nb.name not in collected_notebooks)
    assert not missing, f"nbval did not collect {missing}; check testpaths in [tool.pytest.ini_options]"


@pytest.mark.notebook
def test_notebooks_find_the_repository_from_any_working_directory(tmp_path, fixtures_dir, monkeypatch):
    """A notebook run from an unrelated folder still reads and writes the kit's folders (paths are absolute)."""
    import papermill as pm

    probe = tmp_path / "elsewhere" / "probe.ipynb"
    probe.parent.mkdir()
    shutil.copy(fixtures_dir / "paths_probe.ipynb", probe)
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    monkeypatch.chdir(unrelated)
    out = tmp_path / "probe_out.ipynb"
    pm.execute_notebook(str(probe), str(out), kernel_name=run.KERNEL_NAME, progress_bar=False,
                        kernel_manager_class=run._kernel_manager_class())  # no cwd: the caller's folder
    nb = nbformat.read(str(out), as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    seen = json.loads(text.strip().splitlines()[-1])
    assert Path(seen["cwd"]).resolve() == unrelated.resolve()
    assert Path(seen["repo_root"]) == paths.REPO_ROOT
    # the kernel inherited this session's private folders (set in conftest)
    assert Path(seen["runs"]) == paths.runs_dir("mini")
