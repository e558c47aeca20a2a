"""What the logged runs say, as tables of numbers (pandas DataFrames): per run, per configuration
beside the paper's Table 1, the ablation, comparisons of groups of runs with 95% intervals, the
MultiMNIST and matched-accuracy tables. tables.py writes and shows them for a reader."""

from __future__ import annotations

import json
import math

import pandas as pd

from ..core.config import COMPONENTS
from ..core.errors import RunFolderError
from ..core.runs import Run, selection
from . import paper

CONFIGURATION_ORDER = list(paper.TABLE1)
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
        reported = paper.TABLE1.get(configuration, (None, None)) if dataset == "mnist" else (None, None)
        reference = {**paper.SEED_STUDY_ERROR, **paper.FASHION_REFERENCE_ERROR}.get((dataset, configuration))
        rows.append({
            "dataset": dataset, "configuration": configuration, "recipe": recipe, "validation_images": validation,
            "runs": len(group), "epochs": "/".join(str(e) for e in sorted(group.epochs.unique())),
            "final_error_mean": _round(group.final_test_error.mean(), digits),
            "final_error_std": _round(group.final_test_error.std(ddof=1), digits),
            "selected_error_mean": _round(group.selected_test_error.astype(float).mean(), digits),
            "selected_error_std": _round(group.selected_test_error.astype(float).std(ddof=1), digits),
            "best_error_mean": _round(group.best_test_error.mean(), digits),
            "best_error_std": _round(group.best_test_error.std(ddof=1), digits),
            "paper_error": reported[0], "paper_std": reported[1], "other_reference_error": reference,
            "gap_to_paper": _round(group.final_test_error.mean() - reported[0], digits) if reported[0] is not None else None,
        })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _round(value: float, digits: int | None = 3):
    if missing(value):
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


def _against(group: pd.DataFrame, base: pd.DataFrame | None, digits: int | None = 3) -> dict:
    """Runs, mean ± std of the final and the validation-selected error of a group of runs, its mean
    best-on-test error, and (given a base group) each mean's difference from the base's, 95% interval;
    rounded to `digits` (None: not rounded, for formatting without rounding twice)."""
    row = {"runs": len(group), "best_mean": _round(group.best_test_error.mean(), digits)}
    for column, name in (("final_test_error", "final"), ("selected_test_error", "selected")):
        values = group[column].astype(float)
        row[f"{name}_mean"], row[f"{name}_std"] = _round(values.mean(), digits), _round(values.std(ddof=1), digits)
        if base is not None:
            difference, low, high = difference_interval(values, base[column].astype(float))
            row.update({f"{name}_vs_base": _round(difference, digits), f"{name}_vs_base_low": _round(low, digits),
                        f"{name}_vs_base_high": _round(high, digits)})
    return row


COMPARISON_COLUMNS = ["runs_of", "runs", "epochs", "final_mean", "final_std", "final_vs_base", "final_vs_base_low",
                      "final_vs_base_high", "selected_mean", "selected_std", "selected_vs_base", "selected_vs_base_low",
                      "selected_vs_base_high", "best_mean"]


def comparison_table(groups: dict[str, list[Run]], digits: int | None = 3) -> pd.DataFrame:
    """One row per named group of completed runs (the first is the base): as the ablation's summary,
    each later group's difference from the base with a 95% interval. A group with no run is left out."""
    rows, base = [], None
    for label, runs in groups.items():
        per_run = run_table([r for r in runs if r.info.get("status") == "complete"])
        if per_run.empty:
            continue
        rows.append({"runs_of": label, "epochs": "/".join(str(e) for e in sorted(per_run.epochs.unique())),
                     **_against(per_run, base, digits)})
        base = per_run if base is None else base
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


PAIRWISE_COLUMNS = ["dataset", "recipe", "validation_images", "configuration", "other", "runs", "other_runs",
                    "final_difference", "final_low", "final_high", "selected_difference", "selected_low",
                    "selected_high"]


def pairwise_table(per_run: pd.DataFrame, digits: int | None = 3) -> pd.DataFrame:
    """Within each dataset, recipe and validation split, every pair of configurations (in Table 1's
    order): the first's mean final (and validation-selected) error minus the other's, with its 95%
    interval (two-sample t, pooled variance). An interval that excludes 0 is a difference the seeds
    resolve; the others are within the seed-to-seed spread."""
    rows = []
    for (dataset, recipe, validation), group in per_run.groupby(["dataset", "recipe", "validation_images"], sort=False):
        configurations = list(dict.fromkeys(group.configuration))
        for i, first in enumerate(configurations):
            for other in configurations[i + 1:]:
                a, b = group[group.configuration == first], group[group.configuration == other]
                row = {"dataset": dataset, "recipe": recipe, "validation_images": validation, "configuration": first,
                       "other": other, "runs": len(a), "other_runs": len(b)}
                for column, name in (("final_test_error", "final"), ("selected_test_error", "selected")):
                    difference, low, high = difference_interval(a[column], b[column])
                    row.update({f"{name}_difference": _round(difference, digits), f"{name}_low": _round(low, digits),
                                f"{name}_high": _round(high, digits)})
                rows.append(row)
    return pd.DataFrame(rows, columns=PAIRWISE_COLUMNS)


def missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# A MultiMNIST run scored once more on the paper's 10M test pairs: `capslib evaluate --ckpt-path <checkpoints>
# --test-pairs 1000 --result-path <its logs folder>/PAPER_SCALE_SCORE` (the study's runs score 1M as they train).
PAPER_SCALE_SCORE = "evaluate_test_pairs_1000.json"
MULTIMNIST_RUN_COLUMNS = ["configuration", "seed", "epochs", "test_pairs_scored", "test_error", "test_error_se",
                          "paper_scale_pairs", "paper_scale_error", "paper_scale_se", "difference_in_se", "device",
                          "date", "run"]


def binomial_se(error_percent: float, examples: int) -> float:
    """The standard error (percentage points) of an error rate measured on `examples` examples."""
    p = error_percent / 100
    return 100 * math.sqrt(p * (1 - p) / examples)


def multimnist_run_table(runs: list[Run]) -> pd.DataFrame:
    """One row per MultiMNIST run: its final test error on the study's pairs (%) with its binomial standard
    error, and, where the run was scored again on the paper's 10M pairs (PAPER_SCALE_SCORE), that error
    and how many combined standard errors apart the two are (the same model on two test sets)."""
    rows = []
    for run in runs:
        if run.history.empty:
            continue
        pairs = run.info["test_images"] * run.config.test_pairs
        error = float(run.history.test_error.iloc[-1])
        row = {"configuration": run.label, "seed": run.config.seed, "epochs": int(run.history.epoch.iloc[-1]),
               "test_pairs_scored": pairs, "test_error": _round(error), "test_error_se": _round(binomial_se(error, pairs)),
               "device": run.info["sessions"][-1].get("device"), "date": run.info["sessions"][-1].get("date"),
               "run": run.folder.name}
        scored = run.folder / PAPER_SCALE_SCORE
        if scored.is_file():
            again = json.loads(scored.read_text())
            if again["epoch"] != row["epochs"]:
                raise RunFolderError(f"{scored}: scores epoch {again['epoch']}, not the run's last ({row['epochs']})")
            se = binomial_se(again["test_error_percent"], again["test_examples"])
            row.update(paper_scale_pairs=again["test_examples"], paper_scale_error=_round(again["test_error_percent"]),
                       paper_scale_se=_round(se),
                       difference_in_se=_round((again["test_error_percent"] - error)
                                               / math.sqrt(se ** 2 + binomial_se(error, pairs) ** 2), 2))
        rows.append(row)
    return pd.DataFrame(rows, columns=MULTIMNIST_RUN_COLUMNS)


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
                     "paper_error": paper.MULTIMNIST.get(configuration)})
    return pd.DataFrame(rows, columns=["configuration", "runs", "epochs", "test_pairs_scored", "test_error_mean",
                                       "test_error_std", "paper_error"])


AFFINE_SUMMARY_COLUMNS = ["configuration", "runs", "target_validation_accuracy", "expanded_test_mean", "expanded_test_std",
                          "affine_mean", "affine_std", "affine_vs", "affine_difference", "affine_difference_low",
                          "affine_difference_high", "paper_affine"]
# The comparisons of the affine study, (configuration, against): the paper's (CapsNet against the CNN), and
# whether routing matters for robustness (Gu et al., CVPR 2021: it does not).
AFFINE_COMPARISONS = {"routing 3, reconstruction": "baseline CNN", "routing 1, reconstruction": "routing 3, reconstruction"}


def affine_summary(per_run: pd.DataFrame) -> pd.DataFrame:
    """matched_accuracy's rows per configuration: the expanded-MNIST test and affine accuracy (%) at the
    matched validation accuracy, mean ± sample std over seeds, and the affine difference of the
    comparison in AFFINE_COMPARISONS with its 95% interval (two-sample t over seeds)."""
    rows = []
    groups = {name: group for name, group in per_run.groupby("configuration", sort=False)}
    for configuration, group in groups.items():
        against = AFFINE_COMPARISONS.get(configuration)
        difference = low = high = math.nan
        if against in groups:
            difference, low, high = difference_interval(group.affine_accuracy, groups[against].affine_accuracy)
        rows.append({"configuration": configuration, "runs": int(group.affine_accuracy.notna().sum()),
                     "target_validation_accuracy": _round(group.target_validation_accuracy.iloc[0]),
                     "expanded_test_mean": _round(group.expanded_test_accuracy.mean()),
                     "expanded_test_std": _round(group.expanded_test_accuracy.std(ddof=1)),
                     "affine_mean": _round(group.affine_accuracy.mean()),
                     "affine_std": _round(group.affine_accuracy.std(ddof=1)),
                     "affine_vs": against if against in groups else None,
                     "affine_difference": _round(difference), "affine_difference_low": _round(low),
                     "affine_difference_high": _round(high), "paper_affine": paper.AFFINE.get(configuration)})
    return pd.DataFrame(rows, columns=AFFINE_SUMMARY_COLUMNS)


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
