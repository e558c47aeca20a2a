"""What the study's notebooks do before their own work, in one place: work from the clone the
notebook belongs to, size a run by profile, and find a trained model or train a short one.

Paths a notebook takes (results_dir, runs_dir, logs_root) are relative to the root of the clone the
notebook runs in, found from the working directory: JupyterLab starts a kernel in the notebook's
folder, papermill in the folder it is called from (or --cwd). Not capslib's install location: from
a second clone, the notebooks write into that clone.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.config import TrainConfig
from ..core.errors import RunFolderError
from ..core.layout import LAST, run_name
from ..core.runs import Run, find_runs
from ..core.speed import resolve_device
from ..core.train import train
from .analysis import TrainedRun, load_trained
from .profiles import describe, resolve_profile, sized
from .studies import place, protocol, study_runs
from .sweep import finished_run


# Where `make laptop` (the laptop profile: a CapsNet past 99% on a CPU in about a quarter of an hour)
# keeps its checkpoints and logs: a notebook on a CPU, left at profile auto, shows that model when
# nothing of its own is logged. Both under runs/ (ignored by git), not results/laptop: that is the
# committed record of the run the docs quote, whose logs would make a user's sweep find the run done
# (with no checkpoint here) and which a user's run must not write over.
LAPTOP_RUNS, LAPTOP_RESULTS = Path("runs/laptop"), Path("runs/laptop/logs")


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


def _profile(profile: str, device: str) -> tuple[str, str]:
    """The profile `profile` resolves to on `device`, and why (for 'auto')."""
    cuda = resolve_device(device).type == "cuda"
    why = f" (auto: {'a CUDA GPU' if cuda else 'no CUDA GPU'})" if profile == "auto" else ""
    return resolve_profile(profile, cuda), why


def run_config(profile: str = "auto", study: str = "table1", runs_dir: str | Path = "scratch/runs",
               results_dir: str | Path = "scratch/results", **options) -> TrainConfig:
    """The TrainConfig of one run: `options` (any TrainConfig field; None keeps the recipe's value; a
    `recipe` starts from that preset), sized by `profile` where no size is given, with checkpoints in
    runs_dir/<study>/<run> and logs in results_dir/<study>/<run>. Says what it chose."""
    given = {name: value for name, value in options.items() if value is not None}
    config = TrainConfig.from_recipe(given.pop("recipe", "paper"), **given)
    name, why = _profile(profile, config.device)
    config = place(sized(config, name, keep=tuple(given)).validate(), study, runs_dir, results_dir)
    overridden = [f"{k} = {v}" for k, v in given.items() if k in ("epochs", "batch_size", "train_subset", "test_subset")]
    message = (f"**{Path(config.log_dir).name}**, profile **{name}**{why}"
               f"{', with ' + ', '.join(overridden) if overridden else ''}: {describe(config)}, on "
               f"{resolve_device(config.device).type.upper()}. Checkpoints in `{config.ckpt_dir}`, logs in `{config.log_dir}`.")
    if resolve_device(config.device).type == "cpu" and name == "full":
        message += (" **The full profile is the study's size, meant for a GPU**: on a 2-core CPU one epoch of "
                    "60,000 images takes about 15 minutes (40 epochs: about 10 hours). Profile `quick` runs in minutes.")
    say(message)
    return config


def matching_runs(logs: Path, **fields) -> list[Run]:
    """The complete runs logged in `logs` whose config has the values `fields` (recipe: its variant)."""
    def matches(run: Run) -> bool:
        values = {**run.config.to_dict(), "recipe": run.config.variant()}
        return all(values[name] == value for name, value in fields.items())

    return [r for r in find_runs(logs) if r.info.get("status") == "complete" and not r.history.empty and matches(r)]


def lowest_final_error(runs: list[Run]) -> Run:
    """The run whose figures a notebook shows: the lowest final test error (ties: the first folder).
    Every reported error is each run's own final one; this choice only picks a model to draw."""
    return min(runs, key=lambda r: (r.history.test_error.iloc[-1], str(r.folder)))


def trained_run(study: str = "table1", runs_dir: str | Path = "scratch/runs", results_dir: str | Path = "scratch/results",
                profile: str = "auto", device: str = "auto", **fields) -> TrainedRun:
    """The trained model of the configuration `fields` (TrainConfig fields, e.g. dataset="mnist",
    routing_iterations=3, reconstruction=True; the paper recipe unless `recipe` is given) with its test
    set: of the complete such runs logged in results_dir/<study>, the one with the lowest final test
    error, loaded from its checkpoint in runs_dir/<study>.

    When there is none (a fresh clone: checkpoints are not committed), train one now, sized by
    `profile`, and say so: the figures then show a briefly trained model, not the study's."""
    fields = {"recipe": "paper", "model": "capsnet", **fields}
    logs = Path(results_dir) / study
    described = ", ".join(f"{k} = {v}" for k, v in fields.items())
    runs = matching_runs(logs, **fields)
    laptop = None
    if not runs and profile == "auto" and resolve_device(device).type == "cpu":
        laptop = _laptop_run(study, **fields)
    if runs:
        run = lowest_final_error(runs)
        chosen = f"the lowest final test error of {len(runs)} complete run{'s' if len(runs) > 1 else ''} of it"
    elif laptop is not None:
        run, runs_dir = laptop, LAPTOP_RUNS
        chosen = f"the laptop profile's, trained on a CPU by `make laptop`; logs in `{run.folder}`"
    else:
        say(f"No complete run of {described} is logged in `{logs}` (a fresh clone has none: checkpoints "
            "are too large to commit). **Training a short one now**, so that this notebook has a model to show; "
            "its figures show what a briefly trained model does, not the study's results (for those, train the "
            "full run: 02_train with profile `full` on a GPU, or `make table1 figures fashion`). "
            f"On a CPU, `{laptop_command(study, **fields)}` trains this configuration in about a quarter of an "
            "hour (the laptop profile: MNIST's CapsNet past 99%); left at profile `auto` on a CPU, this notebook "
            "then shows that model.")
        run = train(run_config(profile, study, runs_dir, results_dir, device=device, **fields), resume=True)
        chosen = "trained just now"
    checkpoint = checkpoint_of(run, runs_dir, study)
    if not (checkpoint / LAST).is_file():
        raise RunFolderError(f"{run.folder}: its checkpoint {checkpoint / LAST} is missing (checkpoints are not "
                             "committed): train the run again, or set runs_dir to where its checkpoints are")
    trained = load_trained(checkpoint, device=device)
    result = trained.evaluation
    say(f"Run **{run.folder.name}** ({chosen}), epoch {trained.epoch}: test error **{result.error_percent:.2f}%** "
        f"({len(result.misclassified):,} of {len(result.labels):,} test images misclassified, float32 inference).")
    return trained


def _laptop_run(study: str, **fields) -> Run | None:
    """The laptop profile's run of this configuration (`make laptop`), if its checkpoint is here."""
    runs = [run for run in matching_runs(LAPTOP_RESULTS / study, **fields)
            if (checkpoint_of(run, LAPTOP_RUNS, study) / LAST).is_file()]
    return lowest_final_error(runs) if runs else None


def laptop_command(study: str, recipe: str = "paper", **fields) -> str:
    """The one command that trains the configuration `fields` with the laptop profile, where the
    notebooks find it (`make laptop` is this for Table 1's MNIST CapsNet, routing 3 + reconstruction)."""
    config = sized(TrainConfig.from_recipe(recipe, **fields), "laptop")
    return (f"capslib sweep {study} --profile laptop --only {run_name(config, protocol(study))} --seeds {config.seed} "
            f"--runs-dir {LAPTOP_RUNS} --results-dir {LAPTOP_RESULTS}")


def study(name: str, seeds, profile: str = "auto", runs_dir: str | Path = "scratch/runs",
          results_dir: str | Path = "scratch/results", device: str = "auto", progress: bool = False) -> list[Run]:
    """Train (or resume, or just read back) every run of study `name` (studies.py: multimnist, affine,
    ...) sized by `profile`, checkpoints in runs_dir/<name>/<run>, logs in results_dir/<name>/<run>;
    return the runs. Says what it chose. `make` trains them first, with a sweep over the GPUs; then
    this only reads them: a run whose logs say it finished is read, not resumed, as a sweep decides
    (sweep.finished_run), since its checkpoint may have stayed on the GPU machine."""
    chosen, why = _profile(profile, device)
    configs = study_runs(name, list(seeds), runs_dir, results_dir, chosen, device=device)
    say(f"**{name}**: {len(configs)} runs ({', '.join(Path(c.log_dir).name for c in configs)}), profile "
        f"**{chosen}**{why}: {describe(configs[0])}; logs in `{Path(results_dir) / name}`.")
    return [finished_run(config) or train(config, resume=True, progress=progress) for config in configs]


def logged_runs(logs_root: str | Path, name: str, **fields) -> list[Run]:
    """The complete runs of study `name` (studies.py) logged in logs_root/<name> (those whose config has
    the values `fields`, if given); says so when there is none yet, and how to train them."""
    runs = matching_runs(Path(logs_root) / name, **fields)
    if not runs:
        say(f"No complete run of the study `{name}` is logged in `{Path(logs_root) / name}` yet: "
            f"`capslib sweep {name}` (or its step in the Makefile) trains them, on a GPU.")
    return runs


def checkpoint_of(run: Run, runs_dir: str | Path, study: str) -> Path:
    """Where the checkpoints of a logged run of `study` are, under runs_dir: beside its logs' folder
    name, as core/layout.py places both."""
    return Path(runs_dir) / study / run.folder.name
