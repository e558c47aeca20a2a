"""Tables of results: one row per run, one per configuration (mean ± std over seeds) beside the
paper's Table 1, written as CSV and Markdown."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .files import atomic_write_text
from .runs import Run, find_runs

# MNIST test error in %, mean and standard deviation (Sabour, Frosst, Hinton 2017, Table 1).
PAPER_TABLE1 = {
    "baseline CNN": (0.39, None),
    "routing 1, no reconstruction": (0.34, 0.032),
    "routing 1, reconstruction": (0.29, 0.011),
    "routing 3, no reconstruction": (0.35, 0.036),
    "routing 3, reconstruction": (0.25, 0.005),
}
# The TensorFlow study this project follows: best test accuracy 99.74% (routing 3 + reconstruction).
SEED_STUDY_ERROR = {("mnist", "routing 3, reconstruction"): 0.26}
# A widely cited CapsNet Fashion-MNIST result: 93.6% test accuracy.
FASHION_REFERENCE_ERROR = {("fashion-mnist", "routing 3, reconstruction"): 6.4}

CONFIGURATION_ORDER = list(PAPER_TABLE1)
DATASET_ORDER = ["mnist", "fashion-mnist"]


RUN_COLUMNS = ["dataset", "configuration", "seed", "epochs", "final_test_error", "best_test_error", "best_epoch",
               "mean_epoch_seconds", "wall_seconds", "device", "software", "commit", "date", "command", "run"]
SUMMARY_COLUMNS = ["dataset", "configuration", "runs", "epochs", "final_error_mean", "final_error_std",
                   "best_error_mean", "best_error_std", "paper_error", "paper_std", "other_reference_error",
                   "gap_to_paper"]


def run_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: its final and best test error (%) and where it came from."""
    rows = []
    for run in runs:
        h, session = run.history, run.info.get("sessions", [{}])[-1]
        if h.empty:
            continue
        best = h.loc[h.test_accuracy.idxmax()]
        rows.append({
            "dataset": run.config.dataset, "configuration": run.label, "seed": run.config.seed,
            "epochs": int(h.epoch.iloc[-1]), "final_test_error": round(float(h.test_error.iloc[-1]), 3),
            "best_test_error": round(float(best.test_error), 3), "best_epoch": int(best.epoch),
            "mean_epoch_seconds": round(float(h.epoch_seconds.mean()), 2),
            "wall_seconds": round(float(h.wall_seconds.iloc[-1]), 1),
            "device": session.get("device"), "software": session.get("software"),
            "commit": session.get("commit"), "date": session.get("date"), "command": session.get("command"),
            "run": str(run.folder),
        })
    table = pd.DataFrame(rows, columns=RUN_COLUMNS)
    if table.empty:
        return table
    order = {**{c: i for i, c in enumerate(CONFIGURATION_ORDER)}, **{d: i for i, d in enumerate(DATASET_ORDER)}}
    return table.sort_values(["dataset", "configuration", "seed"],
                             key=lambda col: col if col.name == "seed" else col.map(order), ignore_index=True)


def summary_table(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and configuration: mean ± sample std (ddof=1) of the final and best test error."""
    rows = []
    for (dataset, configuration), group in per_run.groupby(["dataset", "configuration"], sort=False):
        paper = PAPER_TABLE1.get(configuration, (None, None)) if dataset == "mnist" else (None, None)
        reference = {**SEED_STUDY_ERROR, **FASHION_REFERENCE_ERROR}.get((dataset, configuration))
        rows.append({
            "dataset": dataset, "configuration": configuration, "runs": len(group),
            "epochs": "/".join(str(e) for e in sorted(group.epochs.unique())),
            "final_error_mean": _round(group.final_test_error.mean()),
            "final_error_std": _round(group.final_test_error.std(ddof=1)),
            "best_error_mean": _round(group.best_test_error.mean()),
            "best_error_std": _round(group.best_test_error.std(ddof=1)),
            "paper_error": paper[0], "paper_std": paper[1], "other_reference_error": reference,
            "gap_to_paper": _round(group.final_test_error.mean() - paper[0]) if paper[0] is not None else None,
        })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _round(value: float, digits: int = 3):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), digits)


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub Markdown table (no extra dependency such as tabulate)."""
    def cell(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        return " ".join(str(value).split()).replace("|", "\\|")  # one line, pipes escaped

    lines = ["| " + " | ".join(cell(c) for c in table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, stem: Path | str, title: str, note: str = "") -> None:
    """`stem`.csv and `stem`.md (a title, an optional note, then the table)."""
    stem = Path(stem)
    atomic_write_text(stem.with_suffix(".csv"), table.to_csv(index=False))
    atomic_write_text(stem.with_suffix(".md"), f"# {title}\n\n" + (f"{note}\n\n" if note else "") + markdown_table(table))


def write_result_tables(runs_dir: Path | str, tables_dir: Path | str, pattern: str = "*"
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rebuild runs.{csv,md} and summary.{csv,md} in `tables_dir` from every run under `runs_dir`.

    Rebuilt from the run folders each time (never appended), so concurrent or repeated calls agree."""
    per_run = run_table([r for r in find_runs(runs_dir, pattern) if r.info.get("status") == "complete"])
    summary = summary_table(per_run)
    tables_dir = Path(tables_dir)
    write_table(per_run, tables_dir / "runs", "Test error of every run (%)",
                "final = the last epoch's test error; best = the lowest over all epochs (selected on the "
                "test set, shown for comparison only). Provenance: each run's command, commit, device, "
                "software and date; per-epoch logs in the run folder.")
    write_table(summary, tables_dir / "summary", "Test error per configuration (%), mean ± sample std over seeds",
                "paper = Sabour et al. 2017, Table 1 (MNIST); other_reference = the TensorFlow study's 99.74% "
                "(MNIST, routing 3 + reconstruction) or the widely cited CapsNet Fashion-MNIST 93.6%. "
                "gap_to_paper = our mean final error minus the paper's.")
    return per_run, summary
