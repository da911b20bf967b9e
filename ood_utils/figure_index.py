"""Which figures the kit writes, which notebook writes each, and which paper figure or table it mirrors.

The list is read from the code, never kept by hand: every ``plots.savefig(fig, "<name>", ...)`` call in
the notebooks, and every one inside ``ood_utils`` (credited to the notebooks that call the function holding
it). A name written as an f-string keeps its fields, ``greg_fig3_{cfg.id_dataset}``: one file per value.
What a figure mirrors comes from, first match wins:

1. a comment on the ``savefig`` line or the line above it: ``# mirrors: GReg Fig. 1a (energy surface)``;
2. the name (after its notebook's number, ``NN_``): ``<paper>_fig<N>``, ``_table<N>``, ``_eq<N>``, ``_alg<N>``, ``_prop<N>`` (``mme_fig5_sensitivity``
   -> MME Fig. 5);
3. the notebook's section the call sits in, when its heading names the paper's element in parentheses
   (``## 4. Walking across the boundary (Fig. 2)`` in ``31_bood_...`` -> BOOD Fig. 2);
4. otherwise it is the kit's own figure (with the paper's name when the name or notebook names it).

    python -m ood_utils.figure_index                              # the table on stdout
    python -m ood_utils.figure_index --write figures/README.md    # regenerate the file
    python -m ood_utils.figure_index --check figures/README.md    # exit 1 when the file is stale
    python -m ood_utils.figure_index --misnamed                   # figures not named NN_<topic> after their notebook
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

PAPER_NAMES = {"greg": "GReg", "mme": "MME", "bood": "BOOD"}
_MIRRORS_COMMENT = re.compile(r"#\s*mirrors:\s*(.+?)\s*$")
_PARTS = [(re.compile(r"^fig(?:ure)?(\d+[a-z]?)$"), "Fig. {}"), (re.compile(r"^tab(?:le)?(\d+)$"), "Table {}"),
          (re.compile(r"^eqs?(\d+)$"), "eq. ({})"), (re.compile(r"^alg(\d+)$"), "Alg. {}"),
          (re.compile(r"^prop(\d+)$"), "Proposition {}")]
KIT_OWN = "the kit's own figure"


@dataclass(frozen=True)
class Figure:
    """One ``savefig`` call: the file name (fields of an f-string kept as ``{...}``), the notebook that writes
    it, what it mirrors, the condition it is written under (empty: always) and where the call is."""

    name: str
    notebook: str
    mirrors: str
    condition: str
    site: str

    def pattern(self) -> str:
        """A glob for the files this call writes (every f-string field becomes ``*``)."""
        return re.sub(r"\{[^{}]*\}", "*", self.name) + ".png"


# --------------------------------------------------------------------------------------------- parsing

def _cells(notebook: Path) -> Iterator[tuple[int, str, str]]:
    """(index among all cells, heading of the section it is in, source) of the code cells, IPython magics and
    shell lines blanked (so ``ast`` can read them)."""
    heading = ""
    for index, cell in enumerate(json.loads(notebook.read_text())["cells"]):
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        if cell.get("cell_type") == "markdown":
            heading = next((line for line in reversed(source.splitlines()) if line.startswith("#")), heading)
        elif cell.get("cell_type") == "code":
            yield index, heading, "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                                            for line in source.splitlines())


def _code_cells(notebook: Path) -> Iterator[tuple[int, str]]:
    for index, _, source in _cells(notebook):
        yield index, source


#: a paper element named in parentheses in a heading: "(Fig. 2)", "(Tables 3 and 6)", "(eq. (6), Figs. 1 and 7)"
_HEADING_REF = re.compile(r"\(((?:eqs?\.|Eqs?\.|Figs?\.|Tables?|Alg\.|Algorithm|Prop)[^()]*(?:\([^()]*\)[^()]*)*)\)")


def heading_reference(heading: str, notebook: str) -> str | None:
    """"BOOD Fig. 2" from the heading "## 4. Walking across the boundary (Fig. 2)" of a ``3x_bood_`` notebook."""
    paper = notebook.split("_")[1] if notebook.count("_") >= 1 else ""
    found = _HEADING_REF.search(heading)
    return f"{PAPER_NAMES[paper]} {found.group(1)}" if found and paper in PAPER_NAMES else None


def _name_of(node: ast.expr) -> str | None:
    """The figure name a savefig argument spells: a string, or an f-string with ``{field}`` kept."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.removesuffix(".png")
    if isinstance(node, ast.JoinedStr):
        parts = [v.value if isinstance(v, ast.Constant) else "{" + ast.unparse(v.value) + "}" for v in node.values]
        return "".join(parts).removesuffix(".png")
    if isinstance(node, ast.Name):  # a variable: shown as a field, like an f-string's
        return "{" + node.id + "}"
    return None


def _is_savefig(call: ast.Call) -> bool:
    """The kit's ``savefig(fig, name, ...)``, however it is reached (``plots.savefig``, ``bood.figures.savefig``,
    a bare ``savefig``); matplotlib's ``fig.savefig(fname)`` takes one positional argument and no ``name``."""
    func = call.func
    called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return called == "savefig" and (len(call.args) >= 2 or any(k.arg == "name" for k in call.keywords))


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _condition(node: ast.AST, parents: dict) -> str:
    """The ``if`` tests around a call (``bench.near_sets and ...``), innermost last; '' when unconditional."""
    tests, child, node = [], node, parents.get(node)
    while node is not None and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        if isinstance(node, ast.If):
            test = ast.unparse(node.test)
            tests.append(test if child not in node.orelse else f"not ({test})")
        child, node = node, parents.get(node)
    return " and ".join(reversed(tests))


def mirrors_of(name: str, lines: list[str], lineno: int, section: str | None = None, notebook: str = "") -> str:
    """What a figure mirrors: its ``# mirrors:`` comment, else what its name says, else what the heading of
    its ``section`` names (see :func:`heading_reference`), else the kit's own."""
    for line in (lines[lineno - 1] if lineno - 1 < len(lines) else "", lines[lineno - 2] if lineno >= 2 else ""):
        found = _MIRRORS_COMMENT.search(line)
        if found:
            return found.group(1)
    paper, _, rest = re.sub(r"^\d\d_", "", name).partition("_")  # "31_bood_fig2_x" reads as "bood_fig2_x"
    if paper not in PAPER_NAMES:
        owner = notebook.split("_")[1] if notebook.count("_") >= 1 else ""
        return section or (f"{KIT_OWN} ({PAPER_NAMES[owner]})" if owner in PAPER_NAMES else KIT_OWN)
    parts, last = [], None
    for token in rest.split("_"):
        found = next(((fmt, m) for pattern, fmt in _PARTS if (m := pattern.match(token))), None)
        if found:
            last = found[0]
            parts.append(last.format(found[1].group(1)))
        elif last and re.fullmatch(r"\d+[a-z]?", token):  # "table5_6": Tables 5 and 6
            parts.append(last.format(token))
        else:
            last = None
    return f"{PAPER_NAMES[paper]} {', '.join(parts)}" if parts else section or f"{KIT_OWN} ({PAPER_NAMES[paper]})"


def _calls(source: str) -> Iterator[tuple[ast.Call, dict, str | None, ast.expr]]:
    """Every savefig call of a source with its parents map and enclosing function name."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return
    parents = _parents(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _is_savefig(node):
            name_arg = node.args[1] if len(node.args) > 1 else next(
                (k.value for k in node.keywords if k.arg == "name"), None)
            if name_arg is None:
                continue
            owner = parents.get(node)
            while owner is not None and not isinstance(owner, (ast.FunctionDef, ast.AsyncFunctionDef)):
                owner = parents.get(owner)
            yield node, parents, (owner.name if owner is not None else None), name_arg


def scan_notebook(notebook: Path) -> list[Figure]:
    """The figures one notebook saves itself (calls in its cells)."""
    found = []
    for index, heading, source in _cells(notebook):
        lines = source.splitlines()
        section = heading_reference(heading, notebook.stem)
        for call, parents, _, name_arg in _calls(source):
            name = _name_of(name_arg)
            if name is not None:
                found.append(Figure(name, notebook.stem, mirrors_of(name, lines, call.lineno, section, notebook.stem),
                                    _condition(call, parents), f"cell {index}"))
    return found


def scan_package(package: Path, notebooks: Iterable[Path]) -> list[Figure]:
    """Figures saved inside ``ood_utils`` with a literal name, credited to each notebook calling the function
    that saves them (``ood_utils`` itself when no notebook does)."""
    sources = {nb.stem: "\n".join(source for _, source in _code_cells(nb)) for nb in notebooks}
    found = []
    for module in sorted(package.rglob("*.py")):
        if module.name == "plots.py" and module.parent == package:
            continue  # the helper itself
        text = module.read_text()
        lines = text.splitlines()
        for call, parents, function, name_arg in _calls(text):
            name = _name_of(name_arg)
            if name is None or (isinstance(name_arg, ast.Name)):
                continue  # the name comes from the caller: the call site in the notebook is listed instead
            site = f"{module.relative_to(package.parent).as_posix()}:{call.lineno}"
            callers = [nb for nb, src in sources.items() if function and re.search(rf"\b{function}\(", src)]
            for notebook in callers or ["ood_utils"]:
                found.append(Figure(name, notebook, mirrors_of(name, lines, call.lineno),
                                    _condition(call, parents), site))
    return found


def collect(notebooks_dir: Path | None = None, package: Path | None = None) -> list[Figure]:
    """Every figure of the kit, in notebook order, each (name, notebook) once."""
    from . import paths

    notebooks = paths.find_notebooks(notebooks_dir)
    package = package or Path(__file__).resolve().parent
    figures = [f for nb in notebooks for f in scan_notebook(nb)] + scan_package(package, notebooks)
    order = {nb.stem: i for i, nb in enumerate(notebooks)}
    unique = {(f.name, f.notebook): f for f in reversed(figures)}  # the first call site wins
    return sorted(unique.values(), key=lambda f: (order.get(f.notebook, len(order)), figures.index(f)))


def misnamed(figures: Iterable[Figure]) -> list[Figure]:
    """The figures whose file name does not start with the number of the notebook that writes them
    (``NN_<topic>``: ``31_bood_...`` writes ``31_walks``, not ``bood_31_walks``). A figure written by several
    notebooks is listed for each; one that no notebook writes (credited to ``ood_utils``) has no number to
    carry and is left out."""
    out = []
    for f in figures:
        number = f.notebook.split("_", 1)[0]
        if number.isdigit() and not f.name.startswith(f"{number}_"):
            out.append(f)
    return out


def figures_by_notebook(figures: Iterable[Figure]) -> dict[str, list[Figure]]:
    out: dict[str, list[Figure]] = {}
    for f in figures:
        out.setdefault(f.notebook, []).append(f)
    return out


# --------------------------------------------------------------------------------------------- README

HEADER = """# Figures

Every figure the notebooks write, generated from the code by `python -m ood_utils.figure_index --write
figures/README.md` (a test fails when this file is stale). Each profile writes the same names into its own
folder: `figures/mini/`, `figures/quick/`, `figures/paper/` (moved by `OOD_KIT_FIGURES`). A `{...}` in a
name is filled in by the run (one file per value, e.g. per ID dataset). "Mirrors" is the paper's figure or
table the plot reproduces (in `mini`, on the MNIST analogue of the paper's benchmark); "the kit's own" has
no counterpart in the papers. After a run, `runs/<profile>/html/index.html` links each notebook's rendering
to the figures it wrote.

Every file is named `NN_<topic>` after the notebook that writes it (a test checks it). To declare what a new
figure mirrors, add a comment to the call
(`plots.savefig(fig, "10_greg_energy_surface", cfg.profile)  # mirrors: GReg Fig. 1a`), or name it
`NN_<paper>_fig<N>_<topic>` / `NN_<paper>_table<N>_<topic>`, or name the paper's element in parentheses in the
heading of the notebook section that draws it (`## 4 · Walking across the boundary (Fig. 2)`).
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(figures: Iterable[Figure]) -> str:
    rows = ["| figure | notebook | mirrors | written | call |", "|---|---|---|---|---|"]
    for f in figures:
        written = f"when `{_cell(f.condition)}`" if f.condition else "always"
        rows.append(f"| `{_cell(f.name)}.png` | {f.notebook} | {_cell(f.mirrors)} | {written} | {f.site} |")
    return HEADER + "\n" + "\n".join(rows) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ood_utils.figure_index",
                                 description="the kit's figures, their notebooks and the paper figures they mirror")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--write", type=Path, metavar="README", help="write the table to this file")
    group.add_argument("--check", type=Path, metavar="README", help="exit 1 if this file is not up to date")
    group.add_argument("--misnamed", action="store_true",
                       help="list the figures whose name does not start with their notebook's number; exit 1 if any")
    args = ap.parse_args(argv)
    if args.misnamed:
        wrong = misnamed(collect())
        for f in wrong:
            print(f"{f.notebook}: {f.name}.png ({f.site})")
        return 1 if wrong else 0
    text = markdown(collect())
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text)
        print(f"wrote {args.write}")
    elif args.check:
        if not args.check.exists() or args.check.read_text() != text:
            print(f"{args.check} is stale: run python -m ood_utils.figure_index --write {args.check}",
                  file=sys.stderr)
            return 1
        print(f"{args.check} is up to date")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
