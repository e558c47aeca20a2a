"""What the study's notebooks do before their own work, in one place: work from the clone the
notebook belongs to, size a run by profile, and find a trained model or train a short one.

Paths a notebook takes (results_dir, runs_dir, logs_dir) are relative to the root of the clone the
notebook runs in, found from the working directory: JupyterLab starts a kernel in the notebook's
folder, papermill in the folder it is called from (or --cwd). Not capslib's install location: from
a second clone, the notebooks write into that clone.
"""

from __future__ import annotations

import os
from pathlib import Path

from .analysis import TrainedRun, load_trained
from .checkpoint import LAST
from .config import TrainConfig
from .errors import RunFolderError
from .profiles import Profile, resolve_profile
from .runs import Run, best_run, find_runs, parse_run_name, run_name
from .speed import resolve_device
from .train import train


def say(markdown: str) -> None:
    """Show `markdown` as notebook output (plain text outside a notebook kernel)."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:
        get_ipython = None
    if get_ipython is None or get_ipython() is None:
        print(markdown)
    else:
        display(Markdown(markdown))


def find_root(start: Path | str | None = None) -> Path | None:
    """The nearest folder at or above `start` (default: the working directory) that holds this
    repository (capslib/ and notebooks/), or None."""
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "capslib" / "__init__.py").is_file() and (folder / "notebooks").is_dir():
            return folder
    return None


def start(results_dir: str | Path) -> Path:
    """Work from the root of the clone this notebook runs in (the working directory if it is in
    none) and return the folder the notebook writes to."""
    root = find_root()
    if root is not None:
        os.chdir(root)
    return Path(results_dir)


def run_config(profile: str = "auto", runs_dir: str | Path = "scratch/runs",
               results_dir: str | Path = "scratch/results", *, epochs: int | None = None,
               batch_size: int | None = None, train_subset: int | None = None, test_subset: int | None = None,
               recipe: str = "paper", **fields) -> TrainConfig:
    """The TrainConfig of a run sized by `profile` (sizes given here override the profile's) with
    the choices of `recipe` (any field given, not None, overrides the recipe's), with checkpoints in
    runs_dir/<run> and logs in results_dir/runs/<run>. Says what it chose."""
    device = resolve_device(fields.get("device", "auto"))
    chosen = resolve_profile(profile, device)
    given = {"epochs": epochs, "batch_size": batch_size, "train_subset": train_subset, "test_subset": test_subset}
    sizes = {name: getattr(chosen, name) if value is None else value for name, value in given.items()}
    config = TrainConfig.from_recipe(recipe, **{k: v for k, v in fields.items() if v is not None}, **sizes)
    name = run_name(config)
    config.ckpt_dir, config.logs_dir = str(Path(runs_dir) / name), str(Path(results_dir) / "runs" / name)
    config.validate()
    why = f" (auto: {'a CUDA GPU' if device.type == 'cuda' else 'no CUDA GPU'})" if profile == "auto" else ""
    overridden = [f"{k} = {v}" for k, v in given.items() if v is not None]
    message = (f"**{name}**, profile **{chosen.name}**{why}{', with ' + ', '.join(overridden) if overridden else ''}: "
               f"{Profile('', **sizes).describe()}, on {device.type.upper()}. "
               f"Checkpoints in `{config.ckpt_dir}`, logs in `{config.logs_dir}`.")
    if device.type == "cpu" and chosen.name == "full":
        message += (" **The full profile is the study's size, meant for a GPU**: on a 2-core CPU one epoch of "
                    "60,000 images takes about 15 minutes (40 epochs: about 10 hours). Profile `quick` runs in minutes.")
    say(message)
    return config


def trained_run(configuration: str, runs_dir: str | Path = "scratch/runs", results_dir: str | Path = "scratch/results",
                profile: str = "auto", device: str = "auto") -> TrainedRun:
    """The trained model of `configuration` (a run name without its seed, e.g. mnist_routing3_recon)
    with its test set: of the complete runs <configuration>_seed* logged in results_dir/runs, the one
    with the lowest final test error, loaded from its checkpoint in runs_dir.

    When there is none (a fresh clone: checkpoints are not committed), train one now, sized by
    `profile`, and say so: the figures then show a briefly trained model, not the study's."""
    pattern, logs = f"{configuration}_seed*", Path(results_dir) / "runs"
    try:
        run = best_run(logs, pattern)
        count = len([r for r in find_runs(logs, pattern) if r.info.get("status") == "complete"])
        chosen = f"the lowest final test error of {count} complete `{configuration}` run{'s' if count > 1 else ''}"
    except RunFolderError:
        say(f"No complete run of `{configuration}` is logged in `{logs}` (a fresh clone has none: checkpoints "
            "are too large to commit). **Training a short one now**, so that this notebook has a model to show; "
            "its figures show what a briefly trained model does, not the study's results (for those, train the "
            "full run: 02_train with profile `full` on a GPU, or `make mnist figures fashion`).")
        config = run_config(profile, runs_dir, results_dir, device=device, **parse_run_name(f"{configuration}_seed1"))
        run = train(config, resume=True)
        chosen = "trained just now"
    checkpoint = Path(runs_dir) / run.folder.name
    if not (checkpoint / LAST).is_file():
        raise RunFolderError(f"{run.folder}: its checkpoint {checkpoint / LAST} is missing (checkpoints are not "
                             "committed): train the run again, or set runs_dir to where its checkpoints are")
    trained = load_trained(checkpoint, device=device)
    result = trained.evaluation
    say(f"Run **{run.folder.name}** ({chosen}), epoch {trained.epoch}: test error **{result.error_percent:.2f}%** "
        f"({len(result.misclassified):,} of {len(result.labels):,} test images misclassified, float32 inference).")
    return trained


def study(name: str, seeds, profile: str = "auto", runs_dir: str | Path = "scratch/runs",
          results_dir: str | Path = "scratch/results", device: str = "auto", progress: bool = False) -> list:
    """Train (or resume, or just read back) every run of study `name` (capslib/studies.py: multimnist,
    affine, ...) sized by `profile`, checkpoints in runs_dir/<name>/<run>, logs in
    results_dir/<name>/<run>; return the runs. Says what it chose. `make` trains them first, with a
    sweep over the GPUs; then this only reads them."""
    from .studies import study_runs

    chosen = resolve_profile(profile, resolve_device(device)).name
    configs = study_runs(name, list(seeds), Path(runs_dir), Path(results_dir), chosen, device=device)
    say(f"**{name}**: {len(configs)} runs ({', '.join(Path(c.log_dir).name for c in configs)}), profile "
        f"**{chosen}**: {configs[0].epochs} epochs of {configs[0].train_subset or 'all'} training images at batch "
        f"{configs[0].batch_size}; logs in `{Path(results_dir) / name}`.")
    return [train(config, resume=True, progress=progress) for config in configs]


def logged_runs(logs_root: str | Path, name: str, pattern: str = "*") -> list[Run]:
    """The complete runs of study `name` (capslib/studies.py) logged in logs_root/<name>; says so when
    there is none yet, and how to train them."""
    runs = [r for r in find_runs(Path(logs_root) / name, pattern) if r.info.get("status") == "complete"]
    if not runs:
        say(f"No complete run of the study `{name}` is logged in `{Path(logs_root) / name}` yet: "
            f"`capslib sweep {name}` (or its step in the Makefile) trains them, on a GPU.")
    return runs
