"""HTML renderings of the executed notebooks and an index page: a run that opens in any browser.

    runs/<profile>/html/<name>.html    one executed notebook (a handout), outputs and figures embedded
    runs/<profile>/html/index.html     every notebook of the profile: status, time, rendering, its figures
    runs/<profile>/html/figures/       copies of the profile's figures, so the folder stands alone
    runs/<profile>/html/mathjax/       the formulas' typesetter, so the folder needs no network

For workshops: after ``python -m ood_utils.run``, open ``index.html`` (or serve the folder with
``python -m http.server``); nothing needs Jupyter or the network. Each handout opens with what its notebook
teaches, the time its run took and links to the previous and next notebook. Rendered with nbconvert's
HTMLExporter through the kit's ``handout`` template (``templates/handout``), which loads no remote script.
"""
from __future__ import annotations

import html
import importlib.util
import os
import re
import sys
from fnmatch import fnmatch
from pathlib import Path

from .. import paths
from . import handout

FOLDER = "html"
INDEX = "index.html"
FIGURES = "figures"  # copies of the profile's figures: the html folder stands alone
TEMPLATES = Path(__file__).resolve().parent / "templates"


def available() -> bool:
    """Whether nbconvert is installed (it renders the notebooks)."""
    return importlib.util.find_spec("nbconvert") is not None


def render(executed: Path, target: Path, header: str | None = None) -> Path:
    """Write the handout of one executed notebook: images embedded, MathJax from ``mathjax/`` beside it (see
    :func:`handout.install_mathjax`), ``header`` (HTML) at the top; nothing is loaded from the network."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="handout", extra_template_basedirs=[str(TEMPLATES)],
                            mathjax_url=handout.mathjax_url())
    nb = nbformat.read(str(executed), as_version=4)
    resources = {"handout_header": header if header is not None else handout.header(nb, executed.stem, {}, {},
                                                                                      None, None)}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    paths.write_bytes(target, body.encode())
    return target


def update(out: Path, profile: str, manifest: dict, fresh: list, notebooks_dir=None) -> Path | None:
    """Render the notebooks executed now (and any executed copy without a rendering), then the index."""
    if not available():
        print("note: no HTML renderings (nbconvert is not installed: pip install nbconvert)", file=sys.stderr)
        return None
    import nbformat

    folder = out / FOLDER
    try:
        handout.install_mathjax(folder)
    except (RuntimeError, OSError) as err:  # the pages still render; their formulas stay TeX source
        print(f"warning: handouts without MathJax ({err})", file=sys.stderr)
    fresh_names = {run.name for run in fresh}
    entries = manifest.get("notebooks", {})
    rendered = sorted(name for name in entries if (out / f"{name}.ipynb").exists())
    for name in rendered:
        executed, target = out / f"{name}.ipynb", folder / f"{name}.html"
        stale = not target.exists() or target.stat().st_mtime < executed.stat().st_mtime
        if name in fresh_names or stale or _links_changed(target, handout.neighbours(rendered, name)):
            try:
                nb = nbformat.read(str(executed), as_version=4)
                top = handout.header(nb, name, entries[name], manifest.get("environment", {}),
                                     *handout.neighbours(rendered, name))
                render(executed, target, top)
            except Exception as err:  # a rendering problem must not fail a run that succeeded
                print(f"warning: could not render {executed} to HTML ({type(err).__name__}: {err})", file=sys.stderr)
    return write_index(out, profile, manifest, notebooks_dir)


def _links_changed(target: Path, neighbours: tuple[str | None, str | None]) -> bool:
    """Whether a handout's previous / next links no longer name the notebooks rendered beside it (a notebook
    run later in another call of the runner)."""
    if not target.exists():
        return True
    nav = target.read_text(errors="replace").split("</nav>", 1)[0]
    linked = [name for name in re.findall(r'href="([^"/]+)\.html"', nav) if name != "index"]
    return linked != [name for name in neighbours if name is not None]


def _figures(profile: str, notebooks_dir) -> dict[str, list[tuple[Path, str]]]:
    """This profile's figure files per notebook that declares them, each with what it mirrors; files no
    notebook declares under ``""``."""
    from .. import figure_index

    files = sorted(paths.figures_dir(profile).glob("*.png"))
    per_notebook: dict[str, list[tuple[Path, str]]] = {}
    claimed: set[Path] = set()
    for fig in figure_index.collect(Path(notebooks_dir) if notebooks_dir else None):
        for f in files:
            if fnmatch(f.name, fig.pattern()) and f not in claimed:
                per_notebook.setdefault(fig.notebook, []).append((f, f"mirrors: {fig.mirrors}"))
                claimed.add(f)
    unclaimed = [(f, "no notebook declares it") for f in files if f not in claimed]
    if unclaimed:
        per_notebook[""] = unclaimed
    return per_notebook


def _copy_figure(path: Path, folder: Path) -> Path:
    """A copy of a figure inside the HTML folder, so that the folder can be shared or served on its own."""
    copy = folder / FIGURES / path.name
    if not copy.exists() or copy.stat().st_mtime < path.stat().st_mtime:
        paths.write_bytes(copy, path.read_bytes())
    return copy


def _thumb(path: Path, folder: Path, caption: str) -> str:
    path = _copy_figure(path, folder)
    href = html.escape(Path(os.path.relpath(path, folder)).as_posix())
    return (f'<figure><a href="{href}"><img src="{href}" alt="{html.escape(path.stem)}" loading="lazy"></a>'
            f"<figcaption><b>{html.escape(path.stem)}</b><br>{html.escape(caption)}</figcaption></figure>")


STYLE = """body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border-bottom:1px solid #ddd;padding:.35rem .7rem;text-align:left}
.ok{color:#007a3d}.failed{color:#b00020}.other{color:#8a6d00}
figure{display:inline-block;margin:.4rem;width:15rem;vertical-align:top}img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.8rem}.env{font-size:.85rem;color:#555}"""


def write_index(out: Path, profile: str, manifest: dict, notebooks_dir=None) -> Path:
    """``<out>/html/index.html``: one row per notebook of the manifest, then its figures."""
    folder = out / FOLDER
    entries = dict(sorted(manifest.get("notebooks", {}).items()))
    per_notebook = _figures(profile, notebooks_dir)
    env = manifest.get("environment", {})
    rows, sections = [], []
    for name, entry in entries.items():
        status = entry.get("status", "?")
        page = folder / f"{name}.html"
        link = f'<a href="{html.escape(page.name)}">{html.escape(name)}</a>' if page.exists() else html.escape(name)
        seconds = entry.get("seconds")
        error = entry.get("error") or {}
        detail = f"cell {error.get('cell')}: {error.get('ename')}: {error.get('evalue')}" if error else ""
        css = status if status in ("ok", "failed") else "other"
        rows.append(f"<tr><td>{link}</td><td class='{css}'>{html.escape(status)}</td>"
                    f"<td>{'' if seconds is None else f'{seconds:.1f} s'}</td>"
                    f"<td>{html.escape(str(entry.get('finished', '')))}</td><td>{html.escape(detail)}</td>"
                    f"<td>{len(per_notebook.get(name, []))}</td></tr>")
    for name, found in per_notebook.items():  # in notebook order; undeclared files last
        heading = (name if name in entries else f"{name} (not run by the runner in this profile)") if name \
            else "other figures in this profile's folder"
        sections.append(f"<h3>{html.escape(heading)}</h3>" + "".join(_thumb(f, folder, c) for f, c in found))
    facts = ", ".join(f"{k} {html.escape(str(env.get(k)))}" for k in ("git_sha", "device", "python", "torch")
                      if env.get(k) is not None)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>OOD kit · {html.escape(profile)}</title>
<style>{STYLE}</style></head><body>
<h1>OOD reproduction kit · profile {html.escape(profile)}</h1>
<p class="env">updated {html.escape(str(manifest.get('updated', '')))}; {facts}{' · smoke mode' if env.get('smoke') else ''}</p>
<table><tr><th>notebook</th><th>status</th><th>time</th><th>finished</th><th>error</th><th>figures</th></tr>
{''.join(rows)}</table>
<h2>Figures</h2>{''.join(sections) or '<p>No figures yet.</p>'}
</body></html>
"""
    target = folder / INDEX
    paths.write_bytes(target, page.encode())
    return target
