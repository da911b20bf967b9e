"""The notebook runner on the trivial fixture notebooks: order, outputs, manifest, resume (what a finished
notebook depends on), failures, bad input, HTML renderings, and the `make lab` command.

Each execution starts a kernel (about a second), so the tests share executions where they can. The
``ood_utils`` hash is taken over a small stand-in package (``package`` fixture): the real one may be edited
while the tests run, and a test changes its stand-in to see the decision flip.
"""
from __future__ import annotations

import json
import os
import shutil
import sys

import nbformat
import pytest

from ood_utils import run
from ood_utils.run import RunError, main, run_notebooks


def _notebooks(tmp_path, fixtures_dir, *names):
    """A notebooks folder holding copies of the named fixtures."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for name in names:
        shutil.copy(fixtures_dir / f"{name}.ipynb", folder)
    return folder


def _stream_text(path):
    nb = nbformat.read(str(path), as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def _all_outputs(path):
    nb = nbformat.read(str(path), as_version=4)
    return json.dumps([c.get("outputs", []) for c in nb.cells if c.cell_type == "code"])


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def _statuses(runs):
    return {r.name: r.status for r in runs}


@pytest.fixture
def package(tmp_path):
    """A stand-in for the ood_utils folder: what the runner hashes."""
    folder = tmp_path / "pkg"
    (folder / "tables").mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (folder / "metrics.py").write_text("def auroc(): return 1.0\n")
    (folder / "tables" / "greg.csv").write_text("paper,table\ngreg,1\n")
    return folder


@pytest.mark.notebook
def test_run_order_outputs_manifest_resume_and_force(tmp_path, fixtures_dir, package):
    folder = _notebooks(tmp_path, fixtures_dir, "10_steps", "00_hello")
    out = tmp_path / "runs"
    kw = dict(notebooks_dir=folder, out_dir=out, package_dir=package, html=False)

    runs = run_notebooks("mini", params={"steps": 3}, **kw)
    assert [r.name for r in runs] == ["00_hello", "10_steps"]  # numeric order, not copy order
    assert _statuses(runs) == {"00_hello": "ok", "10_steps": "ok"}

    # executed copies: parameters injected only where defined; kernel = this Python, cwd = notebook folder
    hello = _stream_text(out / "00_hello.ipynb")
    assert "hello mini 0" in hello
    assert f"cwd {folder}" in hello
    assert f"python {sys.executable}" in hello
    assert "steps 3 total 6" in _stream_text(out / "10_steps.ipynb")
    assert "bar-in-a-batch-run" not in _all_outputs(out / "00_hello.ipynb")   # progress bars are off
    assert "widget-frame 2" in hello     # an interact's first frame is a plain output of its cell
    assert "hello mini 0" in (out / "logs" / "00_hello.log").read_text()

    manifest = _manifest(out)
    assert list(manifest["notebooks"]) == ["00_hello", "10_steps"]
    assert manifest["notebooks"]["00_hello"]["parameters"] == {"profile": "mini"}
    assert manifest["notebooks"]["10_steps"]["parameters"] == {"profile": "mini", "steps": 3}
    assert all(e["status"] == "ok" and e["seconds"] >= 0 for e in manifest["notebooks"].values())
    env = manifest["environment"]
    assert {"git_sha", "python", "torch", "numpy", "papermill", "device"} <= set(env)
    assert env["python"] == f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"

    # resume: nothing changed -> nothing runs
    assert set(_statuses(run_notebooks("mini", params={"steps": 3}, **kw)).values()) == {"skipped"}
    # another parameter value re-runs only the notebook that defines it
    runs = run_notebooks("mini", params={"steps": 4}, **kw)
    assert _statuses(runs) == {"00_hello": "skipped", "10_steps": "ok"}
    assert "steps 4 total 8" in _stream_text(out / "10_steps.ipynb")

    # an edited source re-runs that notebook; saved outputs alone would not count as an edit
    nb = nbformat.read(str(folder / "00_hello.ipynb"), as_version=4)
    nb.cells[-1].source += '\nprint("edited")'
    nbformat.write(nb, str(folder / "00_hello.ipynb"))
    runs = run_notebooks("mini", params={"steps": 4}, **kw)
    assert _statuses(runs) == {"00_hello": "ok", "10_steps": "skipped"}

    # --force re-runs a finished notebook
    runs = run_notebooks("mini", only=["10"], params={"steps": 4}, force=True, **kw)
    assert _statuses(runs) == {"10_steps": "ok"}


@pytest.mark.notebook
def test_failing_notebook_stops_the_run_and_names_the_cell(tmp_path, fixtures_dir, capsys):
    folder = _notebooks(tmp_path, fixtures_dir, "05_fails", "10_steps")
    out = tmp_path / "runs"

    assert main(["--notebooks-dir", str(folder), "--out-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "notebook 05_fails failed in cell 3" in err
    assert 'raise ValueError("boom: bad input")' in err
    assert "ValueError: boom: bad input" in err

    manifest = _manifest(out)
    assert list(manifest["notebooks"]) == ["05_fails"]  # 10_steps never started
    entry = manifest["notebooks"]["05_fails"]
    assert entry["status"] == "failed"
    assert entry["error"] == {"cell": 3, "line": 'raise ValueError("boom: bad input")',
                              "ename": "ValueError", "evalue": "boom: bad input"}
    assert "Traceback" in (out / "logs" / "05_fails.log").read_text()
    assert not (out / "10_steps.ipynb").exists()
    # the rendering shows where it stopped; the index names the cell
    if run.html.available():
        assert "boom: bad input" in (out / "html" / "05_fails.html").read_text()
        index = (out / "html" / "index.html").read_text()
        assert "failed" in index and "cell 3: ValueError: boom: bad input" in index


@pytest.mark.parametrize("argv, message", [
    (["--profile", "huge"], "unknown profile 'huge'; valid: mini, quick, paper"),
    (["-p", "stepz", "3"], "unknown parameter(s) stepz"),
    (["-p", "profile", "quick"], "--profile"),
    (["-p", "seed", "1.5"], "parameter 'seed' must be int"),
    (["-p", "3", "x"], "-p takes a parameter name and a value"),
    (["--only", "zz"], "matches no notebook; notebooks: 00_hello, 10_steps"),
])
def test_bad_requests_fail_before_any_work(tmp_path, fixtures_dir, capsys, argv, message):
    folder = _notebooks(tmp_path, fixtures_dir, "00_hello", "10_steps")
    out = tmp_path / "runs"
    assert main([*argv, "--notebooks-dir", str(folder), "--out-dir", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_unknown_key_lists_the_valid_ones(tmp_path, fixtures_dir):
    folder = _notebooks(tmp_path, fixtures_dir, "00_hello", "10_steps")
    with pytest.raises(RunError, match="valid: seed, steps"):
        run_notebooks("mini", params={"stepz": 1}, notebooks_dir=folder, out_dir=tmp_path / "runs")
    # a key defined only by a notebook that --only left out is unknown too
    with pytest.raises(RunError, match="unknown parameter"):
        run_notebooks("mini", only=["00"], params={"steps": 1}, notebooks_dir=folder, out_dir=tmp_path / "runs")


def test_select_patterns(tmp_path):
    names = [tmp_path / n for n in ("00_start_here.ipynb", "11_greg_finetune.ipynb", "21_mme_ensemble.ipynb")]
    assert [p.stem for p in run.select(names, ["greg", "21"])] == ["11_greg_finetune", "21_mme_ensemble"]
    assert [p.stem for p in run.select(names, ["1?_*"])] == ["11_greg_finetune"]
    assert run.select(names, None) == names


def test_parse_values_as_literals_or_strings():
    assert run.parse_value("3") == 3
    assert run.parse_value("0.1") == 0.1
    assert run.parse_value("None") is None
    assert run.parse_value("['svhn', 'dtd']") == ["svhn", "dtd"]
    assert run.parse_value("cuda:1") == "cuda:1"
    argv = run._split_key_value(["-p", "epochs=2", "-p", "device", "cpu", "-p", "name", "a=b"])
    assert argv == ["-p", "epochs", "2", "-p", "device", "cpu", "-p", "name", "a=b"]
    assert run._parse_params([("epochs", "2"), ("device", "cpu")]) == {"epochs": 2, "device": "cpu"}


def test_parameters_cell_is_read_without_a_kernel(fixtures_dir):
    assert run.parameters_of(fixtures_dir / "10_steps.ipynb") == {"profile": '"mini"', "steps": "1"}


def test_list_shows_notebooks_parameters_and_status(tmp_path, fixtures_dir, capsys):
    folder = _notebooks(tmp_path, fixtures_dir, "00_hello", "10_steps")
    assert main(["--list", "--notebooks-dir", str(folder), "--out-dir", str(tmp_path / "runs")]) == 0
    listing = capsys.readouterr().out
    assert "00_hello" in listing and "not run" in listing and "profile, steps" in listing


def test_unreadable_manifest_is_replaced(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text("{not json")
    assert run.load_manifest(tmp_path) == {"notebooks": {}}
    assert "unreadable" in capsys.readouterr().err


def test_summary_counts_result_records(tmp_path, monkeypatch, capsys):
    import types

    import pandas as pd

    import ood_utils

    stub = types.SimpleNamespace(load_all=lambda profile: pd.DataFrame({"metric": ["auroc", "fpr95"],
                                                                         "value": [0.9, 0.3]}))
    monkeypatch.setitem(sys.modules, "ood_utils.results", stub)
    monkeypatch.setattr(ood_utils, "results", stub, raising=False)
    runs = [run.NotebookRun("00_hello", "ok", 1.5, tmp_path / "a", tmp_path / "b")]
    run.print_summary(runs, "mini", tmp_path)
    printed = capsys.readouterr().out
    assert "00_hello" in printed and "1.5 s" in printed
    assert f"results: 2 records -> {tmp_path / 'results_summary.csv'}" in printed
    assert len(pd.read_csv(tmp_path / "results_summary.csv")) == 2


# ------------------------------------------------------------------------------------ what a run depends on

def _decisions(folder, out, package, **kw):
    return {s.name: s.decision.reason for s in run.plan("mini", notebooks_dir=folder, out_dir=out,
                                                         package_dir=package, **kw)}


@pytest.mark.notebook
def test_each_input_of_a_finished_notebook_flips_the_decision(tmp_path, fixtures_dir, package, monkeypatch,
                                                               capsys):
    folder = _notebooks(tmp_path, fixtures_dir, "00_hello")
    out = tmp_path / "runs"
    assert _decisions(folder, out, package) == {"00_hello": "not run yet"}
    run_notebooks("mini", notebooks_dir=folder, out_dir=out, package_dir=package, html=False)
    entry = _manifest(out)["notebooks"]["00_hello"]
    assert set(entry["inputs"]) == {"source", "parameters", "ood_utils", "versions"}
    assert entry["inputs"]["versions"]["torch"] == run.installed_versions()["torch"]
    assert _decisions(folder, out, package) == {"00_hello": "finished, nothing changed"}

    # parameters
    assert _decisions(folder, out, package, params={"seed": 1}) == {"00_hello": "parameters changed"}
    # ood_utils: a .py, a .csv, a new .json; other files and caches do not count
    (package / "notes.txt").write_text("not code")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "metrics.cpython-311.pyc").write_bytes(b"\0")
    assert _decisions(folder, out, package) == {"00_hello": "finished, nothing changed"}
    for edit in (lambda: (package / "metrics.py").write_text("def auroc(): return 0.5\n"),
                 lambda: (package / "tables" / "greg.csv").write_text("paper,table\ngreg,2\n"),
                 lambda: (package / "registry.json").write_text("{}")):
        edit()
        assert _decisions(folder, out, package) == {"00_hello": "ood_utils changed"}
    changed_package = tmp_path / "pkg_before"
    shutil.copytree(package, changed_package)
    # versions of the pinned dependencies (here: a different torch)
    real = run.installed_versions()
    monkeypatch.setattr(run.freshness, "installed_versions", lambda: {**real, "torch": "9.9.9"})
    assert _decisions(folder, out, changed_package) == {
        "00_hello": f"ood_utils changed, versions changed (torch {real['torch']} -> 9.9.9)"}
    monkeypatch.setattr(run.freshness, "installed_versions", lambda: real)
    # the source (outputs saved in Jupyter are not an edit)
    nb = nbformat.read(str(folder / "00_hello.ipynb"), as_version=4)
    nb.cells[-1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="saved output\n")]
    nbformat.write(nb, str(folder / "00_hello.ipynb"))
    assert "source changed" not in _decisions(folder, out, package)["00_hello"]
    nb.cells[-1].source += '\nprint("edited")'
    nbformat.write(nb, str(folder / "00_hello.ipynb"))
    assert _decisions(folder, out, package) == {"00_hello": "source changed, ood_utils changed"}
    assert _decisions(folder, out, package, force=True) == {"00_hello": "forced (--force)"}

    # --list prints the same reasons; a real run follows them, and then nothing is left to do
    assert main(["--list", "--notebooks-dir", str(folder), "--out-dir", str(out), "--package-dir", str(package),
                 "-p", "seed", "1"]) == 0
    listing = capsys.readouterr().out
    assert "00_hello" in listing and "run" in listing and "source changed, parameters changed, ood_utils changed" in listing
    runs = run_notebooks("mini", notebooks_dir=folder, out_dir=out, package_dir=package, html=False)
    assert _statuses(runs) == {"00_hello": "ok"}
    assert _decisions(folder, out, package) == {"00_hello": "finished, nothing changed"}
    (out / "00_hello.ipynb").unlink()
    assert _decisions(folder, out, package) == {"00_hello": "executed copy missing"}


def test_decide_on_unfinished_and_old_entries(tmp_path):
    inputs = run.freshness.current_inputs("abc", {"profile": "mini"}, "p1", {"torch": "1"})
    output = tmp_path / "x.ipynb"
    output.write_text("{}")
    assert run.decide({"status": "failed", "inputs": inputs}, inputs, output) == run.Decision(True, "last run failed")
    assert run.decide({"status": "running", "inputs": inputs}, inputs, output).reason == "last run did not finish (running)"
    assert run.decide({"status": "ok", "inputs": inputs}, inputs, output) == run.Decision(False, "finished, nothing changed")
    # an entry written before inputs were recorded runs again, saying what it cannot vouch for
    assert run.decide({"status": "ok"}, inputs, output).reason == (
        "source changed, parameters changed, ood_utils changed, versions changed")


def test_package_hash_covers_code_and_tables_only(package):
    before = run.package_hash(package)
    assert before == run.package_hash(package)
    (package / "README.md").write_text("docs")
    assert run.package_hash(package) == before
    (package / "metrics.py").rename(package / "metrics2.py")  # a renamed module is a change
    assert run.package_hash(package) != before
    assert run.freshness.pinned_requirements()  # read from pyproject.toml
    assert "torch" in run.installed_versions() and "python" in run.installed_versions()


# ---------------------------------------------------------------------------------------------------- HTML

@pytest.mark.notebook
def test_html_renderings_and_index_link_notebooks_and_figures(tmp_path, fixtures_dir, package):
    pytest.importorskip("nbconvert")
    from ood_utils import paths

    folder = _notebooks(tmp_path, fixtures_dir, "00_hello", "20_plot")
    out = tmp_path / "runs"
    figure = paths.figures_dir("mini") / "mme_fig2_fixture_mini.png"
    figure.unlink(missing_ok=True)
    run_notebooks("mini", notebooks_dir=folder, out_dir=out, package_dir=package)
    html_dir = out / "html"
    hello = (html_dir / "00_hello.html").read_text()
    assert "<html" in hello and "hello mini 0" in hello  # outputs are in the rendering
    assert "data:image/png;base64" in (html_dir / "20_plot.html").read_text()  # the figure is embedded
    index = (html_dir / "index.html").read_text()
    assert 'href="00_hello.html"' in index and 'href="20_plot.html"' in index
    assert 'src="figures/mme_fig2_fixture_mini.png"' in index  # a copy: the folder can be shared on its own
    assert (html_dir / "figures" / figure.name).read_bytes() == figure.read_bytes()
    assert "mirrors: MME Fig. 2" in index  # from the figure's name, as in figures/README.md
    from ood_utils.run.handout import remote_references
    for page in html_dir.glob("*.html"):                                 # every handout works offline
        assert remote_references(page.read_text()) == [], page.name
    assert (html_dir / "mathjax" / "MathJax.js").is_file()
    assert 'href="20_plot.html"' in hello.split("</nav>")[0]             # 00's next notebook
    assert "open the\nnotebook in Jupyter" in hello                       # the widget's place

    # a skipped notebook keeps its rendering; a deleted one is rebuilt without re-running the notebook
    (html_dir / "00_hello.html").unlink()
    runs = run_notebooks("mini", notebooks_dir=folder, out_dir=out, package_dir=package)
    assert set(_statuses(runs).values()) == {"skipped"} and (html_dir / "00_hello.html").exists()


def test_index_without_renderings_still_lists_every_notebook(tmp_path):
    from ood_utils.run import html

    manifest = {"notebooks": {"00_a": {"status": "ok", "seconds": 1.0},
                              "05_b": {"status": "failed", "seconds": 0.5,
                                       "error": {"cell": 3, "ename": "ValueError", "evalue": "boom"}}},
                "environment": {"device": "cpu"}}
    index = html.write_index(tmp_path, "mini", manifest, notebooks_dir=tmp_path).read_text()
    assert "00_a" in index and "failed" in index and "cell 3: ValueError: boom" in index


# ------------------------------------------------------------------------------------------------ make lab

def test_make_lab_starts_the_kits_kernel_and_allows_root_only_as_root():
    import subprocess

    from ood_utils import paths

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # a dry run prints the commands (those of `make setup` first, if the venv is missing) and runs none
    dry = subprocess.run(["make", "-n", "lab"], cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    command = [line for line in dry.stdout.splitlines() if "jupyter lab" in line]
    assert command, dry.stdout
    assert f"default_kernel_name={run.KERNEL_NAME}" in command[-1]
    assert ("--allow-root" in command[-1]) == (os.getuid() == 0)


@pytest.mark.notebook
def test_a_notebook_reading_the_results_reruns_after_the_notebooks_before_it(tmp_path, fixtures_dir, package,
                                                                             monkeypatch):
    monkeypatch.setenv("OOD_KIT_RUNS", str(tmp_path / "kit_runs"))  # where the kernels save their records
    folder = _notebooks(tmp_path, fixtures_dir, "15_records", "30_reads")
    out = tmp_path / "runs"
    kw = dict(notebooks_dir=folder, out_dir=out, package_dir=package, html=False)
    assert _statuses(run_notebooks("mini", **kw)) == {"15_records": "ok", "30_reads": "ok"}
    assert "results" in _manifest(out)["notebooks"]["30_reads"]["inputs"]
    assert "results" not in _manifest(out)["notebooks"]["15_records"]["inputs"]
    assert _statuses(run_notebooks("mini", **kw)) == {"15_records": "skipped", "30_reads": "skipped"}
    # a new value: 15 re-runs for its parameter; 30 sees the new records at its turn, in the same run
    assert _decisions(folder, out, package, params={"value": 2}) == {
        "15_records": "parameters changed", "30_reads": "finished, nothing changed"}
    assert _statuses(run_notebooks("mini", params={"value": 2}, **kw)) == {"15_records": "ok", "30_reads": "ok"}
    assert _manifest(out)["notebooks"]["30_reads"]["reason"] == "results of other notebooks changed"
    assert "15_records.csv" in _stream_text(out / "30_reads.ipynb")


# ------------------------------------------------------------------------------------------------ handouts

def _executed_notebook(path):
    """A small executed notebook as the runner leaves it: maths, a figure-free output and a widget."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 42 · Energy\n\n*Liu et al., a paper, 2020.*\n\nThe energy $E(x) = -\\log\\sum_c e^{f_c(x)}$ of "
                                              "a **classifier**.\n\n**What it needs.** a CPU, a minute."),
                nbformat.v4.new_markdown_cell("## 1 · The score\n\n$$S(x) = -E(x)$$"),
                nbformat.v4.new_code_cell("w", outputs=[nbformat.v4.new_output(
                    "display_data", data={"application/vnd.jupyter.widget-view+json":
                                          {"model_id": "abc", "version_major": 2, "version_minor": 0},
                                          "text/plain": "interactive(...)"})])]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"abc": {}}, "version_major": 2,
                                                                            "version_minor": 0}}
    nbformat.write(nb, str(path))
    return path


def test_remote_references_finds_scripts_styles_and_imports():
    from ood_utils.run.handout import remote_references

    page = ('<script src="https://cdn.example/require.js"></script><link rel="stylesheet" href="//cdn.example/a.css">'
            '<style>@import "https://fonts.example/f.css"; .x{background:url(http://img.example/b.png)}</style>'
            '<script type="module">await import("https://cdn.example/mermaid.mjs")</script>'
            '<script src="mathjax/MathJax.js"></script><a href="https://example.org/paper">a link is fine</a>')
    assert remote_references(page) == ["https://cdn.example/require.js", "//cdn.example/a.css",
                                       "https://fonts.example/f.css", "http://img.example/b.png",
                                       "https://cdn.example/mermaid.mjs"]


def test_a_handout_loads_nothing_remote_and_opens_with_its_header(tmp_path):
    pytest.importorskip("nbconvert")
    from ood_utils.run import handout, html

    executed = _executed_notebook(tmp_path / "42_energy.ipynb")
    nb = nbformat.read(str(executed), as_version=4)
    assert handout.outline(nb) == ("42 · Energy", "The energy $E(x) = -\\log\\sum_c e^{f_c(x)}$ of a **classifier**.",
                                   "**What it needs.** a CPU, a minute.", ["1 · The score"])
    top = handout.header(nb, "42_energy", {"seconds": 61.7, "parameters": {"profile": "mini"}, "finished": "today"},
                         {"device": "cpu", "cpus": 2}, *handout.neighbours(["00_a", "42_energy", "90_z"], "42_energy"))
    page = html.render(executed, tmp_path / "html" / "42_energy.html", top).read_text()
    assert handout.remote_references(page) == []
    assert 'src="mathjax/MathJax.js?config=' in page and "STIX-Web" in page
    assert page.index('class="kit-handout"') < page.index("The score")           # the header comes first
    assert 'href="00_a.html"' in page and 'href="90_z.html"' in page and 'href="index.html"' in page
    assert "took 62 s on cpu (2 CPU cores)" in page and "<b>classifier</b>" in page and "1 · The score" in page
    assert "open the\nnotebook in Jupyter" in page                                 # the widget's place


def test_mathjax_is_copied_once_with_what_a_handout_loads(tmp_path):
    from ood_utils.run import handout

    try:
        handout.mathjax_source()
    except RuntimeError:
        pytest.skip("jupyter-server-mathjax is not installed")
    copy = handout.install_mathjax(tmp_path)
    for part in ("MathJax.js", "config/TeX-AMS-MML_HTMLorMML-full.js", "config/Safe.js",
                 "jax/output/HTML-CSS/fonts/STIX-Web/fontdata.js", "fonts/HTML-CSS/STIX-Web/woff/STIXMathJax_Main-Regular.woff"):
        assert (copy / part).is_file(), part
    assert not (copy / "extensions" / "a11y").exists()
    assert handout.folder_size(copy) < 5_000_000
    (copy / "MathJax.js").write_text("changed")                                   # the stamp says it is there
    assert handout.install_mathjax(tmp_path) == copy and (copy / "MathJax.js").read_text() == "changed"
    assert not list(tmp_path.glob(".*.tmp"))


def test_neighbours_in_numeric_order():
    from ood_utils.run.handout import neighbours

    assert neighbours(["10_b", "00_a", "90_c"], "00_a") == (None, "10_b")
    assert neighbours(["10_b", "00_a", "90_c"], "10_b") == ("00_a", "90_c")
    assert neighbours(["10_b", "00_a", "90_c"], "90_c") == ("10_b", None)
