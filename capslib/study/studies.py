"""Every set of runs the study trains, declared once in STUDIES (at the bottom: each with what it is
for). `capslib sweep STUDY` trains one (sweep.py), `capslib sweep --help` lists them, the Makefile
names each as a step, and the notebooks read their logs back from results/<study>/<run>.

A study declares its runs at the study's own size; a profile (profiles.py) sizes them for a CPU or
the tests. A run's checkpoints go to <runs dir>/<study>/<run>, its logs to <results dir>/<study>/<run>
(core/layout.py), named within the study's protocol: what all its runs share at the study's size (the
validated runs' 10,000-image split, the official runs' length) goes without saying in each name; anything
else that differs from the recipe, a profile's sizes and given flags included, gets the name's digest.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..core.config import COMPONENTS, RECIPES, Layer, TrainConfig, resume_conflicts
from ..core.errors import CapslibError
from ..core.layout import placed
from .profiles import profile_for, sized

OFFICIAL_SPLIT = 10_000      # mnist_shift.py MNIST_RANGE: valid_test is the first 10,000 training images
OFFICIAL_STEPS = 300_000     # the official README's --max_steps=300000
ABLATION_EPOCHS = 60         # the ablation's length: see docs/results.md, "Where the 0.25% comes from"
# The paper's other experiments (docs/experiments.md): MultiMNIST 100 epochs of 60,000 fresh pairs (6M
# pairs seen; the paper's fixed set has 60M), scored every 50 epochs; expanded MNIST 100 epochs of
# 50,000 images, scored every epoch (the matched-accuracy rule needs every evaluation).
MULTIMNIST_EPOCHS, MULTIMNIST_EVAL_EVERY = 100, 50
# 100 test pairs per test image (1M), not the paper's 1,000 (10M, TrainConfig's default): a GPU smoke
# run spent most of its time scoring, and a run cannot checkpoint in the middle of a scoring, which must
# fit in one time-limited job. At 5% error, 1M pairs have a binomial standard error of 0.02 points, far
# below the gap between the models it compares (the paper: 5.2% against 8.1%).
MULTIMNIST_TEST_PAIRS = 100
AFFINE_EPOCHS = 100
# Table 1's rows (paper, Table 1) as (dataset, model, routing iterations, reconstruction), and Fashion-MNIST.
# (The baseline ignores the last two; they keep TrainConfig's defaults.)
TABLE1_CONFIGURATIONS = [("mnist", "baseline", 3, True), ("mnist", "capsnet", 1, False), ("mnist", "capsnet", 1, True),
                         ("mnist", "capsnet", 3, False), ("mnist", "capsnet", 3, True), ("fashion-mnist", "capsnet", 3, True)]


def recipe_value(recipe: str, field: str):
    """A field's value in a recipe (the paper recipe is TrainConfig's defaults)."""
    return RECIPES[recipe].get(field, getattr(TrainConfig(), field))


def table1_configs(seeds, **fields) -> list[TrainConfig]:
    """Every Table 1 configuration and Fashion-MNIST, each for every seed."""
    return [TrainConfig(**{**fields, "dataset": dataset, "model": model, "routing_iterations": routing,
                           "reconstruction": reconstruction, "seed": seed})
            for seed in seeds for dataset, model, routing, reconstruction in TABLE1_CONFIGURATIONS]


def validated_configs(seeds) -> list[TrainConfig]:
    """table1's runs with the official validation split."""
    return table1_configs(seeds, validation_size=OFFICIAL_SPLIT)


def official_configs(seeds, validation_size: int = OFFICIAL_SPLIT, **fields) -> list[TrainConfig]:
    """The official recipe for OFFICIAL_STEPS steps: on the 50,000 images left beside the split, or
    with validation_size=0 on all 60,000 (468 steps an epoch: 642 epochs)."""
    steps_per_epoch = (60_000 - validation_size) // TrainConfig().batch_size  # 390 beside the split
    length = {"eval_every": 4,  # every 1,560 steps beside the split (the official code: a checkpoint every 1,500)
              "epochs": math.ceil(OFFICIAL_STEPS / steps_per_epoch), "validation_size": validation_size}
    return [TrainConfig.from_recipe("official", **{**length, **fields, "seed": seed}) for seed in seeds]


def official_60k_configs(seeds) -> list[TrainConfig]:
    """The official recipe on all 60,000 training images (the official README's run)."""
    return official_configs(seeds, validation_size=0)


def ablation_configs(seeds, epochs: int = ABLATION_EPOCHS) -> list[TrainConfig]:
    """Both bases, then each component switched to the other recipe's choice, for every seed."""
    configs = []
    for base, other in (("paper", "official"), ("official", "paper")):
        for component in (None, *COMPONENTS):
            switched = {f: recipe_value(other, f) for f in COMPONENTS.get(component, ())}
            for seed in seeds:
                configs.append(TrainConfig.from_recipe(base, **{"validation_size": OFFICIAL_SPLIT, "eval_every": 3,
                                                                "epochs": epochs, **switched, "seed": seed}))
    return configs


def precision_configs(seeds) -> list[TrainConfig]:
    """validated's routing 3 + reconstruction runs (the same seeds, split and length) on the strict
    float32 path."""
    return [dataclasses.replace(c, speed="fp32") for c in validated_configs(seeds)
            if c.dataset == "mnist" and c.model == "capsnet" and c.routing_iterations == 3 and c.reconstruction]


def precision_partner_configs(seeds) -> list[TrainConfig]:
    """precision's runs on the path the study's GPU runs take (bf16 + TF32): validated's routing 3 +
    reconstruction runs trained again, since validated's were trained before runs recorded their misses,
    so that the arithmetic is compared image by image (07_ablation)."""
    return [dataclasses.replace(c, speed=TrainConfig().speed) for c in precision_configs(seeds)]


def table1_official_configs(seeds) -> list[TrainConfig]:
    """The official recipe as the `official` study runs it (length, split, evaluations), for every
    Table 1 row and Fashion-MNIST but the one that study trains (MNIST routing 3 + reconstruction)."""
    official = {k: v for k, v in official_configs([1])[0].to_dict().items()
                if k in ("epochs", "validation_size", "eval_every")}
    return [TrainConfig.from_recipe("official", **{**official, "dataset": dataset, "model": model,
                                                   "routing_iterations": routing, "reconstruction": reconstruction,
                                                   "seed": seed})
            for seed in seeds for dataset, model, routing, reconstruction in TABLE1_CONFIGURATIONS
            if (dataset, model, routing, reconstruction) != ("mnist", "capsnet", 3, True)]


def multimnist_configs(seeds) -> list[TrainConfig]:
    """CapsNet (routing 3, reconstruction) and the baseline on MultiMNIST, for every seed, scored on
    MULTIMNIST_TEST_PAIRS pairs per test image; no validation split (the paper scores the test set;
    each run's final error is its result)."""
    return [TrainConfig(dataset="multimnist", model=model, seed=seed, epochs=MULTIMNIST_EPOCHS,
                        eval_every=MULTIMNIST_EVAL_EVERY, test_pairs=MULTIMNIST_TEST_PAIRS)
            for seed in seeds for model in ("capsnet", "baseline")]


# The affine study's models as (model, routing iterations): the paper's two, and CapsNet with one routing
# iteration (uniform coupling), since Gu et al. (CVPR 2021) report that routing does not help robustness.
AFFINE_MODELS = [("capsnet", 3), ("baseline", 3), ("capsnet", 1)]


def affine_configs(seeds) -> list[TrainConfig]:
    """AFFINE_MODELS on expanded MNIST, for every seed, with the official validation split, evaluated
    every epoch."""
    return [TrainConfig(dataset="mnist-expanded", model=model, routing_iterations=routing, seed=seed,
                        epochs=AFFINE_EPOCHS, validation_size=OFFICIAL_SPLIT)
            for seed in seeds for model, routing in AFFINE_MODELS]


@dataclass(frozen=True)
class Study:
    name: str
    about: str
    configs: Callable[[list[int]], list[TrainConfig]]  # its runs for the given seeds, at the study's size


STUDIES = {study.name: study for study in [
    Study("table1", "Table 1's five configurations and Fashion-MNIST (routing 3 + reconstruction), the paper "
          "recipe, 40 epochs of all 60,000 training images: the study's headline", table1_configs),
    Study("validated", "table1's runs with the first 10,000 training images held out for validation (the "
          "official --validate split), so that every run is also scored 'selected on validation'",
          validated_configs),
    Study("official", "the official recipe at its full length (300,000 steps of 128), with the split",
          official_configs),
    Study("official-60k", "the official recipe at full length on all 60,000 training images, as the official "
          "README trains (no split: final and best-on-test only): does holding 10,000 images out cost the "
          "official runs?", official_60k_configs),
    Study("ablation", "routing 3 + reconstruction from the paper recipe with each official choice added alone, "
          "and from the official recipe with each removed alone, 60 epochs, with the split", ablation_configs),
    Study("precision", "validated's routing 3 + reconstruction runs in strict float32 (speed path fp32), where "
          "the GPU runs use bf16 and TF32: is the gap the arithmetic?", precision_configs),
    Study("precision-bf16", "precision's partners: the same runs on the GPU runs' path (bf16 + TF32), trained "
          "again with per-image records, so that precision is compared image by image", precision_partner_configs),
    Study("table1-official", "the official recipe at full length, with the split, for validated's other "
          "rows: the honest protocol that comes closest, for every row (for the baseline CNN the recipe's "
          "training choices only: shifts, schedule, length)", table1_official_configs),
    Study("multimnist", "section 6: CapsNet and the pooled baseline CNN on MultiMNIST, scored on 100 "
          "generated test pairs per test image (1M pairs)", multimnist_configs),
    Study("affine", "section 5.2: CapsNet (routing 3 and 1) and the baseline on expanded MNIST (40×40), every "
          "epoch scored on the split, the expanded test set and the affNIST-style generated set", affine_configs),
]}
# The studies that 06_summary sets beside Table 1 (their rows differ by recipe and validation split). The
# precision runs are not among them: they differ only in arithmetic, and 07_ablation compares them.
TABLE1_STUDIES = ("table1", "validated", "official", "official-60k", "table1-official")
# The notebooks that read the studies' runs, each with the studies it reads: its step's prerequisites in the
# Makefile (tests/test_recipes.py holds the Makefile to this; on the full profile, where sweeps train them).
READERS = {
    "03_reconstruct": ("table1",), "04_perturb": ("table1",), "05_fashion": ("table1",),
    "06_summary": TABLE1_STUDIES,
    "07_ablation": ("official", "official-60k", "ablation", "precision", "precision-bf16", "validated"),
    "08_multimnist": ("multimnist",), "09_affine": ("affine",),
}


@functools.lru_cache(maxsize=None)
def _protocol(name: str) -> tuple:
    configs = STUDIES[name].configs([1])  # the seed is named in every run's name: one seed shows the rest
    return tuple((k, v) for k, v in configs[0].to_dict().items() if all(getattr(c, k) == v for c in configs))


def protocol(study: str) -> dict:
    """The values that every run of `study` shares at the study's own size: its folder says them, so
    its runs' names need not (core/layout.run_name). Empty for a folder that is no declared study."""
    return dict(_protocol(study)) if study in STUDIES else {}


def place(config: TrainConfig, study: str, runs_dir: Path | str, results_dir: Path | str | None = None
          ) -> TrainConfig:
    """`config` placed in `study`'s folders under runs_dir and results_dir, named within its protocol:
    where a sweep of the study puts the run, and a notebook too."""
    return placed(config, study, runs_dir, results_dir, protocol(study))


def study_runs(studies: str, seeds, runs_dir: Path | str, results_dir: Path | str, profile: str = "full",
               **given) -> list[TrainConfig]:
    """The configs of one or more studies ('official,ablation': in that order), sized by `profile`
    (not auto), with the fields in `given` set as given, each placed in its folders: checkpoints in
    runs_dir/<study>/<run>, logs in results_dir/<study>/<run>. Two runs placed in one folder (a study
    that declares one run twice, or two that differ only in what the name leaves out) are refused."""
    return [layers[-1][1] for _, layers in study_layers(studies, seeds, runs_dir, results_dir, profile, **given)]


def study_layers(studies: str, seeds, runs_dir: Path | str, results_dir: Path | str, profile: str = "full",
                 **given) -> list[tuple[str, list[Layer]]]:
    """study_runs, each run as its study and the layers its config went through (config.set_by says
    which set what): the field defaults, its recipe, the study's declaration, the profile's sizes, the
    fields given, its run folder. The last layer's config is the run's."""
    runs, placed_in = [], {}
    for name in studies.split(","):
        if name not in STUDIES:
            raise CapslibError(f"unknown study {name!r}; choose from {', '.join(STUDIES)}")
        for declared in STUDIES[name].configs(list(seeds)):
            recipe = TrainConfig.from_recipe(declared.recipe)
            sizes = sized(declared, profile, keep=tuple(given))
            applied = tuple(f.name for f in dataclasses.fields(TrainConfig)  # what the profile sets, or changed
                            if f.name in profile_for(profile, declared.dataset).sizes() and f.name not in given
                            or getattr(sizes, f.name) != getattr(declared, f.name))
            chosen = dataclasses.replace(sizes, **given)
            config = place(chosen, name, runs_dir, results_dir).validate()
            runs.append((name, [("default", TrainConfig(), ()),
                                (f"recipe {declared.recipe}", recipe, tuple(RECIPES[declared.recipe])),
                                (f"study {name}", declared, ()),
                                (f"profile {profile}", sizes, applied),
                                ("given", chosen, tuple(given)),
                                ("run folder", config, ("ckpt_dir", "logs_dir"))]))
            if config.log_dir in placed_in:
                first = placed_in[config.log_dir]
                raise CapslibError(f"study {name}: two runs placed in {config.log_dir}"
                                   + (f" ({conflicts[0]})" if (conflicts := resume_conflicts(first, config)) else
                                      " (the same run declared twice)"))
            placed_in[config.log_dir] = config
    return runs
