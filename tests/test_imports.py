"""The package's imports form no circle: read with ``ast`` (nothing is imported), every ``import`` of an
``ood_utils`` module counts, the ones inside functions too, since a deferred import only hides a circle.
A module reaching into the package that holds it (``data/leaks.py`` using the registry of ``data/__init__``)
is not counted: Python has run that package's ``__init__`` before the module anyway."""
from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ood_utils"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str], root: Path = PACKAGE) -> set[str]:
    """The package's modules one file imports. ``from .x import y`` names module ``x.y`` when that is a
    module, else ``x``."""
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    with warnings.catch_warnings():  # a docstring's odd escape is no concern here
        warnings.simplefilter("ignore")
        tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return {m for m in found if m in modules and m != here and not here.startswith(m + ".")}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    return {name: imports_of(path, set(files), root) for name, path in files.items()}


def rooms(graph: dict[str, set[str]], top: str = PACKAGE.name) -> dict[str, set[str]]:
    """The same graph one level up: a sub-package (``ood_utils.run``) is one node, a top-level module another."""
    def room(name: str) -> str:
        return ".".join(name.split(".")[:2]) if name != top else name

    out: dict[str, set[str]] = {}
    for source, targets in graph.items():
        out.setdefault(room(source), set()).update(room(t) for t in targets if room(t) != room(source))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected group of more than one node (Tarjan's algorithm)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_checker_finds_a_circle_through_a_deferred_import(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from .sub import high\n")   # deferred, still a circle
    (pkg / "sub" / "__init__.py").write_text("from . import high\n")
    (pkg / "sub" / "high.py").write_text("from ..low import f\n")
    graph = import_graph(pkg)
    assert graph["pkg.low"] == {"pkg.sub.high"} and graph["pkg.sub.high"] == {"pkg.low"}
    assert cycles(graph) == [["pkg.low", "pkg.sub.high"]]
    (pkg / "low.py").write_text("def f():\n    pass\n")
    assert cycles(import_graph(pkg)) == []


def test_the_checker_finds_a_circle_between_a_module_and_a_sub_package(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "index.py").write_text("from .sub import a\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from .. import index\n")
    assert cycles(import_graph(pkg)) == []                       # no file imports itself back
    assert cycles(rooms(import_graph(pkg), "pkg")) == [["pkg.index", "pkg.sub"]]


def test_a_module_using_its_own_package_registry_is_no_circle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("REGISTRY = {}\nfrom .leaf import check\n")
    (pkg / "sub" / "leaf.py").write_text("def check():\n    from . import REGISTRY\n")
    graph = import_graph(pkg)
    assert graph["pkg.sub"] == {"pkg.sub.leaf"} and graph["pkg.sub.leaf"] == set()
    assert cycles(graph) == []


@pytest.mark.parametrize("level", ["modules", "sub-packages"])
def test_ood_utils_imports_form_no_circle(level):
    graph = import_graph()
    assert "ood_utils.threads" in graph["ood_utils.detectors._numerics"]  # the reader sees relative imports
    circles = cycles(graph if level == "modules" else rooms(graph))
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)
