"""capslib.study.reports: the HTML reports are nbconvert's, byte for byte; then the executed notebook is
lightened (every image output becomes a line saying where the figure is, the rest stays as it was);
a lightened notebook is never rendered again, a re-executed one is; mistakes are one line.

On a small synthetic notebook made with nbformat (matplotlib PNGs, an SVG, text, markdown), not the
committed results, so that the tests take seconds.
"""

from __future__ import annotations

import base64
import copy
import io
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from matplotlib.figure import Figure
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from capslib.cli import main
from capslib.study import reports
from capslib.core.errors import CapslibError

SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'


def png(values: list[float]) -> bytes:
    figure = Figure(figsize=(2, 1.5))
    figure.add_subplot().plot(values)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def image(output_type: str, data: bytes, **extra) -> nbformat.NotebookNode:
    return new_output(output_type, data={"image/png": base64.b64encode(data).decode(), "text/plain": "<Figure>"},
                      metadata={"image/png": {"width": 300}, "needs_background": "light"}, **extra)


def synthetic_notebook(saved: bytes, unsaved: bytes) -> nbformat.NotebookNode:
    """What papermill leaves: a title, text and table outputs, and three figures (a PNG saved under
    figures/, a PNG saved nowhere, an SVG)."""
    cells = [
        new_markdown_cell("# A synthetic report\n\nIts figures go."),
        new_code_cell("print('epoch 1')\nfigure", execution_count=1, outputs=[
            new_output("stream", name="stdout", text="epoch 1\n"),
            image("execute_result", saved, execution_count=1)]),
        new_code_cell("display(other); table", execution_count=2, outputs=[
            image("display_data", unsaved),
            new_output("display_data", data={"image/svg+xml": SVG, "text/plain": "<SVG>"}),
            new_output("execute_result", data={"text/markdown": "| a | b |\n|---|---|\n| 1 | 2 |", "text/plain": "table"},
                       execution_count=2)]),
    ]
    notebook = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}, "papermill": {"parameters": {"seed": 1}}})
    nbformat.validate(notebook)
    return notebook


@pytest.fixture
def study(tmp_path) -> dict:
    """An executed notebook in notebooks/, the saved PNG of its first figure in figures/."""
    saved, unsaved = png([1, 3, 2]), png([2, 1, 3])
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "curve.png").write_bytes(saved)
    (figures / "other.png").write_bytes(png([0, 0, 1]))  # a figure of another notebook
    notebook = tmp_path / "notebooks" / "report.ipynb"
    notebook.parent.mkdir()
    nbformat.write(synthetic_notebook(saved, unsaved), notebook)
    return {"notebook": notebook, "html": tmp_path / "html", "with_code": tmp_path / "html" / "with-code",
            "figures": figures, "executed": notebook.read_bytes()}


def run_report(study: dict) -> str:
    figures = reports.saved_figures(study["figures"])
    return reports.report(study["notebook"], study["html"], study["with_code"], figures)


def nbconvert(notebook: Path, out_dir: Path, *flags: str) -> bytes:
    """What `make report` ran before capslib.study.reports: the nbconvert command line."""
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", *flags, "--output-dir", str(out_dir),
                    str(notebook)], check=True, capture_output=True, timeout=120)
    return (out_dir / f"{notebook.stem}.html").read_bytes()


def all_outputs(notebook: nbformat.NotebookNode) -> list[dict]:
    return [output for cell in notebook.cells for output in cell.get("outputs", [])]


def mimetypes(notebook: nbformat.NotebookNode) -> set[str]:
    return {m for output in all_outputs(notebook) for m in output.get("data", {})}


# ---------------------------------------------------------------------------------------------
# lightening


def test_lightening_replaces_every_image_output_and_keeps_the_rest():
    original = synthetic_notebook(png([1, 2]), png([2, 1]))
    notebook = copy.deepcopy(original)
    assert reports.lighten(notebook, lambda output: "[figure: elsewhere]") == 3
    assert not any(reports.is_image(m) for m in mimetypes(notebook))
    assert reports.is_lightened(notebook) and not reports.is_lightened(original)
    # every output is still there, in place and of its type; an image output now holds one line
    before, after = all_outputs(original), all_outputs(notebook)
    assert [o.output_type for o in after] == [o.output_type for o in before]
    for old, new in zip(before, after):
        if any(reports.is_image(m) for m in old.get("data", {})):
            assert new.data == {"text/plain": "[figure: elsewhere]"}
            assert new.get("execution_count") == old.get("execution_count")
            assert new.metadata == {k: v for k, v in old.metadata.items() if not k.startswith("image/")}
        else:
            assert new == old  # text, stream and markdown outputs untouched
    # sources, cells' and the notebook's other metadata untouched
    assert [(c.cell_type, c.source, c.metadata) for c in notebook.cells] == [
        (c.cell_type, c.source, c.metadata) for c in original.cells]
    assert {k: v for k, v in notebook.metadata.items() if k != "capslib"} == original.metadata
    nbformat.validate(notebook)


def test_report_is_nbconverts_html_then_the_notebook_is_lightened(study, tmp_path):
    executed = study["notebook"]
    expected = nbconvert(executed, tmp_path / "cli", "--no-input")
    expected_with_code = nbconvert(executed, tmp_path / "cli" / "with-code")
    run_report(study)
    # the reports: the same bytes as the command line wrote from the executed notebook, figures in them
    assert (study["html"] / "report.html").read_bytes() == expected
    assert (study["with_code"] / "report.html").read_bytes() == expected_with_code
    assert len(re.findall(rb'<img[^>]*\ssrc="data:image/png;base64,', expected)) == 2 and b"data:image/svg+xml" in expected
    # the notebook: no image left; each figure's line names the report, and the saved PNG of the same bytes
    notebook = nbformat.read(executed, as_version=4)
    assert reports.is_lightened(notebook) and not any(reports.is_image(m) for m in mimetypes(notebook))
    lines = [text for o in all_outputs(notebook) if (text := o.get("data", {}).get("text/plain", "")).startswith("[figure")]
    report = (study["html"] / "report.html").as_posix()
    assert len(lines) == 3 and all(report in line for line in lines)
    assert study["figures"].joinpath("curve.png").as_posix() in lines[0]
    assert not any("figures/" in line for line in lines[1:])  # saved nowhere: only the report is named
    assert "epoch 1\n" in [o.get("text") for o in all_outputs(notebook)]


def test_a_lightened_notebook_is_not_rendered_again(study):
    run_report(study)
    report = study["html"] / "report.html"
    report.write_text(report.read_text() + "<!-- as committed -->")
    lightened = study["notebook"].read_bytes()
    message = run_report(study)
    assert report.read_text().endswith("<!-- as committed -->")  # not overwritten by a page without figures
    assert study["notebook"].read_bytes() == lightened
    assert message.startswith("kept")


def test_a_re_executed_notebook_is_rendered_and_lightened_again(study):
    run_report(study)
    report = study["html"] / "report.html"
    rendered = report.read_bytes()
    report.write_text("an old report")
    study["notebook"].write_bytes(study["executed"])  # papermill writes it afresh: unmarked, with its figures
    run_report(study)
    assert report.read_bytes() == rendered
    assert reports.is_lightened(nbformat.read(study["notebook"], as_version=4))


def test_a_lightened_notebook_without_its_report_is_an_error(study):
    run_report(study)
    (study["html"] / "report.html").unlink()
    with pytest.raises(CapslibError, match=r"is lightened .*report\.html is missing"):
        run_report(study)
    assert not (study["html"] / "report.html").exists()


# ---------------------------------------------------------------------------------------------
# the command line


def test_a_missing_notebook_is_one_line_naming_it(study, tmp_path):
    missing = tmp_path / "notebooks" / "06_summary.ipynb"
    done = subprocess.run([sys.executable, "-m", "capslib", "report", str(study["notebook"]), str(missing),
                           "--html-dir", str(study["html"])], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and "Traceback" not in done.stderr, done.stderr
    assert not study["html"].exists() and study["notebook"].read_bytes() == study["executed"]  # nothing done


def test_the_command_line_renders_and_lightens(study, capsys):
    argv = ["report", str(study["notebook"]), "--html-dir", str(study["html"]), "--figures-dir", str(study["figures"])]
    assert main(argv) == 0
    assert (study["html"] / "report.html").is_file() and not study["with_code"].exists()
    assert "curve.png" in study["notebook"].read_text()
    (study["html"] / "report.html").unlink()
    assert main(argv) == 2
    assert capsys.readouterr().err.count("\n") == 1
