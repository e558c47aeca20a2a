"""Tables for a reader: the numbers of summaries.py written as CSV (every number, for machines) and
Markdown, and formatted (mean ± std, plain headers, no index, no NaN) as the notebooks show them."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from ..core.errors import RunFolderError
from ..core.files import atomic_write_text
from ..core.generated import AFFINE_LABEL
from ..core.runs import Run
from . import paper
from .summaries import (PAPER_SCALE_SCORE, ablation_tables, affine_summary, comparison_table, matched_accuracy,
                        matched_target, missing, multimnist_run_table, multimnist_table, pairwise_table, run_table,
                        summary_table)


def write_comparison_table(groups: dict[str, list[Run]], stem: Path | str, title: str, note: str) -> pd.DataFrame:
    """comparison_table(groups) as `stem`.csv and `stem`.md (formatted: comparison_readable)."""
    table = comparison_table(groups)
    write_table(table, stem, title, note + " *_vs_base = the group's mean minus the first group's, with a 95% "
                "interval (two-sample t, pooled variance).", readable=comparison_readable(comparison_table(groups, None)))
    return table


def comparison_readable(table: pd.DataFrame) -> pd.DataFrame:
    """A comparison table for a reader: mean ± std and the difference from the base with its interval."""
    def difference(row, name):
        if missing(row[f"{name}_vs_base"]):
            return NONE
        return difference_text(row[f"{name}_vs_base"], row[f"{name}_vs_base_low"], row[f"{name}_vs_base_high"])

    return pd.DataFrame({
        "runs of": table.runs_of, "seeds": table.runs, "epochs": table.epochs,
        "final error (%)": [mean_std(m, s) for m, s in zip(table.final_mean, table.final_std)],
        "final vs the first (95% interval)": [difference(r, "final") for _, r in table.iterrows()],
        "selected on validation (%)": [mean_std(m, s) or NONE for m, s in zip(table.selected_mean, table.selected_std)],
        "selected vs the first": [difference(r, "selected") for _, r in table.iterrows()],
        "best on test (%)": [NONE if missing(b) else f"{b:.2f}" for b in table.best_mean],
    })


def _decimals(value: float) -> int:
    text = repr(float(value))
    return 0 if "e" in text or text.endswith(".0") else len(text.split(".")[1])


def _aligned_floats(column: pd.Series) -> pd.Series:
    """A float column as text with as many decimals as its most precise value (at most 6), so
    that 64.8 prints as 64.80 beside 68.64, and a count that NaN made a float (35.0) as 35."""
    values = [v for v in column if not missing(v)]
    digits = min(6, max((_decimals(v) for v in values), default=0))
    return column.map(lambda v: None if missing(v) else f"{v:.{digits}f}")


def markdown_table(table: pd.DataFrame, right: tuple[str, ...] = ()) -> str:
    """A GitHub Markdown table (no extra dependency such as tabulate); the columns named in
    `right` are right-aligned (numbers)."""
    def cell(value) -> str:
        if missing(value):
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


_SEED_STUDY = paper.SEED_STUDY_ERROR[("mnist", "routing 3, reconstruction")]
_FASHION = paper.FASHION_REFERENCE_ERROR[("fashion-mnist", "routing 3, reconstruction")]
SUMMARY_NOTE = ("final = the last epoch's test error, mean ± sample standard deviation over seeds; selected = the "
                "test error at the evaluation with the lowest validation error (runs that held the first 10,000 "
                "training images out); best epoch = the lowest error over all epochs (selected on the test set, "
                "shown for comparison only); paper = Sabour et al. 2017, Table 1 (MNIST); gap = our mean final "
                "error minus the paper's. Other references: the TensorFlow study this project follows reports "
                f"{_SEED_STUDY}% ({100 - _SEED_STUDY:.2f}% accuracy, its best, MNIST routing 3 + reconstruction); a "
                f"widely cited CapsNet Fashion-MNIST result is {_FASHION}% ({100 - _FASHION:.1f}% accuracy).")


def write_result_tables(runs: list[Run], tables_dir: Path | str, prefix: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rebuild <prefix>runs.{csv,md} and <prefix>summary.{csv,md} in `tables_dir` from the complete
    `runs` (read back from their folders: rebuilt whole each time, never appended, so concurrent or
    repeated calls agree)."""
    per_run = run_table([r for r in runs if r.info.get("status") == "complete"])
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
    write_table(pairwise_table(per_run), tables_dir / f"{prefix}pairwise",
                "Every pair of configurations: the difference of their mean test errors (percentage points)",
                "Within each dataset, recipe and validation split: the first configuration's mean error minus the "
                "second's, with its 95% interval (two-sample t, pooled variance). **Bold**: the interval excludes 0, "
                "a difference the seeds resolve; the others lie within the seed-to-seed spread.",
                readable=pairwise_readable(pairwise_table(per_run, None)))
    return per_run, summary


def signed(value: float, digits: int = 2) -> str:
    """'+0.13', '-0.04', and '0.00' for what rounds to zero (never '-0.00')."""
    rounded = round(float(value), digits) + 0.0
    return f"{rounded:+.{digits}f}" if rounded else f"{0:.{digits}f}"


def difference_text(difference, low, high) -> str:
    """'+0.13 (+0.08 … +0.19)', bold where the interval excludes 0; — where there is none."""
    if missing(difference):
        return NONE
    if missing(low):
        return signed(difference)
    text = f"{signed(difference)} ({signed(low)} … {signed(high)})"
    return f"**{text}**" if low > 0 or high < 0 else text


def pairwise_readable(table: pd.DataFrame) -> pd.DataFrame:
    """summaries.pairwise_table for a reader."""
    return pd.DataFrame({
        "dataset": table.dataset.map(lambda d: DATASET_NAMES.get(d, d)), "recipe": table.recipe,
        "held out": table.validation_images.map(lambda n: f"{n:,}" if n else NONE),
        "configuration": table.configuration, "minus": table.other,
        "final (95% interval)": [difference_text(*r) for r in zip(table.final_difference, table.final_low, table.final_high)],
        "selected on validation (95% interval)": [difference_text(*r) for r in zip(
            table.selected_difference, table.selected_low, table.selected_high)],
    })


def write_ablation_tables(runs: list[Run], tables_dir: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ablation.{csv,md} (every run) and ablation_summary.{csv,md} (every variant) in `tables_dir`, of
    the complete runs of the ablation."""
    runs = [r for r in runs if r.info.get("status") == "complete"]
    if not runs:
        raise RunFolderError("no completed ablation run: train them with `make ablation`")
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
    if missing(mean):
        return ""
    return f"{mean:.{digits}f}" if missing(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def numeric_columns(table: pd.DataFrame) -> tuple[str, ...]:
    """Columns whose every value is a number or a formatted one ('0.38 ± 0.03', '0.34 (37)', '+0.13')."""
    number = r"[+−-]?[0-9][0-9,.]*( ± [0-9.]+)?( \([0-9]+\))?"
    blank = {"", NONE}
    def numeric(column: pd.Series) -> bool:
        if column.dtype.kind in "iuf":
            return True
        return (not column.map(lambda v: missing(v) or v in blank).all()
                and column.map(lambda v: missing(v) or v in blank or bool(re.fullmatch(number, str(v)))).all())

    return tuple(c for c in table.columns if len(table) and numeric(table[c]))


def table1(per_run: pd.DataFrame) -> pd.DataFrame:
    """The runs summarised beside the paper's Table 1, formatted: one row per dataset, configuration,
    recipe and validation split (from unrounded means and deviations, so that nothing is rounded twice)."""
    rows = []
    for r in summary_table(per_run, digits=None).to_dict("records"):
        paper = NONE if missing(r["paper_error"]) else (
            f"{r['paper_error']}" + ("" if missing(r["paper_std"]) else f" ± {r['paper_std']}"))
        rows.append({
            "dataset": DATASET_NAMES.get(r["dataset"], r["dataset"]), "configuration": r["configuration"],
            "recipe": r["recipe"], "held out": f"{r['validation_images']:,}" if r["validation_images"] else NONE,
            "seeds": r["runs"], "epochs": r["epochs"],
            "final error (%)": mean_std(r["final_error_mean"], r["final_error_std"]),
            "selected on validation (%)": mean_std(r["selected_error_mean"], r["selected_error_std"]) or NONE,
            "best epoch (%)": mean_std(r["best_error_mean"], r["best_error_std"]),
            "paper (%)": paper,
            "gap to paper": NONE if missing(r["gap_to_paper"]) else f"{r['gap_to_paper']:+.2f}",
        })
    return pd.DataFrame(rows, columns=["dataset", "configuration", "recipe", "held out", "seeds", "epochs",
                                       "final error (%)", "selected on validation (%)", "best epoch (%)",
                                       "paper (%)", "gap to paper"])


def _short_device(device) -> str:
    """'1x NVIDIA H100 80GB HBM3' → 'H100 80GB HBM3': the column stays one line wide."""
    return "" if missing(device) else str(device).removeprefix("1x ").removeprefix("NVIDIA ")


def runs_overview(per_run: pd.DataFrame) -> pd.DataFrame:
    """Every run, formatted: final and best test error, time, device and commit (the full
    provenance, with the exact command, is in runs.md)."""
    table = pd.DataFrame({
        "dataset": per_run.dataset.map(lambda d: DATASET_NAMES.get(d, d)),
        "configuration": per_run.configuration, "recipe": per_run.recipe,
        "held out": per_run.validation_images.map(lambda n: f"{n:,}" if n else NONE),
        "seed": per_run.seed, "epochs": per_run.epochs,
        "final error (%)": per_run.final_test_error.map(lambda e: f"{e:.2f}"),
        "selected (epoch)": [NONE if missing(e) else f"{e:.2f} ({int(n)})"
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


def write_paired_tables(comparisons: dict, groups: dict[str, list[Run]], stem: Path | str, title: str,
                        evaluation: str = "last") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paired comparisons (paired.paired_table) as `stem`.{csv,md} and which test images the
    configurations in `groups` miss (paired.hard_core) as `stem`_hard_core.{csv,md}: for the runs with
    per-image records; both empty, with a note saying so, where none has them."""
    from .paired import hard_core, paired_table

    table = paired_table(comparisons, evaluation)
    readable = pd.DataFrame({
        "A": table.a, "B": table.b, "seeds": table.seeds,
        "error A (%)": table.a_error.map("{:.3f}".format), "error B (%)": table.b_error.map("{:.3f}".format),
        "A − B, paired bootstrap 95% interval": [difference_text(d, lo, hi) for d, lo, hi in
                                                  zip(table.difference, table.difference_low, table.difference_high)],
        "only A right": table.only_a_right, "only B right": table.only_b_right,
        "McNemar p": table.mcnemar_p.map("{:.2g}".format)})
    write_table(table, stem, title, f"The {evaluation} evaluation of each run, compared image by image with the "
                "run of the same seed (capslib/study/paired.py): the difference of mean test error, its 95% interval "
                "from a paired bootstrap over test images, the images only one side got right (pooled over seed "
                "pairs) and the exact McNemar p-value on them." + ("" if len(table) else
                " No pair of runs has per-image records yet (runs record them since 2026-12-07)."),
                readable=readable)
    core_table, core = hard_core(groups, evaluation)
    write_table(core_table, f"{stem}_hard_core", f"{title}: which test images each configuration misses",
                "missed by every seed / seeds disagree (missed by some seeds, not all) / missed by any seed, over "
                f"the runs with per-image records. Missed by every run of every configuration (the hard core): "
                f"{len(core)} images" + (f" ({', '.join(map(str, core[:40]))}{' …' if len(core) > 40 else ''})."
                                         if core else "."))
    return table, core_table


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
        per_run = multimnist_run_table(multimnist_runs)
        write_table(per_run, tables_dir / "multimnist_runs", "MultiMNIST test error (%) of each run",
                    "test_error: after the last epoch, on the study's test pairs, with its binomial standard error "
                    "(se); paper_scale: the same checkpoint scored again on the paper's 10M pairs (capslib evaluate "
                    f"--test-pairs 1000, {PAPER_SCALE_SCORE} in the run's folder); difference_in_se: (10M − 1M) / "
                    "the combined standard error. Both sets pair the same 10,000 test digits, each drawing its "
                    "partners and shifts independently (generated.MultiMNISTSet): the binomial se, which treats pairs "
                    "as independent, ignores that pairs of one digit are alike.")
        written["multimnist_runs"] = per_run
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
        summary = affine_summary(table)
        write_table(summary, tables_dir / "affine_summary", f"Expanded MNIST and {AFFINE_LABEL} accuracy (%) at a "
                    f"matched validation accuracy of {100 * target:.2f}%, mean ± sample std over seeds",
                    "affine_difference: the configuration's mean affine accuracy minus that of affine_vs, with a 95% "
                    "interval (two-sample t over seeds, pooled variance): CapsNet against the CNN (the paper's "
                    "comparison: 79% against 66% on the real affNIST), and routing 1 against routing 3 (does routing "
                    "matter for robustness?). The affine set is generated, not affNIST: compare the differences, not "
                    "the absolute accuracies, with the paper's.")
        written["affine_summary"] = summary
    return written
