"""Where a run lives: its name, its folders and the files in them, declared once.

    <runs dir>/[<study>/]<run>/last.pt        checkpoint of the latest saved evaluation (weights, Adam, RNG, history)
    <runs dir>/[<study>/]<run>/best.pt        weights of the selected evaluation
    <results dir>/[<study>/]<run>/run.json    config, provenance, status and summary of the run
    <results dir>/[<study>/]<run>/metrics.csv one row per evaluation
    <results dir>/[<study>/]<run>/misses.csv.gz the test examples the run got wrong, with what it predicted,
                                              at its last evaluation and at the selected one (runs.py)
    <results dir>/[<study>/]<run>/events.out.*  the same numbers for TensorBoard (not committed)

Checkpoints (~100 MB each) stay out of git under runs/; the logs are the study's record, committed
under results/. A run is named by `run_name`, from its config alone; nothing parses a name back.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .config import TrainConfig

LAST, BEST = "last.pt", "best.pt"
METRICS, RUN_INFO, MISSES = "metrics.csv", "run.json", "misses.csv.gz"
RUNS_DIR = "runs"  # checkpoints, when no folder is given


def run_name(config: TrainConfig) -> str:
    """<dataset>_<configuration>[_<variant>]_seed<N>: mnist_routing3_recon_seed1, mnist_baseline_seed2,
    mnist_routing3_recon_official_seed1, mnist_routing3_recon_paper+bias_seed1 (the paper recipe needs
    no variant)."""
    variant = "" if config.variant() == "paper" else f"_{config.variant()}"
    if config.model == "baseline":
        return f"{config.dataset}_baseline{variant}_seed{config.seed}"
    recon = "recon" if config.reconstruction else "norecon"
    return f"{config.dataset}_routing{config.routing_iterations}_{recon}{variant}_seed{config.seed}"


def configuration_label(config: TrainConfig) -> str:
    """Table 1's row names: 'baseline CNN', 'routing 3, reconstruction', 'routing 1, no reconstruction'."""
    if config.model == "baseline":
        return "baseline CNN"
    recon = "reconstruction" if config.reconstruction else "no reconstruction"
    return f"routing {config.routing_iterations}, {recon}"


def placed(config: TrainConfig, study: str | None = None, runs_dir: Path | str = RUNS_DIR,
           results_dir: Path | str | None = None) -> TrainConfig:
    """`config` with its folders: checkpoints in runs_dir/[study/]<run>, logs in results_dir/[study/]<run>
    (without a results_dir, beside the checkpoints). Folders the config already names are kept, and
    either of ckpt_dir and logs_dir alone serves for both (as the TensorFlow study's flags do)."""
    within = Path(study) / run_name(config) if study else Path(run_name(config))
    ckpt_dir = config.ckpt_dir or config.logs_dir or str(Path(runs_dir) / within)
    logs_dir = config.logs_dir or (str(Path(results_dir) / within) if results_dir is not None else None)
    return dataclasses.replace(config, ckpt_dir=ckpt_dir, logs_dir=logs_dir)
