"""The committed tables agree with the committed run logs: rebuilding them from results/<study>/<run>
gives the same numbers, so a table cannot drift from the runs it summarises (and docs quote the tables:
`make docs` / `cog --check`, see tests/test_docs.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from capslib.study import notebook, studies, summaries

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


def test_comparison_tables_are_the_logs(monkeypatch):
    monkeypatch.chdir(REPO)
    official = notebook.logged_runs("results", "official")
    routing3 = dict(dataset="mnist", model="capsnet", routing_iterations=3, reconstruction=True)
    groups = {"official_60k": [official, notebook.logged_runs("results", "official-60k")],
              "precision": [notebook.logged_runs("results", "validated", **routing3),
                            notebook.logged_runs("results", "precision")]}
    for name, runs in groups.items():
        table = summaries.comparison_table(dict(zip(committed(name).runs_of, runs)))
        pd.testing.assert_frame_equal(rebuilt(table), committed(name))


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
