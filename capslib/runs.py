"""Run folders: what a training run writes, and reading it back.

    <logs dir>/run.json        config, provenance, status and summary of the run
    <logs dir>/metrics.csv     one row per epoch (rewritten whole, atomically, each epoch)
    <logs dir>/events.out.*    the same numbers for TensorBoard
    <ckpt dir>/last.pt         checkpoint after the latest epoch
    <ckpt dir>/best.pt         checkpoint of the epoch with the best test accuracy

The checkpoint holds the history too, so a resumed run rewrites metrics.csv from it: the CSV never
disagrees with the checkpoint it belongs to.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .checkpoint import LAST
from .config import TrainConfig
from .errors import RunFolderError
from .files import atomic_write_text

METRICS, RUN_INFO = "metrics.csv", "run.json"

COLUMNS = ["epoch", "lr", "train_loss", "train_margin_loss", "train_reconstruction_loss", "train_accuracy",
           "test_loss", "test_margin_loss", "test_reconstruction_loss", "test_accuracy", "test_error",
           "epoch_seconds", "train_images_per_second", "wall_seconds"]


def _is_empty(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def _holds_only_a_start(folder: Path) -> bool:
    """What a run writes before its first checkpoint: nothing worth keeping if it was cut off."""
    return all(p.name == RUN_INFO or p.name.startswith("events.out.tfevents") for p in folder.iterdir())


def checkpoint_to_resume(ckpt_dir: Path, log_dir: Path, resume: bool) -> Path | None:
    """The checkpoint a run continues from, or None for a fresh start.

    A fresh start needs empty folders, so that nothing already written is overwritten; with
    `resume`, an existing last.pt is continued, and empty folders (or ones holding only the start
    of a run cut off before its first checkpoint) start a new run."""
    last = Path(ckpt_dir) / LAST
    if resume and last.is_file():
        return last
    # named as the command line and the notebooks (02_train's runs_dir, results_dir, resume) call them
    for folder, flag in ((Path(ckpt_dir), "--ckpt-dir (notebook: runs_dir)"),
                         (Path(log_dir), "--logs-dir (notebook: results_dir)")):
        if not _is_empty(folder) and not (resume and _holds_only_a_start(folder)):
            hint = ("pass --resume (notebook: resume = True) to continue it" if last.is_file()
                    else "it holds no checkpoint to resume")
            raise RunFolderError(f"{flag} {folder} is not empty ({hint}), or choose another folder")
    return None


def write_metrics(log_dir: Path, history: list[dict]) -> None:
    atomic_write_text(Path(log_dir) / METRICS, pd.DataFrame(history, columns=COLUMNS).to_csv(index=False))


def write_run_info(log_dir: Path, info: dict) -> None:
    atomic_write_text(Path(log_dir) / RUN_INFO, json.dumps(info, indent=2) + "\n")


@dataclass
class Run:
    folder: Path
    config: TrainConfig
    info: dict
    history: pd.DataFrame

    @property
    def label(self) -> str:
        return configuration_label(self.config)


def run_name(config: TrainConfig) -> str:
    """<dataset>_<configuration>_seed<N>: mnist_routing3_recon_seed1, mnist_baseline_seed2, ...
    (the Makefile builds the same names)."""
    if config.model == "baseline":
        return f"{config.dataset}_baseline_seed{config.seed}"
    recon = "recon" if config.reconstruction else "norecon"
    return f"{config.dataset}_routing{config.routing_iterations}_{recon}_seed{config.seed}"


RUN_NAME = re.compile(r"(?P<dataset>[a-z-]+)_(?:(?P<baseline>baseline)|routing(?P<routing>[0-9]+)_(?P<recon>recon|norecon))"
                      r"_seed(?P<seed>[0-9]+)")


def parse_run_name(name: str) -> dict:
    """The TrainConfig fields that `run_name` encodes, read back from a run name."""
    match = RUN_NAME.fullmatch(name)
    if match is None:
        raise RunFolderError(f"{name!r} is not a run name such as mnist_routing3_recon_seed1 or mnist_baseline_seed1")
    if match["baseline"]:
        return {"dataset": match["dataset"], "model": "baseline", "reconstruction": False, "seed": int(match["seed"])}
    return {"dataset": match["dataset"], "model": "capsnet", "routing_iterations": int(match["routing"]),
            "reconstruction": match["recon"] == "recon", "seed": int(match["seed"])}


def configuration_label(config: TrainConfig) -> str:
    """Table 1's row names: 'baseline CNN', 'routing 3, reconstruction', 'routing 1, no reconstruction'."""
    if config.model == "baseline":
        return "baseline CNN"
    recon = "reconstruction" if config.reconstruction else "no reconstruction"
    return f"routing {config.routing_iterations}, {recon}"


def read_run(folder: Path) -> Run:
    """A run folder (its logs dir) read back: config, run.json and metrics.csv."""
    folder = Path(folder)
    try:
        info = json.loads((folder / RUN_INFO).read_text())
        history = pd.read_csv(folder / METRICS)
    except FileNotFoundError as err:
        raise RunFolderError(f"{folder}: not a run folder (missing {Path(err.filename).name})") from None
    return Run(folder, TrainConfig.from_dict(info["config"]), info, history)


def find_runs(root: Path | str, pattern: str = "*") -> list[Run]:
    """The run folders `root`/`pattern` that hold a finished first epoch (run.json and metrics.csv),
    sorted by path. A run that has just started (no metrics.csv yet) is skipped, not an error: tables
    are rebuilt while other runs train."""
    folders = sorted(p.parent for p in Path(root).glob(f"{pattern}/{RUN_INFO}"))
    return [read_run(folder) for folder in folders if (folder / METRICS).is_file()]


def best_run(root: Path | str, pattern: str) -> Run:
    """Of the completed runs matching `pattern`, the one with the lowest final test error.

    Used only to choose which model the reconstruction and perturbation figures show; every
    reported error is the final epoch's of each run (or clearly labelled 'best epoch')."""
    runs = [r for r in find_runs(root, pattern) if r.info.get("status") == "complete" and not r.history.empty]
    if not runs:
        raise RunFolderError(f"no completed run matches {Path(root) / pattern}")
    return min(runs, key=lambda r: (r.history.test_error.iloc[-1], str(r.folder)))
