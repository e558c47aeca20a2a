"""The numbers the docs quote, read from the committed tables (results/tables/*.csv, themselves rebuilt
from the run logs and tested against them: tests/test_results.py), formatted as the docs print them.

README.md and docs/*.md generate every such number with cog (`make docs` runs `cog -r`; `make test`
checks with `cog --check` that none has drifted): a sentence that quotes a result is written by a
function here, next to the table it reads. Each function names the table it reads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from functools import lru_cache

import pandas as pd

from ..core.config import TrainConfig
from ..core.layout import run_name
from ..core.provenance import REPO
from ..core.runs import find_runs
from .profiles import sized
from .studies import protocol
from . import paper
from .summaries import difference_interval
from .tables import NONE, difference_text, mean_std, signed

TABLES = REPO / "results" / "tables"
ROUTING3 = "routing 3, reconstruction"


@lru_cache(maxsize=None)
def table(name: str) -> pd.DataFrame:
    """results/tables/<name>.csv, read once."""
    return pd.read_csv(TABLES / f"{name}.csv")


def markdown(name: str) -> str:
    """The table of results/tables/<name>.md (its rows, without the title and the note)."""
    lines = (TABLES / f"{name}.md").read_text().splitlines()
    return "\n".join(line for line in lines if line.startswith("|"))


def summary_row(configuration: str = ROUTING3, dataset: str = "mnist", recipe: str = "paper",
                held_out: int = 0) -> pd.Series:
    """One row of summary.csv: a configuration's mean ± std over seeds."""
    rows = table("summary")
    (index,) = rows.index[(rows.dataset == dataset) & (rows.configuration == configuration) & (rows.recipe == recipe)
                          & (rows.validation_images == held_out)]
    return rows.loc[index]


def error(kind: str = "final", configuration: str = ROUTING3, dataset: str = "mnist", recipe: str = "paper",
          held_out: int = 0) -> str:
    """'0.38 ± 0.03': the mean ± sample std over seeds of `kind` (final, selected, best) of a configuration,
    from each run's own error (runs.csv): summary.csv's means and deviations are rounded to 3 decimals,
    and formatting a rounded value rounds twice."""
    values = runs(dataset=dataset, configuration=configuration, recipe=recipe,
                  validation_images=held_out)[f"{kind}_test_error"].astype(float)
    return mean_std(values.mean(), values.std(ddof=1)) or NONE


def runs(**where) -> pd.DataFrame:
    """The rows of runs.csv whose columns have the given values."""
    rows = table("runs")
    for column, value in where.items():
        rows = rows[rows[column] == value]
    return rows


def per_seed(column: str = "final_test_error", **where) -> str:
    """'0.39 / 0.34 / 0.40': each seed's value (runs.csv), in seed order."""
    return " / ".join(f"{v:.2f}" for v in runs(**where).sort_values("seed")[column])


# ---------------------------------------------------------------------------------------------
# README: the status and the headline table


NOT_RUN = "not run yet"  # a configuration the official recipe has not been trained for (table1-official)


def headline_table() -> str:
    """Table 1 beside the paper: the committed 40-epoch runs on all 60,000 images (final), the same runs
    with 10,000 images held out (selected on validation), the official recipe at full length with the
    split (selected on validation, and final) for every row it has been trained for, and the paper's
    numbers (summary.csv, runs.csv)."""
    official_epochs = "/".join(str(int(e)) for e in sorted(set(runs(recipe="official", validation_images=10_000).epochs)))
    lines = [f"| configuration | final, 60,000 images | selected on validation, 50,000 | official recipe, "
             f"{official_epochs} epochs: selected (final) | paper | gap (final − paper) |",
             "|---|---:|---:|---:|---:|---:|"]

    def official(**where) -> str:
        if runs(recipe="official", validation_images=10_000, **where).empty:
            return NOT_RUN
        return f"{error('selected', recipe='official', held_out=10_000, **where)} " \
               f"(final {error(recipe='official', held_out=10_000, **where)})"

    for configuration, (reported, spread) in paper.TABLE1.items():
        final = summary_row(configuration)
        lines.append(f"| {configuration} | {error(configuration=configuration)} | "
                     f"{error('selected', configuration=configuration, held_out=10_000)} | "
                     f"{official(dataset='mnist', configuration=configuration)} | "
                     f"{reported}{f' ± {spread}' if spread else ''} | {signed(final.gap_to_paper)} |")
    fashion = dict(configuration=ROUTING3, dataset="fashion-mnist")
    reference = paper.FASHION_REFERENCE_ERROR[("fashion-mnist", ROUTING3)]
    lines.append(f"| Fashion-MNIST, {ROUTING3} | {error(**fashion)} | {error('selected', **fashion, held_out=10_000)} "
                 f"| {official(**fashion)} | {NONE} ({reference} often cited) | {NONE} |")
    return "\n".join(lines)


def best_honest() -> tuple[float, str]:
    """The lowest mean test error of routing 3 + reconstruction on MNIST chosen without the test set:
    a final error, or one selected on validation (summary.csv)."""
    rows = table("summary")
    rows = rows[(rows.dataset == "mnist") & (rows.configuration == ROUTING3)]
    candidates = []
    for row in rows.itertuples():
        recipe = f"the {row.recipe} recipe, {row.epochs} epochs" + (
            f", {row.validation_images:,} training images held out" if row.validation_images else "")
        candidates.append((row.final_error_mean, f"final error of {recipe}"))
        if not math.isnan(row.selected_error_mean):
            candidates.append((row.selected_error_mean, f"selected on validation, {recipe}"))
    return min(candidates)


def status() -> str:
    """The study's status in one sentence."""
    value, where = best_honest()
    return (f"**The paper's {paper.TABLE1[ROUTING3][0]}% MNIST test error (routing 3 + reconstruction) is not "
            f"reproduced**: the best honest number here is {value:.2f}% ({where}, mean of 3 seeds).")


def provenance(study_runs: pd.DataFrame | None = None) -> str:
    """'1× NVIDIA H100 80GB HBM3 and 1× NVIDIA H200, torch 2.11.0+cu130, 2026-11-25 – 2026-11-26, commits
    4a0ead19a8a0, 868191f, dfb44e87750a': where the runs of runs.csv (or the given rows) were trained."""
    rows = table("runs") if study_runs is None else study_runs
    devices = " and ".join(sorted({d.replace("1x ", "1× ") for d in rows.device}))
    software = ", ".join(sorted({s.split(",")[0] for s in rows.software}))
    dates = sorted({d[:10] for d in rows.date})
    when = dates[0] if len(dates) == 1 else f"{dates[0]} – {dates[-1]}"
    commits = sorted(set(rows.commit))
    return f"{devices}, {software}, {when}, commit{'s' if len(commits) > 1 else ''} " + ", ".join(f"`{c}`" for c in commits)


# ---------------------------------------------------------------------------------------------
# docs/results.md


def resolved_pairs(held_out: int, kind: str = "final") -> list[str]:
    """The pairs of configurations whose difference of means the seeds resolve (95% interval excludes 0),
    as 'baseline CNN − routing 1, reconstruction: +0.13 (+0.07 … +0.19)' (pairwise.csv)."""
    rows = table("pairwise")
    rows = rows[(rows.dataset == "mnist") & (rows.recipe == "paper") & (rows.validation_images == held_out)]
    return [f"{r.configuration} − {r.other}: {difference_text(*getattr_all(r, kind)).strip('*')}"
            for r in rows.itertuples() if (getattr(r, f"{kind}_low") > 0 or getattr(r, f"{kind}_high") < 0)]


def getattr_all(row, kind: str) -> tuple[float, float, float]:
    return getattr(row, f"{kind}_difference"), getattr(row, f"{kind}_low"), getattr(row, f"{kind}_high")


def spread() -> str:
    """'0.01–0.40': the smallest and largest sample standard deviation over seeds of the final or the
    selected error of any group of runs here: each configuration, recipe and split (runs.csv) and each
    variant of the ablation (ablation.csv)."""
    groups = [g for _, g in table("runs").groupby(["dataset", "configuration", "recipe", "validation_images"])]
    groups += [g for _, g in table("ablation").groupby("variant")]
    deviations = [g[column].std(ddof=1) for g in groups for column in ("final_test_error", "selected_test_error")]
    deviations = [d for d in deviations if not math.isnan(d)]
    return f"{min(deviations):.2f}–{max(deviations):.2f}"


def ablation(variant: str, kind: str = "final") -> str:
    """'+0.12 (+0.02 … +0.23)': a variant's difference from its base recipe (ablation_summary.csv)."""
    rows = table("ablation_summary")
    (row,) = rows[rows.variant == variant].itertuples()
    return difference_text(getattr(row, f"{kind}_vs_base"), getattr(row, f"{kind}_vs_base_low"),
                           getattr(row, f"{kind}_vs_base_high")).strip("*")


def unresolved_ablation(base: str) -> list[str]:
    """The components whose switch from `base` moves the final error by an interval that includes 0."""
    rows = table("ablation_summary")
    rows = rows[(rows.base == base) & (rows.component != NONE)]
    return [r.component for r in rows.itertuples() if r.final_vs_base_low <= 0 <= r.final_vs_base_high]


def ablation_mean(variant: str, kind: str = "final") -> str:
    rows = table("ablation_summary")
    (row,) = rows[rows.variant == variant].itertuples()
    return mean_std(getattr(row, f"{kind}_mean"), getattr(row, f"{kind}_std"))


def difference(first: dict, second: dict, kind: str = "final") -> str:
    """'−0.01 (−0.06 … +0.04)': the mean of the runs `first` minus that of the runs `second` (each a
    runs.csv selection), with its 95% interval."""
    a, b = runs(**first)[f"{kind}_test_error"], runs(**second)[f"{kind}_test_error"]
    return difference_text(*difference_interval(a, b)).strip("*")


def lowest_on_test() -> str:
    """'0.29%, reached by 3 of the 81 runs (...)': the lowest test error that any committed run reaches
    at any evaluation (selected on the test set), and every run that reaches it (runs.csv, ablation.csv)."""
    named = [(f"{r.configuration}, {r.recipe} recipe{', 10,000 held out' if r.validation_images else ''}, seed {r.seed}, "
              f"epoch {r.best_epoch}", r.best_test_error) for r in table("runs").itertuples()]
    named += [(f"the ablation's {r.variant}, seed {r.seed}", r.best_test_error) for r in table("ablation").itertuples()]
    lowest = min(error for _, error in named)
    reached = [name for name, error in named if error == lowest]
    return f"{lowest:.2f}%, reached by {len(reached)} of the {len(named)} runs ({'; '.join(reached)})"


def steps(study_epochs: int, validation_images: int, batch_size: int = 128, train_images: int = 60_000) -> str:
    """'300,300 steps (770 epochs × 390)': the steps a run takes (the ragged last batch is dropped)."""
    per_epoch = (train_images - validation_images) // batch_size
    return f"{study_epochs * per_epoch:,} steps ({study_epochs} epochs × {per_epoch})"


def wall_minutes(**where) -> str:
    """'8.7–9.8': the range of the runs' wall time in minutes (runs.csv)."""
    minutes = runs(**where).wall_seconds / 60
    return f"{minutes.min():.1f}–{minutes.max():.1f}"


# ---------------------------------------------------------------------------------------------
# The honest protocol and the ablation (docs/results.md)


def errors(kind: str = "final", source: str = "runs", **where) -> pd.Series:
    """The `kind` test errors of the runs of runs.csv (source="runs") or ablation.csv ("ablation")
    whose columns have the given values."""
    rows = table(source)
    for column, value in where.items():
        rows = rows[rows[column] == value]
    return rows[f"{kind}_test_error"].astype(float)


VALIDATED_ROUTING3 = dict(dataset="mnist", configuration=ROUTING3, recipe="paper", validation_images=10_000)
TABLE1_ROUTING3 = dict(dataset="mnist", configuration=ROUTING3, recipe="paper", validation_images=0)
OFFICIAL = dict(recipe="official", validation_images=10_000)


def _groups() -> dict[str, tuple[str, dict]]:
    """The groups of runs the protocol table and the prose compare, by name: (source table, selection)."""
    return {"paper 40": ("runs", VALIDATED_ROUTING3), "paper 60": ("ablation", {"variant": "paper"}),
            "official 60": ("ablation", {"variant": "official"}), "official full": ("runs", OFFICIAL),
            "paper 40, 60,000 images": ("runs", TABLE1_ROUTING3)}


def group_errors(name: str, kind: str = "final") -> pd.Series:
    source, where = _groups()[name]
    return errors(kind, source, **where)


def group_error(name: str, kind: str = "final") -> str:
    """'0.35 ± 0.02': a group's mean ± std (see _groups)."""
    values = group_errors(name, kind)
    return mean_std(values.mean(), values.std(ddof=1)) or NONE


def versus(first: str, second: str, kind: str = "final") -> str:
    """'-0.01 (-0.06 … +0.04)': group `first`'s mean minus `second`'s, with its 95% interval."""
    return difference_text(*difference_interval(group_errors(first, kind), group_errors(second, kind))).strip("*")


def mean_gap(first: str, second: str, kind_first: str = "best", kind_second: str = "final") -> str:
    """'0.04': how far a group's mean `kind_first` error lies below its (or another's) `kind_second`."""
    return f"{group_errors(second, kind_second).mean() - group_errors(first, kind_first).mean():.2f}"


def protocol_table() -> str:
    """Routing 3 + reconstruction on 50,000 training images (10,000 held out), every recipe and length
    this study ran under the honest protocol, beside the paper (runs.csv, ablation.csv)."""
    official_epochs = int(table("runs").loc[table("runs").recipe == "official", "epochs"].max())
    rows = [("paper recipe, 40 epochs", "paper 40"), ("paper recipe, 60 epochs (the ablation's base)", "paper 60"),
            ("official recipe, 60 epochs", "official 60"),
            (f"**official recipe, full length: {steps(official_epochs, 10_000)}**", "official full")]
    lines = ["| runs (all on 50,000 training images) | final | selected on validation | best on test |",
             "|---|---:|---:|---:|"]
    for label, name in rows:
        final, selected = group_error(name), group_error(name, "selected")
        if name == "official full":
            final, selected = f"**{final}**", f"**{selected}**"
        lines.append(f"| {label} | {final} | {selected} | {group_error(name, 'best')} |")
    reported, spread = paper.TABLE1[ROUTING3]
    lines.append(f"| paper, Table 1 | {reported} ± {spread} (which checkpoint: not stated) | | |")
    return "\n".join(lines)


def lr_left(recipe: str = "official", epochs: int = 60, validation_images: int = 10_000) -> str:
    """'62%': the share of the initial learning rate that `recipe` leaves after `epochs` epochs."""
    from ..core.config import TrainConfig
    from ..core.train import learning_rate

    config = TrainConfig.from_recipe(recipe)
    steps_per_epoch = (60_000 - validation_images) // config.batch_size
    return f"{learning_rate(config, epochs, epochs * steps_per_epoch) / config.lr:.0%}"


def largest_unresolved(base: str = "paper") -> str:
    """'0.04': the largest |change of the final error| among the components whose interval includes 0."""
    rows = table("ablation_summary")
    rows = rows[(rows.base == base) & rows.component.isin(unresolved_ablation(base))]
    return f"{rows.final_vs_base.abs().max():.2f}"


def remaining_gap() -> str:
    """'0.10': the best honest mean error minus the paper's."""
    value, _ = best_honest()
    return f"{value - paper.TABLE1[ROUTING3][0]:.2f}"


def run_minutes(study: str) -> str:
    """'27': the sum of the wall time of a study's committed runs, in minutes (their run.json)."""
    total = sum(json.loads(path.read_text())["summary"]["wall_seconds"]
                for path in (REPO / "results" / study).glob("*/run.json"))
    return f"{total / 60:.0f}"


def overhead(**where) -> str:
    """'17–19%': how much longer the runs took than their epochs alone (evaluations, set-up) (runs.csv)."""
    rows = runs(**where)
    ratio = rows.wall_seconds / (rows.mean_epoch_seconds * rows.epochs) - 1
    return f"{ratio.min():.0%}–{ratio.max():.0%}"


def epoch_seconds(run_folder: str) -> str:
    """'5.0 s and 15.2 s': the shortest and longest epoch of a run (its metrics.csv)."""
    seconds = pd.read_csv(REPO / "results" / run_folder / "metrics.csv").epoch_seconds
    return f"{seconds.min():.1f} s and {seconds.max():.1f} s"


# ---------------------------------------------------------------------------------------------
# docs/cli.md


def options_table() -> str:
    """Every option of a training run as config.py declares it: flag (and aliases), default, the
    official recipe's value where it differs, what it does."""
    import dataclasses

    from ..core.config import TrainConfig

    paper_config, official = TrainConfig(), TrainConfig.from_recipe("official")
    lines = ["| flag | default | official recipe | what it does |", "|---|---|---|---|"]
    for f in dataclasses.fields(TrainConfig):
        flags = ", ".join(f"`{flag}`" for flag in (f"--{f.name.replace('_', '-')}", *f.metadata["flags"]))
        choices = f.metadata["choices"]
        what = f.metadata["help"] + (" (" + " \\| ".join(map(str, choices)) + ")" if choices else "")
        default, other = getattr(paper_config, f.name), getattr(official, f.name)
        lines.append(f"| {flags} | {default} | {other if other != default else ''} | {what} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# docs/speed.md


def benchmark(path: str, routing: int = 3, reconstruction: bool = True, batch_size: int = 128,
              model: str = "capsnet", column: str = "images_per_second"):
    """One value of results/benchmarks.csv (the committed `capslib bench`)."""
    rows = pd.read_csv(REPO / "results" / "benchmarks.csv")
    rows = rows[(rows.model == model) & (rows.path == path) & (rows.batch_size == batch_size)]
    if model == "capsnet":
        rows = rows[(rows.routing == routing) & (rows.reconstruction == reconstruction)]
    (value,) = rows[column]
    return value


SPEED_PATH_NOTES = {"fp32": "eager, strict float32 (TF32 off): the reference",
                    "tf32": "TF32 convolutions and matmuls",
                    "bf16": "bfloat16 autocast, channels_last (routing, squash, losses in float32)",
                    "compile": "+ `torch.compile`",
                    "graph": "+ the whole step (forward, backward, fused Adam) replayed as one CUDA graph"}


def speed_table() -> str:
    """The GPU speed paths, routing 3 + reconstruction at batch 128 (benchmarks.csv)."""
    lines = ["| path | what it adds | images/s | × fp32 |", "|---|---|---:|---:|"]
    for path, note in SPEED_PATH_NOTES.items():
        lines.append(f"| `{path}` | {note} | {benchmark(path):,.0f} | {benchmark(path, column='speedup_vs_fp32'):.1f} |")
    return "\n".join(lines)


HEADLINE = TrainConfig()  # MNIST, routing 3 + reconstruction, the paper recipe, seed 1: the study's headline run
# trained with --logs-dir results/speed/fp32_reference_<its run name>, strict fp32 (docs/speed.md)
FP32_REFERENCE = REPO / "results" / "speed" / f"fp32_reference_{run_name(HEADLINE)}"


def agreement(epochs: int = 20) -> str:
    """How the strict fp32 reference run (results/speed/) and table1's graph-path run of the same seed
    compare over their first `epochs` epochs (their metrics.csv)."""
    reference = pd.read_csv(FP32_REFERENCE / "metrics.csv")
    graph = pd.read_csv(REPO / "results" / "table1" / run_name(HEADLINE) / "metrics.csv")
    both = reference.merge(graph, on="epoch", suffixes=("_fp32", "_graph"))
    both = both[both.epoch <= epochs]
    last = both.iloc[-1]
    gap = (both.test_accuracy_fp32 - both.test_accuracy_graph).abs().max() * 100
    return (f"after {epochs} epochs of the same seed the fp32 reference reached {100 * last.test_accuracy_fp32:.2f}% "
            f"test accuracy and the graph path {100 * last.test_accuracy_graph:.2f}%, at most {gap:.2f} points apart "
            f"at any epoch")


def cpu_benchmark(path: str, column: str = "images_per_second"):
    """One value of results/benchmarks-cpu.csv (the committed `make bench-cpu`): a CPU path or 'port'."""
    rows = pd.read_csv(REPO / "results" / "benchmarks-cpu.csv")
    (value,) = rows.loc[rows.path == path, column]
    return value


CPU_PATH_NOTES = {"port": "the XifengGuo PyTorch port (tools/port_capsnet.py), eager float32",
                  "fp32": "eager, strict float32: the reference",
                  "bf16": "bfloat16 autocast, channels_last",
                  "compile": "+ `torch.compile` (inductor's C++ kernels)"}


def cpu_speed_table() -> str:
    """The CPU paths beside the port, routing 3 + reconstruction at batch 128 (benchmarks-cpu.csv)."""
    lines = ["| path | what it is | images/s | × port | × fp32 |", "|---|---|---:|---:|---:|"]
    for path, note in CPU_PATH_NOTES.items():
        lines.append(f"| `{path}` | {note} | {cpu_benchmark(path):,.0f} | "
                     f"{cpu_benchmark(path, 'speedup_vs_port'):.1f} | {cpu_benchmark(path, 'speedup_vs_fp32'):.1f} |")
    return "\n".join(lines)


def cpu_device() -> str:
    """The 'Device: ...' line of results/benchmarks-cpu.md: the CPU, torch, commit and date of the bench."""
    for line in (REPO / "results" / "benchmarks-cpu.md").read_text().splitlines():
        if line.startswith("Device: "):
            return line.removeprefix("Device: ").rstrip(".")
    raise ValueError("results/benchmarks-cpu.md has no Device line")


# One of the three convolutions of the primary capsules (forward, input gradient, weight gradient) on a
# batch of 128: 2 FLOP per multiply-add, 256 → 256 channels, a 9×9 kernel, 6×6 outputs.
PRIMARY_CONV_FLOP = 2 * 128 * 256 * 256 * 81 * 36


def _primary_conv_ms() -> float:
    """The primary capsules' three convolutions, ms per step, in results/benchmarks-cpu-profile.txt
    (tools/cpu_profile.py compile: its 'by part' line)."""
    text = (REPO / "results" / "benchmarks-cpu-profile.txt").read_text()
    (ms,) = re.findall(r"^\s*([\d.]+) ms\s+[\d.]+%\s+primary conv", text, flags=re.M)
    return float(ms)


def cpu_conv_rate() -> str:
    """'380 GFLOP/s (...)': the rate of the primary capsules' convolutions in the profiled compiled step."""
    ms = _primary_conv_ms()
    return (f"{3 * PRIMARY_CONV_FLOP / ms / 1e6:,.0f} GFLOP/s together ({ms:.0f} ms of a step of 128 images, "
            "measured with the profiler)")


def cpu_conv_bound() -> str:
    """'331 images/s, 5.7× the port': the throughput if the primary convolutions were all a step did."""
    bound = 128 / (_primary_conv_ms() / 1000)
    return f"{bound:,.0f} images/s, {bound / cpu_benchmark('port'):.1f}× the port"


def cpu_training_agreement() -> str:
    """How short training runs of one seed on the fp32 and compile paths compare (results/
    benchmarks-cpu-agreement.jsonl, tools/cpu_agreement.py train)."""
    rows = [json.loads(line) for line in (REPO / "results" / "benchmarks-cpu-agreement.jsonl").read_text().splitlines()]
    by_path = {row["path"]: row for row in rows}
    fp32, fast = by_path["fp32"], by_path["compile"]
    return (f"{fp32['epochs']} epochs of {fp32['train_images']:,} images, seed {fp32['seed']}: fp32 "
            f"{100 * fp32['test_accuracy']:.2f}% and compile {100 * fast['test_accuracy']:.2f}% test accuracy, "
            f"{fp32['wall_seconds'] / 60:.1f} and {fast['wall_seconds'] / 60:.1f} minutes "
            "([`results/benchmarks-cpu-agreement.jsonl`](../results/benchmarks-cpu-agreement.jsonl))")


def cpu_forward_agreement() -> str:
    """How the CPU paths' forward passes compare with fp32 eager on the same weights (results/
    benchmarks-cpu-forward.jsonl, tools/cpu_agreement.py forward --ckpt <the laptop run's last.pt>)."""
    rows = [json.loads(line) for line in (REPO / "results" / "benchmarks-cpu-forward.jsonl").read_text().splitlines()]
    trained = [r for r in rows if r["weights"].startswith("trained")]
    worst = max(trained, key=lambda r: r["lengths_rel_err"])
    random_weights = [r for r in rows if not r["weights"].startswith("trained")]
    return (f"on the laptop model's weights the capsule lengths of every path are within {worst['lengths_rel_err']:.1e} "
            f"relative error of fp32 eager on 1,000 test images, with "
            f"{min(r['same_predictions'] for r in trained):.1%} of the predictions the same (on random weights, "
            f"W × 30, as early in training: {max(r['lengths_rel_err'] for r in random_weights):.1e} and "
            f"{min(r['same_predictions'] for r in random_weights):.1%}; "
            "[`results/benchmarks-cpu-forward.jsonl`](../results/benchmarks-cpu-forward.jsonl))")


# ---------------------------------------------------------------------------------------------
# the laptop profile's run (make laptop)

LAPTOP_RUN = REPO / "results" / "laptop" / "table1" / run_name(sized(HEADLINE, "laptop"), protocol("table1"))


def laptop() -> dict:
    """The committed laptop run: final test accuracy (%), wall minutes from start to its logs' end, epochs,
    speed path, the device, commit, torch and date of its session (run.json, metrics.csv)."""
    info = json.loads((LAPTOP_RUN / "run.json").read_text())
    history = pd.read_csv(LAPTOP_RUN / "metrics.csv")
    (session,) = info["sessions"]  # trained in one go: its wall time is the time to the model
    return {"accuracy": 100 * history.test_accuracy.iloc[-1], "minutes": info["summary"]["wall_seconds"] / 60,
            "epochs": len(history), "path": info["speed_path"], "device": session["device"],
            "commit": session["commit"], "software": session["software"], "date": session["date"][:10]}


def laptop_sentence() -> str:
    """'99.25% test accuracy after 3 epochs in 14.2 minutes (...)'."""
    run = laptop()
    return (f"{run['accuracy']:.2f}% test accuracy after {run['epochs']} epochs in {run['minutes']:.1f} minutes "
            f"(speed path `{run['path']}`; {run['device']}, {run['software']}, commit `{run['commit']}`, {run['date']})")


def laptop_epoch_minutes() -> str:
    """'5.5': the minutes the laptop run's last epoch took with its evaluation (metrics.csv wall_seconds)."""
    wall = pd.read_csv(LAPTOP_RUN / "metrics.csv").wall_seconds
    return f"{(wall.iloc[-1] - wall.iloc[-2]) / 60:.1f}"


def laptop_compile_seconds() -> str:
    """'80': how much longer the laptop run's first epoch (which compiled the model) took than its second."""
    seconds = pd.read_csv(LAPTOP_RUN / "metrics.csv").epoch_seconds
    return f"{seconds.iloc[0] - seconds.iloc[1]:.0f}"


def table1_accuracy_after(epoch: int, configuration: TrainConfig = HEADLINE) -> str:
    """'98.91–99.21%': the test accuracy of table1's seeds of a configuration (any seed's config) after `epoch`
    epochs (metrics.csv)."""
    folders = [REPO / "results" / "table1" / run_name(dataclasses.replace(configuration, seed=seed), protocol("table1"))
               for seed in (1, 2, 3)]
    accuracies = [pd.read_csv(folder / "metrics.csv").set_index("epoch").test_accuracy[epoch] * 100
                  for folder in folders]
    return f"{min(accuracies):.2f}–{max(accuracies):.2f}%"


# ---------------------------------------------------------------------------------------------
# docs/experiments.md: MultiMNIST and affine robustness


def _optional_table(name: str) -> pd.DataFrame | None:
    return table(name) if (TABLES / f"{name}.csv").exists() else None


def multimnist_error(configuration: str = ROUTING3) -> str:
    """'10.12 ± 0.18': a configuration's MultiMNIST test error over seeds (multimnist.csv), or NOT_RUN."""
    rows = _optional_table("multimnist")
    rows = rows[rows.configuration == configuration] if rows is not None else rows
    if rows is None or rows.empty:
        return NOT_RUN
    row = rows.iloc[0]
    return mean_std(row.test_error_mean, row.test_error_std) or NONE


def multimnist_per_seed(column: str = "test_error", configuration: str = ROUTING3) -> str:
    """'10.33 / 10.05 / 9.99': each seed's value (multimnist_runs.csv), in seed order."""
    rows = table("multimnist_runs")
    return " / ".join(f"{v:.2f}" for v in rows[rows.configuration == configuration].sort_values("seed")[column])


def study_provenance(study: str) -> str:
    """'1× NVIDIA H100 80GB HBM3, torch 2.11.0+cu130, 2026-12-07, commit `f4cb5085bb30`': where the
    committed runs of a study were trained (every session of their run.json)."""
    return provenance(pd.DataFrame([s for run in find_runs(REPO / "results" / study) for s in run.info["sessions"]]))


def last_evaluation_range(study: str, column: str, scale: float = 100, digits: int = 1, **config) -> str:
    """'90.1–90.6': the lowest and highest value of a metrics.csv column at the last evaluation of the
    committed runs of a study whose config has the given values."""
    values = [run.history[column].iloc[-1] * scale for run in find_runs(REPO / "results" / study)
              if all(getattr(run.config, k) == v for k, v in config.items())]
    low, high = f"{min(values):,.{digits}f}", f"{max(values):,.{digits}f}"
    return low if low == high else f"{low}–{high}"


def multimnist_ratio_to_paper(configuration: str = ROUTING3) -> str:
    """'1.9': the mean MultiMNIST test error over the paper's (multimnist.csv)."""
    row = table("multimnist").set_index("configuration").loc[configuration]
    return f"{row.test_error_mean / row.paper_error:.1f}"


def multimnist_seed_spread_in_se(configuration: str = ROUTING3) -> str:
    """'6': the sample std over seeds in units of a run's binomial standard error (multimnist*.csv)."""
    spread = table("multimnist").set_index("configuration").loc[configuration].test_error_std
    runs_ = table("multimnist_runs")
    return f"{spread / runs_[runs_.configuration == configuration].test_error_se.mean():.0f}"


def other_experiments_status() -> str:
    """README: where MultiMNIST and affine robustness stand, from their tables (NOT_RUN where none)."""
    capsnet, baseline = multimnist_error(), multimnist_error("baseline CNN")
    multimnist = (f"MultiMNIST: CapsNet {capsnet}% test error (3 seeds, 1M test pairs; "
                  f"{study_provenance('multimnist')}) against the paper's {paper.MULTIMNIST[ROUTING3]}%: "
                  f"**not reproduced**; baseline CNN {baseline}" if capsnet != NOT_RUN else f"MultiMNIST: {NOT_RUN}")
    affine = "trained" if _optional_table("affine") is not None else NOT_RUN
    return (f"{multimnist}; affine robustness: {affine} "
            "([docs/experiments.md](docs/experiments.md)).")
