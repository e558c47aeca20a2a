"""The study's sets of runs beyond Table 1, declared once, and a sweep that trains a set of runs.

    ablation   routing 3 + reconstruction from the paper recipe with each official choice added
               alone, and from the official recipe with each removed alone (config.COMPONENTS),
               all at one length, with the official validation split (the first 10,000 training
               images) so that each run can be scored without looking at the test set
    official   the official recipe at its full length (300,000 steps of 128), with the same split
    official-60k  the same on all 60,000 training images, as the official README trains (no split:
               final and best-on-test only): does holding 10,000 images out cost the official runs?
    precision  Table 1's routing 3 + reconstruction runs (paper recipe, with the split) in strict
               float32 (speed path fp32: eager, TF32 off) where the study's GPU runs use bf16 and
               TF32 like the graph path: is the gap the arithmetic? (compare with table1's runs)
    table1     Table 1's five configurations and Fashion-MNIST (routing 3 + reconstruction) with the
               paper recipe for 40 epochs, with the same split: the study's runs, scored honestly
    table1-official  the official recipe at full length, with the split, for the other four Table 1
               configurations and Fashion-MNIST (`official` has routing 3 + reconstruction): the
               honest protocol that comes closest, for every row (for the baseline CNN the recipe's
               training choices only: shifts, schedule, length; its model choices are CapsNet's)
    multimnist section 6: CapsNet (routing 3 + reconstruction of both digits) and the pooled baseline
               CNN on MultiMNIST, scored on the fixed generated test set with 100 pairs per test image
               (1M pairs; the paper's 1,000, 10M: `capslib evaluate --test-pairs 1000` on a checkpoint)
    affine     section 5.2: CapsNet and the baseline on expanded MNIST (40×40, shifts up to 6 px) with
               the official validation split, every epoch scored on validation, the expanded test set
               and the affNIST-style generated set (tables.matched_accuracy compares them at a matched
               accuracy)

`capslib sweep STUDY --jobs N` trains a set, N runs at a time; on a GPU machine each run claims a
GPU that no other run holds (gpus.py), so N = the number of GPUs fills the machine. Every run
resumes where it stopped, so a sweep cut off by a time limit continues when started again, and a
finished run is never trained twice.
"""

from __future__ import annotations

import math
import multiprocessing
import time
import traceback
from pathlib import Path

from .config import COMPONENTS, RECIPES, TrainConfig, resume_conflicts
from .errors import CapslibError
from .profiles import resolve_profile
from .runs import Run, read_run, run_name, summary_line

OFFICIAL_SPLIT = 10_000      # mnist_shift.py MNIST_RANGE: valid_test is the first 10,000 training images
OFFICIAL_STEPS = 300_000     # the official README's --max_steps=300000
ABLATION_EPOCHS = 60         # the ablation's length: see README "Where the 0.25% comes from"
# The paper's other experiments. Budget (README, "The paper's other experiments"): MultiMNIST 100 epochs
# of 60,000 fresh pairs (6M pairs seen; the paper's fixed set has 60M), scored every 50 epochs on 1M
# test pairs; expanded MNIST 100 epochs of 50,000 images, scored every epoch (the matched-accuracy
# rule needs every evaluation).
MULTIMNIST_EPOCHS, MULTIMNIST_EVAL_EVERY = 100, 50
# 100 test pairs per test image (1M), not the paper's 1,000 (10M, TrainConfig's default): a GPU smoke
# run spent most of its time scoring, and a run cannot checkpoint in the middle of a scoring, which must
# fit in one time-limited job. At 5% error, 1M pairs have a binomial standard error of 0.02 points, far
# below the gap between the models it compares (the paper: 5.2% against 8.1%). `capslib evaluate
# --test-pairs 1000` scores the 10M.
MULTIMNIST_TEST_PAIRS = 100
AFFINE_EPOCHS = 100
STUDY_NAMES = ("ablation", "official", "official-60k", "precision", "table1", "table1-official", "multimnist",
               "affine")
GENERATED_STUDIES = ("multimnist", "affine")
# The studies that 06_summary sets beside Table 1 (their rows differ by recipe and validation split). The
# precision runs are not among them: they differ only in arithmetic, and 07_ablation compares them.
TABLE1_STUDIES = ("table1", "official", "official-60k", "table1-official")
# Table 1's rows (paper, Table 1) as (dataset, model, routing iterations, reconstruction), and Fashion-MNIST.
# (The baseline ignores the last two; they keep TrainConfig's defaults.)
TABLE1 = [("mnist", "baseline", 3, True), ("mnist", "capsnet", 1, False), ("mnist", "capsnet", 1, True),
          ("mnist", "capsnet", 3, False), ("mnist", "capsnet", 3, True), ("fashion-mnist", "capsnet", 3, True)]


def recipe_value(recipe: str, field: str):
    """A field's value in a recipe (the paper recipe is TrainConfig's defaults)."""
    return RECIPES[recipe].get(field, getattr(TrainConfig(), field))


def ablation_configs(seeds, epochs: int = ABLATION_EPOCHS, **common) -> list[TrainConfig]:
    """Both bases, then each component switched to the other recipe's choice, for every seed."""
    configs = []
    for base, other in (("paper", "official"), ("official", "paper")):
        for component in (None, *COMPONENTS):
            switched = {f: recipe_value(other, f) for f in COMPONENTS.get(component, ())}
            for seed in seeds:
                fields = {"validation_size": OFFICIAL_SPLIT, "eval_every": 3, "epochs": epochs, **common,
                          **switched, "seed": seed}
                configs.append(TrainConfig.from_recipe(base, **fields))
    return configs


def official_configs(seeds, validation_size: int = OFFICIAL_SPLIT, **common) -> list[TrainConfig]:
    """The official recipe for OFFICIAL_STEPS steps: on the 50,000 images left beside the split, or
    with validation_size=0 on all 60,000 (468 steps an epoch: 642 epochs)."""
    steps_per_epoch = (60_000 - validation_size) // TrainConfig().batch_size  # 390 beside the split
    fields = {"eval_every": 4,  # every 1,560 steps beside the split (the official code: a checkpoint every 1,500)
              "epochs": math.ceil(OFFICIAL_STEPS / steps_per_epoch), **common, "validation_size": validation_size}
    return [TrainConfig.from_recipe("official", **{**fields, "seed": seed}) for seed in seeds]


def official_60k_configs(seeds, **common) -> list[TrainConfig]:
    """The official recipe on all 60,000 training images (the official README's run): no split, so
    whatever size a profile asks to hold out is not held out."""
    return official_configs(seeds, **{**common, "validation_size": 0})


def precision_configs(seeds, **common) -> list[TrainConfig]:
    """Table 1's routing 3 + reconstruction runs (the same seeds, split and length as `table1`) on the
    strict float32 path."""
    return [c for c in table1_configs(seeds, **common, speed="fp32")
            if c.dataset == "mnist" and c.model == "capsnet" and c.routing_iterations == 3 and c.reconstruction]


def table1_official_configs(seeds, **common) -> list[TrainConfig]:
    """The official recipe as the `official` study runs it (length, split, evaluations), for every
    Table 1 row and Fashion-MNIST but the one that study trains (MNIST routing 3 + reconstruction)."""
    official = {k: v for k, v in official_configs([1], **common)[0].to_dict().items()
                if k in ("epochs", "validation_size", "eval_every")}
    return [TrainConfig.from_recipe("official", **{**common, **official, "dataset": dataset, "model": model,
                                                   "routing_iterations": routing, "reconstruction": reconstruction,
                                                   "seed": seed})
            for seed in seeds for dataset, model, routing, reconstruction in TABLE1
            if (dataset, model, routing, reconstruction) != ("mnist", "capsnet", 3, True)]


def table1_configs(seeds, **common) -> list[TrainConfig]:
    """Every Table 1 configuration and Fashion-MNIST, each for every seed, with the validation split."""
    return [TrainConfig(**{"validation_size": OFFICIAL_SPLIT, **common, "dataset": dataset, "model": model,
                           "routing_iterations": routing, "reconstruction": reconstruction, "seed": seed})
            for seed in seeds for dataset, model, routing, reconstruction in TABLE1]


def multimnist_configs(seeds, **common) -> list[TrainConfig]:
    """CapsNet (routing 3, reconstruction) and the baseline on MultiMNIST, for every seed, scored on
    MULTIMNIST_TEST_PAIRS pairs per test image; no validation split (the paper scores the test set;
    each run's final error is its result)."""
    fields = {"epochs": MULTIMNIST_EPOCHS, "eval_every": MULTIMNIST_EVAL_EVERY, "test_pairs": MULTIMNIST_TEST_PAIRS,
              **common, "dataset": "multimnist", "validation_size": 0}
    return [TrainConfig(**{**fields, "model": model, "seed": seed}) for seed in seeds for model in ("capsnet", "baseline")]


def affine_configs(seeds, **common) -> list[TrainConfig]:
    """CapsNet (routing 3, reconstruction) and the baseline on expanded MNIST, for every seed, with the
    official validation split, evaluated every epoch."""
    fields = {"epochs": AFFINE_EPOCHS, "validation_size": OFFICIAL_SPLIT, **common, "dataset": "mnist-expanded",
              "eval_every": 1}
    return [TrainConfig(**{**fields, "model": model, "seed": seed}) for seed in seeds for model in ("capsnet", "baseline")]


def profile_sizes(name: str, generated: bool = False) -> dict:
    """The run sizes of a profile (profiles.py) for a sweep: none for `full` (each study keeps its own
    length), else the profile's epochs, batch and subsets, holding a sixth of the training images out
    for validation as the official split does (10,000 of 60,000). `generated`: the sizes of the
    paper's other experiments (profiles.GENERATED_PROFILES)."""
    if name == "full":
        return {}
    profile = resolve_profile(name, "cpu", generated)
    train = profile.train_subset or 60_000
    sizes = {"epochs": profile.epochs, "batch_size": profile.batch_size, "train_subset": profile.train_subset,
             "test_subset": profile.test_subset, "validation_size": train // 6}
    return sizes if profile.test_pairs is None else {**sizes, "test_pairs": profile.test_pairs}


def study_runs(studies: str, seeds, runs_dir: Path, results_dir: Path, profile: str = "full",
               **common) -> list[TrainConfig]:
    """The configs of one or more studies ('official,ablation': in that order), sized by `profile`,
    each with its checkpoint folder runs_dir/<study>/<run> and its logs in results_dir/<study>/<run>."""
    builders = {"ablation": ablation_configs, "official": official_configs, "official-60k": official_60k_configs,
                "precision": precision_configs, "table1": table1_configs, "table1-official": table1_official_configs,
                "multimnist": multimnist_configs, "affine": affine_configs}
    configs = []
    for study in studies.split(","):
        if study not in builders:
            raise CapslibError(f"unknown study {study!r}; choose from {', '.join(STUDY_NAMES)}")
        sizes = {**profile_sizes(profile, study in GENERATED_STUDIES), **common}
        for config in builders[study](seeds, **sizes):
            name = run_name(config)
            config.ckpt_dir = str(Path(runs_dir) / study / name)
            config.logs_dir = str(Path(results_dir) / study / name)
            configs.append(config.validate())
    return configs


# A run started with less time than this before the deadline would spend it compiling, not training.
MIN_SECONDS_TO_START = 90


def sweep(configs: list[TrainConfig], jobs: int = 1, log=print, deadline: float | None = None) -> int:
    """Train (or resume) every config, `jobs` at a time, each in its own process; 0 if all finished.

    With a `deadline` (time.time()), running runs stop at their first evaluation after it (saving a
    checkpoint) and runs not yet started are left for the next sweep."""
    tasks = [(config.to_dict(), deadline) for config in configs]
    if jobs == 1:
        results = [_train_one(task) for task in tasks]
    else:
        # spawn, not fork: CUDA cannot be used in a forked child; one run per process, so that each
        # releases its GPU (memory and lock) when it ends.
        with multiprocessing.get_context("spawn").Pool(jobs, maxtasksperchild=1) as pool:
            results = pool.map(_train_one, tasks, chunksize=1)
    for name, ok, message in results:
        log(f"{'done' if ok else 'NOT DONE'}  {name}: {message}")
    finished = sum(ok for _, ok, _ in results)
    log(f"{finished} of {len(results)} runs finished")
    return 0 if finished == len(results) else 1


def _train_one(task: tuple[dict, float | None]) -> tuple[str, bool, str]:
    from .train import train

    values, deadline = task
    config = TrainConfig.from_dict(values)
    name = Path(config.log_dir).name
    try:
        finished = finished_run(config)
        if finished is not None:
            return name, True, summary_line(finished.info["summary"])
        if deadline is not None and time.time() > deadline - MIN_SECONDS_TO_START:
            return name, False, "not started: too close to the time limit"
        run = train(config, resume=True, log=lambda line: print(f"[{name}] {line}", flush=True), deadline=deadline)
        if run.info["status"] != "complete":
            return name, False, f"{run.info['status']}: {summary_line(run.info['summary'])}"
        return name, True, summary_line(run.info["summary"])
    except CapslibError as err:
        return name, False, str(err)
    except Exception:  # a bug in one run must not lose the others' results
        return name, False, traceback.format_exc(limit=-3).strip().replace("\n", " | ")


def finished_run(config: TrainConfig) -> Run | None:
    """The run's logs, if they say that it completed this config: its status is complete, after as
    many epochs, and its setup is the one asked for (config.resume_conflicts). Such a run is done,
    whether or not its checkpoint is here: logs come back from a GPU machine without the ~100 MB
    checkpoints, and a finished run is never trained twice."""
    try:
        run = read_run(config.log_dir)
    except CapslibError:
        return None
    done = (run.info.get("status") == "complete" and run.info.get("summary", {}).get("epochs_done") == config.epochs
            and not resume_conflicts(run.config, config))
    return run if done else None
