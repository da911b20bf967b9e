"""The notebook runner on the trivial fixture notebooks: order, outputs, manifest, resume, failures, bad input.

Each execution starts a kernel (about a second), so the tests share executions where they can.
"""
from __future__ import annotations

import json
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


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def _statuses(runs):
    return {r.name: r.status for r in runs}


@pytest.mark.notebook
def test_run_order_outputs_manifest_resume_and_force(tmp_path, fixtures_dir):
    folder = _notebooks(tmp_path, fixtures_dir, "10_steps", "00_hello")
    out = tmp_path / "runs"

    runs = run_notebooks("mini", params={"steps": 3}, notebooks_dir=folder, out_dir=out)
    assert [r.name for r in runs] == ["00_hello", "10_steps"]  # numeric order, not copy order
    assert _statuses(runs) == {"00_hello": "ok", "10_steps": "ok"}

    # executed copies: parameters injected only where defined; kernel = this Python, cwd = notebook folder
    hello = _stream_text(out / "00_hello.ipynb")
    assert "hello mini 0" in hello
    assert f"cwd {folder}" in hello
    assert f"python {sys.executable}" in hello
    assert "steps 3 total 6" in _stream_text(out / "10_steps.ipynb")
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
    assert set(_statuses(run_notebooks("mini", params={"steps": 3}, notebooks_dir=folder,
                                       out_dir=out)).values()) == {"skipped"}
    # another parameter value re-runs only the notebook that defines it
    runs = run_notebooks("mini", params={"steps": 4}, notebooks_dir=folder, out_dir=out)
    assert _statuses(runs) == {"00_hello": "skipped", "10_steps": "ok"}
    assert "steps 4 total 8" in _stream_text(out / "10_steps.ipynb")

    # an edited source re-runs that notebook; saved outputs alone would not count as an edit
    nb = nbformat.read(str(folder / "00_hello.ipynb"), as_version=4)
    nb.cells[-1].source += '\nprint("edited")'
    nbformat.write(nb, str(folder / "00_hello.ipynb"))
    runs = run_notebooks("mini", params={"steps": 4}, notebooks_dir=folder, out_dir=out)
    assert _statuses(runs) == {"00_hello": "ok", "10_steps": "skipped"}

    # --force re-runs a finished notebook
    runs = run_notebooks("mini", only=["10"], params={"steps": 4}, force=True, notebooks_dir=folder, out_dir=out)
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
