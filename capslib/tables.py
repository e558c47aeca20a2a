"""Tables of results: one row per run, one per configuration (mean ± std over seeds) beside the
paper's Table 1, written as CSV (every number, for machines) and Markdown; and the same tables
formatted for a reader (mean ± std, plain headers, no index, no NaN), as the notebooks show them."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from .config import COMPONENTS
from .errors import RunFolderError
from .files import atomic_write_text
from .runs import Run, find_runs, selection

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


RUN_COLUMNS = ["dataset", "configuration", "recipe", "validation_images", "seed", "epochs", "final_test_error",
               "selected_test_error", "selected_epoch", "best_test_error", "best_epoch",
               "mean_epoch_seconds", "wall_seconds", "device", "gpu", "software", "commit", "date", "command", "run"]
SUMMARY_COLUMNS = ["dataset", "configuration", "recipe", "validation_images", "runs", "epochs",
                   "final_error_mean", "final_error_std", "selected_error_mean", "selected_error_std",
                   "best_error_mean", "best_error_std", "paper_error", "paper_std", "other_reference_error",
                   "gap_to_paper"]


def run_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: its final, validation-selected and best-on-test error (%) and where it came from."""
    rows = []
    for run in runs:
        h, session = run.history, run.info.get("sessions", [{}])[-1]
        if h.empty:
            continue
        chosen = selection(h)
        rows.append({
            "dataset": run.config.dataset, "configuration": run.label, "recipe": run.config.variant(),
            "validation_images": run.config.validation_size, "seed": run.config.seed,
            "epochs": int(h.epoch.iloc[-1]), "final_test_error": _round(chosen["final_test_error"]),
            "selected_test_error": _round(chosen["selected_test_error"]), "selected_epoch": chosen["selected_epoch"],
            "best_test_error": _round(chosen["best_test_error"]), "best_epoch": chosen["best_epoch"],
            "mean_epoch_seconds": round(float(h.epoch_seconds.mean()), 2),
            "wall_seconds": round(float(h.wall_seconds.iloc[-1]), 1),
            "device": session.get("device"), "gpu": session.get("gpu"), "software": session.get("software"),
            "commit": session.get("commit"), "date": session.get("date"), "command": session.get("command"),
            "run": str(run.folder),
        })
    table = pd.DataFrame(rows, columns=RUN_COLUMNS)
    if table.empty:
        return table
    order = {**{c: i for i, c in enumerate(CONFIGURATION_ORDER)}, **{d: i for i, d in enumerate(DATASET_ORDER)}}
    return table.sort_values(["dataset", "configuration", "recipe", "validation_images", "seed"],
                             key=lambda col: col.map(order) if col.name in ("dataset", "configuration") else col,
                             ignore_index=True)


def summary_table(per_run: pd.DataFrame, digits: int | None = 3) -> pd.DataFrame:
    """Per dataset, configuration, recipe and validation split: mean ± sample std (ddof=1) over seeds
    of the final, validation-selected and best-on-test error, rounded to `digits` (None: not
    rounded, for formatting without rounding twice)."""
    rows = []
    keys = ["dataset", "configuration", "recipe", "validation_images"]
    for (dataset, configuration, recipe, validation), group in per_run.groupby(keys, sort=False):
        paper = PAPER_TABLE1.get(configuration, (None, None)) if dataset == "mnist" else (None, None)
        reference = {**SEED_STUDY_ERROR, **FASHION_REFERENCE_ERROR}.get((dataset, configuration))
        rows.append({
            "dataset": dataset, "configuration": configuration, "recipe": recipe, "validation_images": validation,
            "runs": len(group), "epochs": "/".join(str(e) for e in sorted(group.epochs.unique())),
            "final_error_mean": _round(group.final_test_error.mean(), digits),
            "final_error_std": _round(group.final_test_error.std(ddof=1), digits),
            "selected_error_mean": _round(group.selected_test_error.astype(float).mean(), digits),
            "selected_error_std": _round(group.selected_test_error.astype(float).std(ddof=1), digits),
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


# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (standard tables); beyond 30 the
# normal 1.96 (slightly narrow). The ablation compares 3 seeds with 3 seeds: 4 degrees of freedom.
T_975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def difference_interval(values, base) -> tuple[float, float, float]:
    """mean(values) − mean(base) and its 95% confidence interval (two-sample t, pooled variance); NaN
    where a side has no value (runs without a validation split have no selected error), and an
    interval of NaN where there are too few values for one."""
    a, b = pd.Series(values, dtype=float).dropna(), pd.Series(base, dtype=float).dropna()
    if a.empty or b.empty:
        return math.nan, math.nan, math.nan
    difference = a.mean() - b.mean()
    df = len(a) + len(b) - 2
    if df < 1:
        return difference, math.nan, math.nan
    pooled = ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / df
    half = (T_975[df - 1] if df <= len(T_975) else 1.96) * math.sqrt(pooled * (1 / len(a) + 1 / len(b)))
    return difference, difference - half, difference + half


ABLATION_RUN_COLUMNS = ["variant", "base", "component", "change", "seed", "epochs", "final_test_error",
                        "selected_test_error", "selected_epoch", "best_test_error", "run"]
ABLATION_SUMMARY_COLUMNS = ["variant", "base", "component", "change", "runs", "final_mean", "final_std",
                            "final_vs_base", "final_vs_base_low", "final_vs_base_high", "selected_mean", "selected_std",
                            "selected_vs_base", "selected_vs_base_low", "selected_vs_base_high", "best_mean"]


def ablation_tables(runs: list[Run]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ablation per run, and per variant: mean ± std over seeds of the final and the
    validation-selected test error, and each variant's difference from its base recipe with a 95%
    interval (an interval that excludes 0 is a difference three seeds can see)."""
    rows = []
    for run in runs:
        variant, chosen = run.config.variant(), selection(run.history)
        component = variant[len(run.config.recipe) + 1:] or "—"
        rows.append({"variant": variant, "base": run.config.recipe, "component": component,
                     "change": "" if component == "—" else ("added" if run.config.recipe == "paper" else "removed"),
                     "seed": run.config.seed, "epochs": int(run.history.epoch.iloc[-1]),
                     "final_test_error": _round(chosen["final_test_error"]),
                     "selected_test_error": _round(chosen["selected_test_error"]),
                     "selected_epoch": chosen["selected_epoch"], "best_test_error": _round(chosen["best_test_error"]),
                     "run": str(run.folder)})
    per_run = pd.DataFrame(rows, columns=ABLATION_RUN_COLUMNS)
    order = {name: i for i, name in enumerate(["—", *COMPONENTS])}
    per_run = per_run.sort_values(["base", "component", "seed"], key=lambda c: c.map(order) if c.name == "component"
                                  else (c.map({"paper": 0, "official": 1}) if c.name == "base" else c),
                                  ignore_index=True)
    summary = []
    for (variant, base, component, change), group in per_run.groupby(["variant", "base", "component", "change"],
                                                                     sort=False):
        base_runs = per_run[(per_run.base == base) & (per_run.component == "—")]
        summary.append({"variant": variant, "base": base, "component": component, "change": change,
                        **_against(group, None if component == "—" else base_runs)})
    return per_run, pd.DataFrame(summary, columns=ABLATION_SUMMARY_COLUMNS)


def _against(group: pd.DataFrame, base: pd.DataFrame | None) -> dict:
    """Runs, mean ± std of the final and the validation-selected error of a group of runs, its mean
    best-on-test error, and (given a base group) each mean's difference from the base's, 95% interval."""
    row = {"runs": len(group), "best_mean": _round(group.best_test_error.mean())}
    for column, name in (("final_test_error", "final"), ("selected_test_error", "selected")):
        values = group[column].astype(float)
        row[f"{name}_mean"], row[f"{name}_std"] = _round(values.mean()), _round(values.std(ddof=1))
        if base is not None:
            difference, low, high = difference_interval(values, base[column].astype(float))
            row.update({f"{name}_vs_base": _round(difference), f"{name}_vs_base_low": _round(low),
                        f"{name}_vs_base_high": _round(high)})
    return row


COMPARISON_COLUMNS = ["runs_of", "runs", "epochs", "final_mean", "final_std", "final_vs_base", "final_vs_base_low",
                      "final_vs_base_high", "selected_mean", "selected_std", "selected_vs_base", "selected_vs_base_low",
                      "selected_vs_base_high", "best_mean"]


def comparison_table(groups: dict[str, list[Run]]) -> pd.DataFrame:
    """One row per named group of completed runs (the first is the base): as the ablation's summary,
    each later group's difference from the base with a 95% interval. A group with no run is left out."""
    rows, base = [], None
    for label, runs in groups.items():
        per_run = run_table([r for r in runs if r.info.get("status") == "complete"])
        if per_run.empty:
            continue
        rows.append({"runs_of": label, "epochs": "/".join(str(e) for e in sorted(per_run.epochs.unique())),
                     **_against(per_run, base)})
        base = per_run if base is None else base
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def write_comparison_table(groups: dict[str, list[Run]], stem: Path | str, title: str, note: str) -> pd.DataFrame:
    """comparison_table(groups) as `stem`.csv and `stem`.md (formatted: comparison_readable)."""
    table = comparison_table(groups)
    write_table(table, stem, title, note + " *_vs_base = the group's mean minus the first group's, with a 95% "
                "interval (two-sample t, pooled variance).", readable=comparison_readable(table))
    return table


def comparison_readable(table: pd.DataFrame) -> pd.DataFrame:
    """A comparison table for a reader: mean ± std and the difference from the base with its interval."""
    def difference(row, name):
        if _missing(row[f"{name}_vs_base"]):
            return NONE
        return f"{row[f'{name}_vs_base']:+.2f} ({row[f'{name}_vs_base_low']:+.2f} … {row[f'{name}_vs_base_high']:+.2f})"

    return pd.DataFrame({
        "runs of": table.runs_of, "seeds": table.runs, "epochs": table.epochs,
        "final error (%)": [mean_std(m, s) for m, s in zip(table.final_mean, table.final_std)],
        "final vs the first (95% interval)": [difference(r, "final") for _, r in table.iterrows()],
        "selected on validation (%)": [mean_std(m, s) or NONE for m, s in zip(table.selected_mean, table.selected_std)],
        "selected vs the first": [difference(r, "selected") for _, r in table.iterrows()],
        "best on test (%)": [NONE if _missing(b) else f"{b:.2f}" for b in table.best_mean],
    })


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


SUMMARY_NOTE = ("final = the last epoch's test error, mean ± sample standard deviation over seeds; selected = the "
                "test error at the evaluation with the lowest validation error (runs that held the first 10,000 "
                "training images out); best epoch = the lowest error over all epochs (selected on the test set, "
                "shown for comparison only); paper = Sabour et al. 2017, Table 1 (MNIST); gap = our mean final "
                "error minus the paper's. Other references: the TensorFlow study this project follows reports "
                "0.26% (99.74% accuracy, its best, MNIST routing 3 + reconstruction); a widely cited CapsNet "
                "Fashion-MNIST result is 6.4% (93.6% accuracy).")


def write_result_tables(runs_dirs, tables_dir: Path | str, pattern: str = "*", prefix: str = ""
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rebuild <prefix>runs.{csv,md} and <prefix>summary.{csv,md} in `tables_dir` from the complete
    runs `runs_dirs`/`pattern` (one folder of runs or several).

    Rebuilt from the run folders each time (never appended), so concurrent or repeated calls agree."""
    folders = [runs_dirs] if isinstance(runs_dirs, (str, Path)) else list(runs_dirs)
    runs = [r for folder in folders for r in find_runs(folder, pattern) if r.info.get("status") == "complete"]
    per_run = run_table(runs)
    summary = summary_table(per_run)
    tables_dir = Path(tables_dir)
    write_table(per_run, tables_dir / f"{prefix}runs", "Test error of every run (%)",
                "final = the last epoch's test error; selected = the test error of the evaluation with the "
                "lowest validation error (runs with a validation split: the first validation_images training "
                "images held out); best = the lowest test error over all evaluations (selected on the test set, "
                "shown for comparison with the official evaluator only). recipe = paper, official, or a "
                "recipe with components added (+) or removed (-). Provenance: each run's command, commit, "
                "device, software and date; per-evaluation logs in the run folder.")
    write_table(summary, tables_dir / f"{prefix}summary", "Test error per configuration (%), mean ± sample std over seeds",
                SUMMARY_NOTE, readable=table1(per_run))
    return per_run, summary


def write_ablation_tables(runs_dir: Path | str, tables_dir: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ablation.{csv,md} (every run) and ablation_summary.{csv,md} (every variant) in `tables_dir`."""
    runs = [r for r in find_runs(runs_dir) if r.info.get("status") == "complete"]
    if not runs:
        raise RunFolderError(f"no completed ablation run under {runs_dir}: train them with `make ablation`")
    per_run, summary = ablation_tables(runs)
    tables_dir = Path(tables_dir)
    write_table(per_run, tables_dir / "ablation", "Ablation: test error of every run (%)",
                "Routing 3 + reconstruction, MNIST, every run trained on training images 10,001-60,000 with the "
                "first 10,000 held out for validation. final = after the last epoch; selected = at the "
                "evaluation with the lowest validation error; best = the lowest test error over all "
                "evaluations (selected on the test set: for comparison with the official evaluator only).")
    write_table(summary, tables_dir / "ablation_summary", "Ablation: each official choice added to the paper "
                "recipe, or removed from the official recipe (test error %, mean ± std over seeds)",
                "*_vs_base = the variant's mean minus its base recipe's, with a 95% interval "
                "(two-sample t, pooled variance, 3 + 3 seeds: 4 degrees of freedom).")
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
    """The runs summarised beside the paper's Table 1, formatted: one row per dataset, configuration,
    recipe and validation split (from unrounded means and deviations, so that nothing is rounded twice)."""
    rows = []
    for r in summary_table(per_run, digits=None).to_dict("records"):
        paper = NONE if _missing(r["paper_error"]) else (
            f"{r['paper_error']}" + ("" if _missing(r["paper_std"]) else f" ± {r['paper_std']}"))
        rows.append({
            "dataset": DATASET_NAMES.get(r["dataset"], r["dataset"]), "configuration": r["configuration"],
            "recipe": r["recipe"], "held out": f"{r['validation_images']:,}" if r["validation_images"] else NONE,
            "seeds": r["runs"], "epochs": r["epochs"],
            "final error (%)": mean_std(r["final_error_mean"], r["final_error_std"]),
            "selected on validation (%)": mean_std(r["selected_error_mean"], r["selected_error_std"]) or NONE,
            "best epoch (%)": mean_std(r["best_error_mean"], r["best_error_std"]),
            "paper (%)": paper,
            "gap to paper": NONE if _missing(r["gap_to_paper"]) else f"{r['gap_to_paper']:+.2f}",
        })
    return pd.DataFrame(rows, columns=["dataset", "configuration", "recipe", "held out", "seeds", "epochs",
                                       "final error (%)", "selected on validation (%)", "best epoch (%)",
                                       "paper (%)", "gap to paper"])


def _short_device(device) -> str:
    """'1x NVIDIA H100 80GB HBM3' → 'H100 80GB HBM3': the column stays one line wide."""
    return "" if _missing(device) else str(device).removeprefix("1x ").removeprefix("NVIDIA ")


def runs_overview(per_run: pd.DataFrame) -> pd.DataFrame:
    """Every run, formatted: final and best test error, time, device and commit (the full
    provenance, with the exact command, is in runs.md)."""
    table = pd.DataFrame({
        "dataset": per_run.dataset.map(lambda d: DATASET_NAMES.get(d, d)),
        "configuration": per_run.configuration, "recipe": per_run.recipe,
        "held out": per_run.validation_images.map(lambda n: f"{n:,}" if n else NONE),
        "seed": per_run.seed, "epochs": per_run.epochs,
        "final error (%)": per_run.final_test_error.map(lambda e: f"{e:.2f}"),
        "selected (epoch)": [NONE if _missing(e) else f"{e:.2f} ({int(n)})"
                             for e, n in zip(per_run.selected_test_error, per_run.selected_epoch)],
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


# ---------------------------------------------------------------------------------------------
# The paper's other experiments

# Section 6: MultiMNIST test error (%), an example correct iff both digits are the two longest capsules.
PAPER_MULTIMNIST = {"routing 3, reconstruction": 5.2, "baseline CNN": 8.1}
AFFINE_LABEL = "affNIST-style (generated)"


def multimnist_table(runs: list[Run]) -> pd.DataFrame:
    """Per configuration: the final MultiMNIST test error (%), mean ± sample std over seeds, beside the
    paper's, and the test pairs each run scored (its test images × test_pairs; the paper: 10M)."""
    per_run = run_table(runs)
    scored = {str(run.folder): run.info["test_images"] * run.config.test_pairs for run in runs}
    rows = []
    for configuration, group in per_run.groupby("configuration", sort=False):
        rows.append({"configuration": configuration, "runs": len(group),
                     "epochs": "/".join(str(e) for e in sorted(group.epochs.unique())),
                     "test_pairs_scored": "/".join(str(n) for n in sorted({scored[run] for run in group.run})),
                     "test_error_mean": _round(group.final_test_error.mean()),
                     "test_error_std": _round(group.final_test_error.std(ddof=1)),
                     "paper_error": PAPER_MULTIMNIST.get(configuration)})
    return pd.DataFrame(rows, columns=["configuration", "runs", "epochs", "test_pairs_scored", "test_error_mean",
                                       "test_error_std", "paper_error"])


def matched_target(runs: list[Run], cap: float | None = None) -> float:
    """The validation accuracy at which the affine study compares its models: the highest that every
    run reaches (the lowest of the runs' best validation accuracies), at most `cap`. Chosen on the
    validation split only."""
    best = [float(run.history.validation_accuracy.max()) for run in runs if not run.history.empty]
    if not best or any(math.isnan(b) for b in best):
        raise RunFolderError("matched accuracy needs runs with a validation split (validation_size > 0)")
    return min(min(best), cap) if cap is not None else min(best)


def matched_accuracy(runs: list[Run], target: float) -> pd.DataFrame:
    """Each run at the first evaluation whose validation accuracy reaches `target`: its expanded-MNIST
    test accuracy and its accuracy on the affNIST-style generated set (%), and the same after the
    last epoch. The two models are compared where they are equally good on (expanded) MNIST, as the
    paper compares them (99.23% and 99.22%)."""
    rows = []
    for run in runs:
        h = run.history.dropna(subset=["validation_accuracy"])
        reached = h[h.validation_accuracy >= target - 1e-12]
        at = reached.iloc[0] if len(reached) else None
        last = h.iloc[-1]
        rows.append({"configuration": run.label, "seed": run.config.seed, "target_validation_accuracy": 100 * target,
                     "epoch": None if at is None else int(at.epoch),
                     "validation_accuracy": None if at is None else _round(100 * at.validation_accuracy),
                     "expanded_test_accuracy": None if at is None else _round(100 * at.test_accuracy),
                     "affine_accuracy": None if at is None else _round(100 * at.affine_accuracy),
                     "final_expanded_test_accuracy": _round(100 * last.test_accuracy),
                     "final_affine_accuracy": _round(100 * last.affine_accuracy), "epochs": int(last.epoch)})
    return pd.DataFrame(rows)


def write_other_experiment_tables(multimnist_runs: list[Run], affine_runs: list[Run], tables_dir: Path | str,
                                  target_cap: float | None = None) -> dict[str, pd.DataFrame]:
    """multimnist.{csv,md} and affine.{csv,md} (per run at the matched accuracy) in `tables_dir`, for
    whichever of the two studies has runs."""
    tables_dir, written = Path(tables_dir), {}
    if multimnist_runs:
        table = multimnist_table(multimnist_runs)
        write_table(table, tables_dir / "multimnist", "MultiMNIST test error (%), mean ± sample std over seeds",
                    "An example is correct iff its two labels are the two longest capsules (the baseline: the two "
                    "highest logits); test set: generated.MultiMNISTSet, fixed seed, test_pairs pairs per test "
                    "image (the study: 100, 1M pairs; the paper's 1,000 = 10M pairs: capslib evaluate "
                    "--test-pairs 1000); test_pairs_scored: each run's test images × test_pairs. "
                    "paper = Sabour et al. 2017, section 6.")
        written["multimnist"] = table
    if affine_runs:
        target = matched_target(affine_runs, target_cap)
        table = matched_accuracy(affine_runs, target)
        write_table(table, tables_dir / "affine", f"Expanded MNIST and {AFFINE_LABEL} accuracy (%) at a matched "
                    f"validation accuracy of {100 * target:.2f}%",
                    "Each run at the first evaluation whose validation accuracy (expanded MNIST, held-out training "
                    "images) reaches the target: the highest validation accuracy every run reaches. The affine "
                    "set is generated (capslib/generated.py: one transform per test image, in ranges written from "
                    "memory of affNIST's page and not yet verified), not affNIST: compare the models with each other, not with the paper's 79% / 66%.")
        written["affine"] = table
    return written
