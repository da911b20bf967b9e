"""What makes a rendering a handout for a room without network: a local MathJax beside the pages, and a
header that says what the notebook teaches, how long it ran, and where the previous and next ones are.

MathJax 2.7 comes from the package ``jupyter-server-mathjax`` (a dependency of the kit); only the parts a
handout uses are copied: the TeX input, the HTML-CSS output with its STIX web fonts, the extensions and
the English messages (about 4 MB, once per html folder).
"""
from __future__ import annotations

import html
import importlib.util
import re
import shutil
from pathlib import Path

MATHJAX = "mathjax"            # the folder beside the handouts
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"
#: what a handout loads, relative to MathJax's root: its core, configs, TeX in, HTML-CSS out, STIX fonts
MATHJAX_PARTS = ("MathJax.js", "LICENSE", "config/TeX-AMS-MML_HTMLorMML-full.js", "config/Safe.js",
                 "jax/input/TeX", "jax/element", "jax/output/HTML-CSS", "fonts/HTML-CSS/STIX-Web",
                 "extensions", "localization/en")
_SKIP = ("a11y",)               # accessibility explorers: 3.7 MB no handout loads
_STAMP = ".copied-from"


def mathjax_source() -> Path:
    """MathJax's root inside the installed ``jupyter_server_mathjax`` package."""
    spec = importlib.util.find_spec("jupyter_server_mathjax")
    if spec is None or not spec.origin:
        raise RuntimeError("offline handouts need MathJax: pip install jupyter-server-mathjax")
    root = Path(spec.origin).parent / "static"
    if not (root / "MathJax.js").exists():
        raise RuntimeError(f"no MathJax.js in {root}: reinstall jupyter-server-mathjax")
    return root


def install_mathjax(folder: Path) -> Path:
    """Copy MathJax into ``folder/mathjax`` unless this very copy is there already; returns that folder.
    Written into a temporary folder first and renamed, so an interrupted copy leaves no half of one."""
    source = mathjax_source()
    target = folder / MATHJAX
    stamp = str(source.resolve())
    if (target / _STAMP).exists() and (target / _STAMP).read_text() == stamp:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".{MATHJAX}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    for part in MATHJAX_PARTS:
        src, dst = source / part, staging / part
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*_SKIP))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    (staging / _STAMP).write_text(stamp)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def mathjax_url() -> str:
    """The script address a handout loads MathJax from: relative, so the folder can move or be served."""
    return f"{MATHJAX}/MathJax.js?config={MATHJAX_CONFIG}"


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


# ----------------------------------------------------------------------------------------------- header

def _markdown_cells(nb) -> list[str]:
    return [cell.source for cell in nb.cells if cell.cell_type == "markdown"]


def _plain(markdown: str) -> str:
    """Markdown reduced to escaped text with its bold, code and maths marks kept readable."""
    text = html.escape(" ".join(markdown.split()))
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def outline(nb) -> tuple[str, str, str, list[str]]:
    """(title, opening paragraph, what it needs, section headings) read from the notebook's markdown."""
    cells = _markdown_cells(nb)
    first = cells[0] if cells else ""
    title = next((line.lstrip("# ").strip() for line in first.splitlines() if line.startswith("# ")), "")
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", first) if p.strip() and not p.startswith("#")]
    # the first paragraph that says something: not a citation line in italics
    prose = [p for p in paragraphs if not re.fullmatch(r"\*[^*].*\*", p, re.S)]
    opening = (prose or paragraphs or [""])[0]
    needs = next((p for c in cells[:3] for p in re.split(r"\n\s*\n", c) if re.match(r"\*\*(What it )?[Nn]eeds", p)), "")
    sections = [line.lstrip("# ").strip() for c in cells for line in c.splitlines() if line.startswith("## ")]
    return title, opening, needs, sections


def header(nb, name: str, entry: dict, environment: dict, previous: str | None, following: str | None) -> str:
    """The box that opens a handout: previous / index / next, what the notebook teaches (its opening and its
    sections), what it says it needs, and the time this run took on this machine."""
    title, opening, needs, sections = outline(nb)

    def link(target: str | None, label: str) -> str:
        return f'<a href="{html.escape(target)}.html">{label}</a>' if target else "<span></span>"

    seconds = entry.get("seconds")
    ran = (f"<b>Time.</b> The run behind this page (profile "
           f"<b>{html.escape(str(entry.get('parameters', {}).get('profile', '?')))}</b>) took {seconds:.0f} s on "
           f"{html.escape(str(environment.get('device', 'this machine')))}"
           + (f" ({environment['cpus']} CPU cores)" if environment.get("cpus") else "")
           + f", finished {html.escape(str(entry.get('finished', '')))}; a first run, which trains and caches what"
           " later runs load, takes longer."
           if seconds is not None else "<b>Time.</b> This page has no recorded run time.")
    parts = [f'<nav>{link(previous, "&larr; " + html.escape(previous or ""))}<a href="index.html">all notebooks</a>'
             f'{link(following, html.escape(following or "") + " &rarr;")}</nav>',
             f"<h2>{html.escape(title or name)}</h2>",
             f"<p><b>What it teaches.</b> {_plain(opening)}</p>" if opening else "",
             "<ul>" + "".join(f"<li>{_plain(s)}</li>" for s in sections) + "</ul>" if sections else "",
             f"<p>{_plain(needs)}</p>" if needs else "",
             f"<p>{ran}</p>"]
    return '<section class="kit-handout">' + "".join(parts) + "</section>"


def neighbours(names: list[str], name: str) -> tuple[str | None, str | None]:
    """The notebooks before and after ``name`` in numeric order (None at either end)."""
    ordered = sorted(names)
    i = ordered.index(name)
    return (ordered[i - 1] if i > 0 else None), (ordered[i + 1] if i + 1 < len(ordered) else None)



#: a script or stylesheet from another machine: src/href of script and link tags, CSS url() and @import,
#: a module's import()
_REMOTE = re.compile(r"""<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*["']?((?:https?:)?//[^"'\s>]+)"""
                     r"""|url\(\s*["']?((?:https?:)?//[^"')\s]+)|@import\s+["']((?:https?:)?//[^"']+)"""
                     r"""|import\(\s*["']((?:https?:)?//[^"']+)""", re.IGNORECASE)


def remote_references(page: str) -> list[str]:
    """Every address in ``page`` that a browser would fetch from the network (empty for a handout)."""
    return [next(g for g in match.groups() if g) for match in _REMOTE.finditer(page)]
