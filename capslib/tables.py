"""Tables of results: one row per run, one per configuration (mean ± std over seeds) beside the
paper's Table 1, written as CSV (every number, for machines) and Markdown; and the same tables
formatted for a reader (mean ± std, plain headers, no index, no NaN), as the notebooks show them."""

from __future__ import annotations

import math
import re
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


def summary_table(per_run: pd.DataFrame, digits: int | None = 3) -> pd.DataFrame:
    """Per dataset and configuration: mean ± sample std (ddof=1) of the final and best test error,
    rounded to `digits` (None: not rounded, for formatting without rounding twice)."""
    rows = []
    for (dataset, configuration), group in per_run.groupby(["dataset", "configuration"], sort=False):
        paper = PAPER_TABLE1.get(configuration, (None, None)) if dataset == "mnist" else (None, None)
        reference = {**SEED_STUDY_ERROR, **FASHION_REFERENCE_ERROR}.get((dataset, configuration))
        rows.append({
            "dataset": dataset, "configuration": configuration, "runs": len(group),
            "epochs": "/".join(str(e) for e in sorted(group.epochs.unique())),
            "final_error_mean": _round(group.final_test_error.mean(), digits),
            "final_error_std": _round(group.final_test_error.std(ddof=1), digits),
            "best_error_mean": _round(group.best_test_error.mean(), digits),
            "best_error_std": _round(group.best_test_error.std(ddof=1), digits),
            "paper_error": paper[0], "paper_std": paper[1], "other_reference_error": reference,
            "gap_to_paper": _round(group.final_test_error.mean() - paper[0], digits) if paper[0] is not None else None,
        })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _round(value: float, digits: int | None = 3):
    if _missing(value):
        return None
    return float(value) if digits is None else round(float(value), digits)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _decimals(value: float) -> int:
    text = repr(float(value))
    return 0 if "e" in text or text.endswith(".0") else len(text.split(".")[1])


def _aligned_floats(column: pd.Series) -> pd.Series:
    """A float column as text with as many decimals as its most precise value (at most 6), so
    that 64.8 prints as 64.80 beside 68.64, and a count that NaN made a float (35.0) as 35."""
    values = [v for v in column if not _missing(v)]
    digits = min(6, max((_decimals(v) for v in values), default=0))
    return column.map(lambda v: None if _missing(v) else f"{v:.{digits}f}")


def markdown_table(table: pd.DataFrame, right: tuple[str, ...] = ()) -> str:
    """A GitHub Markdown table (no extra dependency such as tabulate); the columns named in
    `right` are right-aligned (numbers)."""
    def cell(value) -> str:
        if _missing(value):
            return ""
        return " ".join(str(value).split()).replace("|", "\\|")  # one line, pipes escaped

    table = table.apply(lambda column: _aligned_floats(column) if column.dtype.kind == "f" else column)
    rule = "|" + "".join("---:|" if c in right else "---|" for c in table.columns)
    lines = ["| " + " | ".join(cell(c) for c in table.columns) + " |", rule]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, stem: Path | str, title: str, note: str = "",
                readable: pd.DataFrame | None = None) -> None:
    """`stem`.csv (`table`) and `stem`.md (a title, an optional note, then `readable`, a formatted
    version of the table, or `table` itself)."""
    stem = Path(stem)
    shown = table if readable is None else readable
    atomic_write_text(stem.with_suffix(".csv"), table.to_csv(index=False))
    atomic_write_text(stem.with_suffix(".md"), f"# {title}\n\n" + (f"{note}\n\n" if note else "")
                      + markdown_table(shown, right=numeric_columns(shown)))


SUMMARY_NOTE = ("final = the last epoch's test error, mean ± sample standard deviation over seeds; best epoch = the "
                "lowest error over all epochs (selected on the test set, shown for comparison only); paper = Sabour "
                "et al. 2017, Table 1 (MNIST); gap = our mean final error minus the paper's. Other references: the "
                "TensorFlow study this project follows reports 0.26% (99.74% accuracy, its best, MNIST routing 3 + "
                "reconstruction); a widely cited CapsNet Fashion-MNIST result is 6.4% (93.6% accuracy).")


def write_result_tables(runs_dir: Path | str, tables_dir: Path | str, pattern: str = "*", prefix: str = ""
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rebuild <prefix>runs.{csv,md} and <prefix>summary.{csv,md} in `tables_dir` from the complete
    runs `runs_dir`/`pattern`.

    Rebuilt from the run folders each time (never appended), so concurrent or repeated calls agree."""
    per_run = run_table([r for r in find_runs(runs_dir, pattern) if r.info.get("status") == "complete"])
    summary = summary_table(per_run)
    tables_dir = Path(tables_dir)
    write_table(per_run, tables_dir / f"{prefix}runs", "Test error of every run (%)",
                "final = the last epoch's test error; best = the lowest over all epochs (selected on the "
                "test set, shown for comparison only). Provenance: each run's command, commit, device, "
                "software and date; per-epoch logs in the run folder.")
    write_table(summary, tables_dir / f"{prefix}summary", "Test error per configuration (%), mean ± sample std over seeds",
                SUMMARY_NOTE, readable=table1(per_run))
    return per_run, summary


# ---------------------------------------------------------------------------------------------
# Formatted for a reader: what the notebooks show and the .md files hold


DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
NONE = "—"  # a value that does not exist (the paper has no Fashion-MNIST row), not a missing number


def mean_std(mean, std, digits: int = 2) -> str:
    """'0.38 ± 0.03'; just the mean when there is no spread (one seed); '' when there is no mean."""
    if _missing(mean):
        return ""
    return f"{mean:.{digits}f}" if _missing(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def numeric_columns(table: pd.DataFrame) -> tuple[str, ...]:
    """Columns whose every value is a number or a formatted one ('0.38 ± 0.03', '0.34 (37)', '+0.13')."""
    number = r"[+−-]?[0-9][0-9,.]*( ± [0-9.]+)?( \([0-9]+\))?"
    blank = {"", NONE}
    def numeric(column: pd.Series) -> bool:
        if column.dtype.kind in "iuf":
            return True
        return (not column.map(lambda v: _missing(v) or v in blank).all()
                and column.map(lambda v: _missing(v) or v in blank or bool(re.fullmatch(number, str(v)))).all())

    return tuple(c for c in table.columns if len(table) and numeric(table[c]))


def table1(per_run: pd.DataFrame) -> pd.DataFrame:
    """The runs summarised beside the paper's Table 1, formatted: one row per dataset and
    configuration (from unrounded means and deviations, so that nothing is rounded twice)."""
    rows = []
    for r in summary_table(per_run, digits=None).to_dict("records"):
        paper = NONE if _missing(r["paper_error"]) else (
            f"{r['paper_error']}" + ("" if _missing(r["paper_std"]) else f" ± {r['paper_std']}"))
        rows.append({
            "dataset": DATASET_NAMES.get(r["dataset"], r["dataset"]), "configuration": r["configuration"],
            "seeds": r["runs"], "epochs": r["epochs"],
            "final error (%)": mean_std(r["final_error_mean"], r["final_error_std"]),
            "best epoch (%)": mean_std(r["best_error_mean"], r["best_error_std"]),
            "paper (%)": paper,
            "gap to paper": NONE if _missing(r["gap_to_paper"]) else f"{r['gap_to_paper']:+.2f}",
        })
    return pd.DataFrame(rows, columns=["dataset", "configuration", "seeds", "epochs", "final error (%)",
                                       "best epoch (%)", "paper (%)", "gap to paper"])


def _short_device(device) -> str:
    """'1x NVIDIA H100 80GB HBM3' → 'H100 80GB HBM3': the column stays one line wide."""
    return "" if _missing(device) else str(device).removeprefix("1x ").removeprefix("NVIDIA ")


def runs_overview(per_run: pd.DataFrame) -> pd.DataFrame:
    """Every run, formatted: final and best test error, time, device and commit (the full
    provenance, with the exact command, is in runs.md)."""
    table = pd.DataFrame({
        "dataset": per_run.dataset.map(lambda d: DATASET_NAMES.get(d, d)),
        "configuration": per_run.configuration, "seed": per_run.seed, "epochs": per_run.epochs,
        "final error (%)": per_run.final_test_error.map(lambda e: f"{e:.2f}"),
        "best (epoch)": [f"{e:.2f} ({n})" for e, n in zip(per_run.best_test_error, per_run.best_epoch)],
        "s / epoch": per_run.mean_epoch_seconds.map(lambda s: f"{s:.1f}"),
        "minutes": per_run.wall_seconds.map(lambda s: f"{s / 60:.1f}"),
        "device": per_run.device.map(_short_device), "commit": per_run.commit.fillna(""),
    })
    return table.reset_index(drop=True)


def training_time(per_run: pd.DataFrame) -> pd.DataFrame:
    """Training wall time per dataset and configuration, all seeds together, and in all."""
    groups = per_run.groupby(["dataset", "configuration"], sort=False)
    table = pd.DataFrame({"dataset": [DATASET_NAMES.get(d, d) for d, _ in groups.groups],
                          "configuration": [c for _, c in groups.groups],
                          "runs": groups.size().values, "minutes": groups.wall_seconds.sum().values / 60})
    table.loc[len(table)] = ["all", "", len(per_run), per_run.wall_seconds.sum() / 60]
    table["minutes"] = table.minutes.map(lambda m: f"{m:.1f}")
    return table


def show(table: pd.DataFrame, note: str = ""):
    """`table` as a notebook output: a Markdown table (plain headers: zero_fraction → zero fraction;
    numbers right-aligned; no index), then `note`."""
    from IPython.display import Markdown
    table = table.rename(columns=lambda c: str(c).replace("_", " "))
    return Markdown(markdown_table(table, right=numeric_columns(table)) + (f"\n{note}\n" if note else ""))
