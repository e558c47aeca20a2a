"""The HTML reports of the executed notebooks (`make report`), and the executed notebooks made light.

Every figure used to be in git three times: the PNG under results/figures/, an image output of the
executed notebook, and the same image embedded in the notebook's HTML report. So `make report` first
renders each report exactly as nbconvert's command line does (`jupyter nbconvert --to html --no-input`,
and with the code into a second, uncommitted folder), then *lightens* the executed notebook: each image
output becomes one line of text that says where the figure is (the report, and the PNG under
results/figures/ when one holds the same bytes). A lightened notebook is marked in its metadata and is
never rendered again: its report would have no figures. So a lightened notebook whose report exists is
left alone, with its report; a notebook that papermill executes again comes back unmarked, with its
figures, and is rendered and lightened again. A lightened notebook whose report is missing is an error:
only executing it again brings its figures back.

    capslib report NOTEBOOK... --html-dir DIR [--with-code-dir DIR] [--figures-dir DIR]

A mistake (a missing notebook, a lightened one without its report) is one line on stderr, status 2.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Callable

import nbformat

from ..core.errors import CapslibError
from ..core.files import atomic_path

SHOWN = ("display_data", "execute_result")  # the output types that carry a mime bundle
REMOVED = "removed from this executed notebook to keep the repository small"


def is_lightened(notebook: nbformat.NotebookNode) -> bool:
    return notebook.metadata.get("capslib", {}).get("lightened", False)


def is_image(mimetype: str) -> bool:
    return mimetype.startswith("image/")  # image/png, image/jpeg, image/svg+xml, ...


def image_outputs(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
            if output.output_type in SHOWN and any(is_image(m) for m in output.data)]


def lighten(notebook: nbformat.NotebookNode, where: Callable[[nbformat.NotebookNode], str]) -> int:
    """Replace each image output by a text/plain line, `where(output)`; mark the notebook lightened.
    The output keeps its type, execution count and its metadata for other mimetypes. Returns how
    many outputs were replaced."""
    outputs = image_outputs(notebook)
    for output in outputs:
        # The output's other representations (text/plain "<Figure ...>") describe the same figure.
        output.data = nbformat.from_dict({"text/plain": where(output)})
        output.metadata = nbformat.from_dict({k: v for k, v in output.metadata.items() if not is_image(k)})
    notebook.metadata.setdefault("capslib", {})["lightened"] = True
    return len(outputs)


def read(path: Path) -> nbformat.NotebookNode:
    try:
        return nbformat.read(path, as_version=4)
    except Exception as err:  # missing, invalid JSON, not a notebook: one line, whatever was raised
        raise CapslibError(f"cannot read notebook {path}: {err}") from None


def write(notebook: nbformat.NotebookNode, path: Path) -> None:
    with atomic_path(path) as tmp:  # an interrupted write never leaves half a committed notebook
        nbformat.write(notebook, tmp)


def html(path: Path, with_code: bool) -> str:
    """The HTML report of the notebook at `path`, the same bytes as `jupyter nbconvert --to html`
    writes (with `--no-input` unless `with_code`)."""
    from nbconvert import HTMLExporter  # the notebook stack: only rendering needs it

    # nbconvert's --no-input flag sets exactly these three (nbconvert/nbconvertapp.py, flags).
    hide = not with_code
    exporter = HTMLExporter(exclude_input=hide, exclude_input_prompt=hide, exclude_output_prompt=hide)
    body, _ = exporter.from_filename(str(path))  # from_filename: the page title is the notebook's name
    return body


def report_path(notebook: Path, html_dir: Path) -> Path:
    return html_dir / f"{notebook.stem}.html"  # the name nbconvert gives it


def saved_figures(figures_dir: Path | None) -> dict[bytes, Path]:
    """Each PNG under `figures_dir` by its bytes: a notebook's image is that figure when the bytes are
    the same (capslib.figures saves and shows the same PNG bytes). Matching by bytes never names a
    wrong file; a figure saved differently, or saved since, is only pointed to in the report."""
    if figures_dir is None or not figures_dir.is_dir():
        return {}
    return {path.read_bytes(): path for path in sorted(figures_dir.glob("*.png"))}


def report(notebook_path: Path, html_dir: Path, with_code_dir: Path | None, figures: dict[bytes, Path]) -> str:
    """Render the notebook's reports, then lighten it; leave a lightened one and its report alone.
    Returns what was done, in one line."""
    notebook = read(notebook_path)
    target = report_path(notebook_path, html_dir)
    if is_lightened(notebook):
        if not target.is_file():
            raise CapslibError(f"{notebook_path} is lightened (its figures were replaced by pointers to {target}) "
                               f"and {target} is missing: execute the notebook again (papermill) to render it")
        return f"kept {target}: {notebook_path} was rendered and lightened before"
    rendered = {target: False} | ({report_path(notebook_path, with_code_dir): True} if with_code_dir else {})
    # Every report is written before the notebook is lightened: an interruption loses no figure.
    for path, with_code in rendered.items():
        text = html(notebook_path, with_code)
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")

    def where(output) -> str:
        png = output.data.get("image/png")
        saved = figures.get(base64.b64decode(png)) if png else None
        also = f" and as {saved.as_posix()}" if saved else ""
        return f"[figure: in the HTML report {target.as_posix()}{also}; {REMOVED}]"

    count = lighten(notebook, where)
    write(notebook, notebook_path)
    written = ", ".join(p.as_posix() for p in rendered)
    return f"rendered {written}; lightened {notebook_path} (image outputs replaced: {count})"


def report_all(notebooks: list[Path], html_dir: Path, with_code_dir: Path | None = None,
               figures_dir: Path | None = None) -> list[str]:
    """`report` each notebook (all checked to exist before any work: nothing is half done); one line each."""
    missing = [path for path in notebooks if not Path(path).is_file()]
    if missing:
        raise CapslibError(f"no notebook {', '.join(map(str, missing))}")
    figures = saved_figures(figures_dir)
    return [report(Path(path), Path(html_dir), with_code_dir and Path(with_code_dir), figures) for path in notebooks]
