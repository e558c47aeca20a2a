"""The docs: README.md is page one (short, and every link in it and in docs/ leads somewhere), and every
number they quote is what capslib/study/quotes.py computes from the committed tables today (cog)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from cogapp import Cog

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def makefile_variable(name: str) -> str:
    (line,) = [line for line in (REPO / "Makefile").read_text().splitlines() if line.startswith(f"{name} :=")]
    return line.split(":=", 1)[1].strip()


def test_every_quoted_number_is_generated_from_the_tables():
    # what `make docs` runs with -r, run with --check: a stale number fails here (make docs fixes it)
    argv = ["cog", "--check", "--diff", *shlex.split(makefile_variable("COG_FLAGS")), *map(str, DOCS)]
    assert Cog().main(argv) == 0


def test_the_readme_is_page_one():
    text = (REPO / "README.md").read_text()
    assert len(text) <= 10_000
    # the status and the headline table come first, before any set-up detail
    assert text.index("is not reproduced") < text.index("## Table 1") < text.index("make setup")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_relative_link_leads_somewhere(path):
    for target in re.findall(r"\]\(([^)#\s]+)", path.read_text()):
        if "://" in target:
            continue
        assert (path.parent / target).exists(), f"{path.name} links to {target}, which does not exist"


def test_what_the_docs_say_of_the_laptop_profile_is_what_its_committed_run_did():
    # README and docs/running.md say `make laptop` trains a CapsNet past 99% in about a quarter of an hour
    from capslib.study import quotes
    from capslib.study.profiles import PROFILES

    run = quotes.laptop()
    assert run["accuracy"] >= 99.0 and run["minutes"] <= 15
    assert run["epochs"] == PROFILES["laptop"].epochs and run["device"].startswith("CPU")
    for path in (REPO / "README.md", REPO / "docs" / "running.md"):
        assert "make laptop" in path.read_text()


def test_the_headline_tables_official_column_is_the_official_runs_of_each_row():
    from capslib.study import quotes as q

    runs = q.table("runs")
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in q.headline_table().splitlines()[2:]}
    for configuration in q.paper.TABLE1:
        trained = runs[(runs.dataset == "mnist") & (runs.configuration == configuration) & (runs.recipe == "official")
                       & (runs.validation_images == 10_000)]
        cell = rows[configuration][3]
        if trained.empty:
            assert cell == q.NOT_RUN
        else:
            selected = trained.selected_test_error
            assert cell.startswith(f"{selected.mean():.2f} ± {selected.std(ddof=1):.2f} (final ")
