"""Where a run lives: its name, its folders and the files in them, declared once.

    <runs dir>/[<study>/]<run>/last.pt        checkpoint of the latest saved evaluation (weights, Adam, RNG, history)
    <runs dir>/[<study>/]<run>/best.pt        weights of the selected evaluation
    <results dir>/[<study>/]<run>/run.json    config, provenance, status and summary of the run
    <results dir>/[<study>/]<run>/metrics.csv one row per evaluation
    <results dir>/[<study>/]<run>/misses.csv.gz the test examples the run got wrong, with what it predicted,
                                              at its last evaluation and at the selected one (runs.py)
    <results dir>/[<study>/]<run>/events.out.*  the same numbers for TensorBoard (not committed)

Checkpoints (~100 MB each) stay out of git under runs/; the logs are the study's record, committed
under results/. A run is named by `run_name`, from its config (and, in a study's folder, what all of the
study's runs share); nothing parses a name back.

Two runs of different setups never share a name, and so never a folder: the name spells out what the
tables group runs by (dataset, model, routing, reconstruction, recipe and the components switched from
it, seed) and adds a short digest of every other choice that changes what a run trains or scores, when
any differs from what that readable part and the study's protocol imply. Why a digest, not every choice
spelled out: a field added to TrainConfig is covered with no naming rule to write, and changes no
existing name until a run sets it (only choices that differ enter the digest); names stay short and
safe for shells, make and Slurm whatever the values (floats, None). `capslib train --show-config` and
run.json say what the digest stands for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from .config import CAPSNET_ONLY, RESUMABLE_CHANGES, TrainConfig, kind

LAST, BEST = "last.pt", "best.pt"
METRICS, RUN_INFO, MISSES = "metrics.csv", "run.json", "misses.csv.gz"
RUNS_DIR = "runs"  # checkpoints, when no folder is given


# What the readable part of a run's name spells out (configuration_label, variant): never in the digest.
NAMED = ("dataset", "model", "routing_procedure", "routing_iterations", "reconstruction", "recipe", "seed")
DIGEST_LENGTH = 6  # hex digits: 16.7M values, for the handful of setups that share a readable name


def run_name(config: TrainConfig, protocol: dict | None = None) -> str:
    """<dataset>_<configuration>[_<variant>][_<digest>]_seed<N>: mnist_routing3_recon_seed1, mnist_baseline_seed2,
    mnist_routing3_recon_official_seed1, mnist_routing3_recon_paper+bias_seed1 (the paper recipe needs
    no variant), mnist_uniform-routing3_recon_seed1 (a routing procedure other than the paper's), and
    mnist_routing3_recon_5c1e9a_seed1 (a choice outside the readable part: `unnamed_choices`). `protocol`:
    the values that every run of the run's study shares (studies.protocol), which its folder says."""
    variant = "" if config.variant() == "paper" else f"_{config.variant()}"
    choices = unnamed_choices(config, protocol)
    digest = f"_{name_digest(choices)}" if choices else ""
    if config.model == "baseline":
        return f"{config.dataset}_baseline{variant}{digest}_seed{config.seed}"
    recon = "recon" if config.reconstruction else "norecon"
    return f"{config.dataset}_{_routing(config)}{config.routing_iterations}_{recon}{variant}{digest}_seed{config.seed}"


def _routing(config: TrainConfig) -> str:
    """'routing' for the paper's procedure (as every committed run is named), else '<procedure>-routing'."""
    return "routing" if config.routing_procedure == "dynamic" else f"{config.routing_procedure}-routing"


def name_digest(choices: dict) -> str:
    """The digest that stands for `choices` (unnamed_choices) in a run's name: the first hex digits of
    the SHA-256 of their JSON, keys sorted (the same choices, the same digest, on any machine)."""
    return hashlib.sha256(json.dumps(choices, sort_keys=True).encode()).hexdigest()[:DIGEST_LENGTH]


def unnamed_choices(config: TrainConfig, protocol: dict | None = None) -> dict:
    """The choices of `config` that the readable part of its name does not say: every field that changes
    what the run trains or scores (all but RESUMABLE_CHANGES and NAMED; for the baseline, not CAPSNET_ONLY)
    whose value differs from the one implied by its recipe and variant (config.implied_by_variant), or by
    `protocol` where the study sets it. Floats as floats: lr 1 and 1.0 are one choice."""
    implied = {**config.implied_by_variant(), **(protocol or {})}
    ignored = set(RESUMABLE_CHANGES + NAMED + (CAPSNET_ONLY if config.model == "baseline" else ()))
    choices = {}
    for f in dataclasses.fields(TrainConfig):
        value = getattr(config, f.name)
        if f.name not in ignored and value != implied[f.name]:
            choices[f.name] = float(value) if kind(f)[0] is float and value is not None else value
    return choices


def configuration_label(config: TrainConfig) -> str:
    """Table 1's row names: 'baseline CNN', 'routing 3, reconstruction', 'routing 1, no reconstruction'
    ('uniform routing 3, reconstruction' for another procedure)."""
    if config.model == "baseline":
        return "baseline CNN"
    recon = "reconstruction" if config.reconstruction else "no reconstruction"
    procedure = "" if config.routing_procedure == "dynamic" else f"{config.routing_procedure} "
    return f"{procedure}routing {config.routing_iterations}, {recon}"


def placed(config: TrainConfig, study: str | None = None, runs_dir: Path | str = RUNS_DIR,
           results_dir: Path | str | None = None, protocol: dict | None = None) -> TrainConfig:
    """`config` with its folders: checkpoints in runs_dir/[study/]<run>, logs in results_dir/[study/]<run>
    (without a results_dir, beside the checkpoints), the run named within the study's `protocol`. Folders
    the config already names are kept, and either of ckpt_dir and logs_dir alone serves for both (as the
    TensorFlow study's flags do)."""
    name = run_name(config, protocol)
    within = Path(study) / name if study else Path(name)
    ckpt_dir = config.ckpt_dir or config.logs_dir or str(Path(runs_dir) / within)
    logs_dir = config.logs_dir or (str(Path(results_dir) / within) if results_dir is not None else None)
    return dataclasses.replace(config, ckpt_dir=ckpt_dir, logs_dir=logs_dir)
