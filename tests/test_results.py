"""The committed tables agree with the committed run logs: rebuilding them from results/<study>/<run>
gives the same numbers, so a table cannot drift from the runs it summarises (and docs quote the tables:
`make docs` / `cog --check`, see tests/test_docs.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from capslib.study import notebook, studies, summaries, tables

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results"
TABLES = RESULTS / "tables"


def committed(name: str) -> pd.DataFrame:
    return pd.read_csv(TABLES / f"{name}.csv")


def rebuilt(table: pd.DataFrame) -> pd.DataFrame:
    """A table as its CSV reads back (the same dtypes as `committed`)."""
    return pd.read_csv(pd.io.common.StringIO(table.to_csv(index=False)))


def test_runs_summary_and_pairwise_tables_are_the_logs(monkeypatch):
    monkeypatch.chdir(REPO)  # the tables name each run by its folder relative to the repository
    runs = [notebook.logged_runs("results", study) for study in studies.TABLE1_STUDIES]
    per_run = summaries.run_table([run for group in runs for run in group])
    pd.testing.assert_frame_equal(rebuilt(per_run), committed("runs"))
    pd.testing.assert_frame_equal(rebuilt(summaries.summary_table(per_run)), committed("summary"))
    pd.testing.assert_frame_equal(rebuilt(summaries.pairwise_table(per_run)), committed("pairwise"))


def test_ablation_tables_are_the_logs(monkeypatch):
    monkeypatch.chdir(REPO)
    per_run, summary = summaries.ablation_tables(notebook.logged_runs("results", "ablation"))
    pd.testing.assert_frame_equal(rebuilt(per_run), committed("ablation"))
    pd.testing.assert_frame_equal(rebuilt(summary), committed("ablation_summary"))


def comparison_groups(name: str) -> dict:
    """The logged runs that 07_ablation compares in the table `name`, by the label each group has there."""
    routing3 = dict(dataset="mnist", model="capsnet", routing_iterations=3, reconstruction=True)
    runs = {"official_60k": [notebook.logged_runs("results", "official"), notebook.logged_runs("results", "official-60k")],
            "precision": [notebook.logged_runs("results", "validated", **routing3),
                          notebook.logged_runs("results", "precision")]}[name]
    return dict(zip(committed(name).runs_of, runs))


def test_comparison_tables_are_the_logs(monkeypatch):
    monkeypatch.chdir(REPO)
    for name in ("official_60k", "precision"):
        table = summaries.comparison_table(comparison_groups(name))
        pd.testing.assert_frame_equal(rebuilt(table), committed(name))


# ---------------------------------------------------------------------------------------------
# The Markdown beside each CSV: docs/results.md and README.md quote the .md tables (quotes.markdown), so
# a cell edited there (or a .md left from an older CSV) would reach the docs with every CSV still right.

# What each .md shows where it is not its CSV as written (tables.write_table's `readable`): rebuilt as the
# notebook that writes it builds it, from the committed CSV of its runs or, for the comparisons, which
# format unrounded means, from the run logs.
READABLE = {
    "tables/summary": lambda: tables.table1(committed("runs")),
    "tables/fashion_summary": lambda: tables.table1(committed("fashion_runs")),
    "tables/pairwise": lambda: tables.pairwise_readable(summaries.pairwise_table(committed("runs"), None)),
    "tables/official_60k": lambda: tables.comparison_readable(summaries.comparison_table(comparison_groups("official_60k"), None)),
    "tables/precision": lambda: tables.comparison_readable(summaries.comparison_table(comparison_groups("precision"), None)),
}
MARKDOWN_TABLES = sorted(p for p in RESULTS.rglob("*.md") if p.name != "README.md")


def table_cells(markdown: str) -> list[list[str]]:
    """The header and body rows of the Markdown table in `markdown`, cell by cell (the rule line, which
    only aligns, left out)."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines[:1] + lines[2:]]


def same_cell(shown: str, expected: str) -> bool:
    """Equal text, or the same number printed with other padding (3 beside 3.0, 0.179 beside 0.1790):
    the .md of an older writer may pad differently; a different value is never the same cell."""
    try:
        return float(shown.replace(",", "")) == float(expected.replace(",", ""))
    except ValueError:
        return shown == expected


def test_every_markdown_table_has_its_csv():
    assert len(MARKDOWN_TABLES) >= 16
    for path in MARKDOWN_TABLES:
        assert path.with_suffix(".csv").is_file(), f"{path.relative_to(REPO)} has no CSV to be checked against"
    assert set(READABLE) <= {str(p.relative_to(RESULTS).with_suffix("")) for p in MARKDOWN_TABLES}


@pytest.mark.parametrize("path", MARKDOWN_TABLES, ids=lambda p: str(p.relative_to(RESULTS)))
def test_every_markdown_table_shows_what_its_csv_and_logs_say(path, monkeypatch):
    monkeypatch.chdir(REPO)
    stem = str(path.relative_to(RESULTS).with_suffix(""))
    expected = READABLE[stem]() if stem in READABLE else pd.read_csv(path.with_suffix(".csv"))
    shown, wanted = table_cells(path.read_text()), table_cells(tables.markdown_table(expected))
    assert shown[0] == wanted[0], f"{path.name}: its columns are not its CSV's"
    assert len(shown) == len(wanted), f"{path.name}: {len(shown) - 1} rows, its CSV {len(wanted) - 1}"
    for number, (row, want) in enumerate(zip(shown[1:], wanted[1:]), 1):
        for column, a, b in zip(wanted[0], row, want):
            assert same_cell(a, b), f"{path.name}, row {number}, {column}: {a!r}, its CSV and logs say {b!r} (make tables)"


def test_every_committed_run_of_a_declared_study_is_finished():
    """A fresh clone's sweeps find every committed study done: its logs say so (no checkpoint needed)."""
    from capslib.study.sweep import finished_run

    for study in ("table1", "validated", "official", "ablation"):
        configs = studies.study_runs(study, [1, 2, 3], REPO / "runs", RESULTS)
        unfinished = [c.log_dir for c in configs if finished_run(c) is None]
        assert unfinished == [], (study, unfinished)


def test_other_experiment_tables_are_the_logs(monkeypatch, tmp_path):
    """MultiMNIST and affine tables, for whichever of the two has committed runs."""
    from capslib.study import tables

    monkeypatch.chdir(REPO)
    runs = {study: notebook.logged_runs("results", study) for study in ("multimnist", "affine")}
    written = tables.write_other_experiment_tables(runs["multimnist"], runs["affine"], tmp_path)
    assert set(written) == {name for name in ("multimnist", "multimnist_runs", "affine", "affine_summary")
                            if (TABLES / f"{name}.csv").exists()}
    for name, table in written.items():
        pd.testing.assert_frame_equal(rebuilt(table), committed(name))
