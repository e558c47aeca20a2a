"""One plain configuration for a training run (the nanoGPT way: a dataclass, no magic).

Every default of a run lives here; the command line, the notebooks and the Makefile take theirs from
it (tests/test_cli.py proves the command line does).

A *recipe* is a named preset of the training choices on which the paper and the authors' official
TensorFlow code differ (research/capsules in github.com/Sarasra/models):

    paper     the paper's equations with the seed study's schedule: this study's Table 1
    official  what the official code does: see OFFICIAL below, each choice with its source line

`TrainConfig.from_recipe("official", seed=2)` starts from a preset; any field can still be set.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from .data import AUGMENTATIONS, DATASETS
from .generated import TEST_PAIRS
from .errors import CapslibError

SPEED_PATHS = ("auto", "fp32", "tf32", "bf16", "compile", "graph")
MODELS = ("capsnet", "baseline")
LOSS_SCALINGS = ("paper", "official")
PRIMARY_CAPSULES = ("conv", "slim")
INITS = ("default", "official")
MAX_SEED = 2**32 - 1  # seeds feed torch generators as seed · 1,000,003 + epoch (< 2**64)
MAX_TEST_PAIRS = 60_000  # MultiMNIST pair indices (images × pairs) feed a 32-bit hash
MAX_ROUTING_ITERATIONS = 10  # the paper uses 1 or 3; each iteration costs as much as a forward pass


@dataclass
class TrainConfig:
    # what to train
    dataset: str = "mnist"
    data_root: str | None = None          # default: the repository's data/<dataset>
    model: str = "capsnet"                # or "baseline", Table 1's CNN
    routing_iterations: int = 3
    reconstruction: bool = True
    detach_routing: bool = False          # stop gradients in early routing iterations (XifengGuo)
    # the recipe: choices where the paper and the official code differ (see RECIPES)
    recipe: str = "paper"
    loss_scaling: str = "paper"           # "official": margin loss × 0.05 beside 0.0005·SSE
    digit_bias: bool = False              # learned [10, 16] bias added to s_j in every routing iteration
    primary_capsules: str = "conv"        # "slim": the official conv_slim_capsule (conv/32 + bias)
    init: str = "default"                 # "official": truncated normals, biases 0.1
    augmentation: str = "random-shift"    # "all-shifts": the 25 shifts of every image, shuffle buffer
    # how (the paper: Adam, batch 128; the seed study: lr = 0.001·0.95^epoch; ±2 px shifts)
    epochs: int = 40
    batch_size: int = 128
    lr: float = 1e-3
    lr_decay: float = 0.95                # per epoch, or per lr_decay_steps steps when that is set
    lr_decay_steps: int | None = None     # None: lr·decay^epoch; N: lr·decay^(step/N), smooth
    min_lr: float = 0.0                   # the lr never falls below this (the official code: 1e-6)
    max_shift: int = 2
    seed: int = 1
    train_subset: int | None = None       # keep the first N training images (quick runs)
    test_subset: int | None = None
    test_pairs: int = TEST_PAIRS          # MultiMNIST: pairs per test (and validation) image; the paper's 1,000
    verify_checksums: bool = True
    # how runs are scored: a validation split is held out of the training images, and every
    # evaluation scores it and the test set; the checkpoint is selected on validation only
    validation_size: int = 0              # the first N training images (the official split: 10,000)
    eval_every: int = 1                   # evaluate every N epochs (and always after the last)
    # where and how fast
    ckpt_dir: str = "runs/default"
    logs_dir: str | None = None           # default: ckpt_dir
    device: str = "auto"                  # auto: a free CUDA GPU when present, else the CPU
    speed: str = "auto"                   # auto: "graph" on CUDA, "fp32" on CPU (see speed.py)
    eval_batch_size: int = 1000

    @classmethod
    def from_recipe(cls, recipe: str = "paper", **fields) -> "TrainConfig":
        """The preset `recipe`, with any field overridden by `fields`."""
        if recipe not in RECIPES:
            raise CapslibError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
        return cls(**{**RECIPES[recipe], **fields, "recipe": recipe})

    @property
    def log_dir(self) -> Path:
        return Path(self.logs_dir or self.ckpt_dir)

    def validate(self) -> "TrainConfig":
        """Raise CapslibError naming the first bad field; return self so calls can chain."""
        for name in ("epochs", "batch_size", "routing_iterations", "eval_batch_size", "eval_every", "test_pairs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CapslibError(f"{name} must be a positive integer, got {value!r}")
        for name in ("train_subset", "test_subset", "lr_decay_steps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise CapslibError(f"{name} must be a positive integer or None, got {value!r}")
        if self.test_pairs > MAX_TEST_PAIRS:
            raise CapslibError(f"test_pairs must be at most {MAX_TEST_PAIRS} (pair indices stay below 2**32), "
                               f"got {self.test_pairs}")
        if self.routing_iterations > MAX_ROUTING_ITERATIONS:
            raise CapslibError(f"routing_iterations must be at most {MAX_ROUTING_ITERATIONS}, "
                               f"got {self.routing_iterations}")
        if not isinstance(self.validation_size, int) or isinstance(self.validation_size, bool) \
                or self.validation_size < 0:
            raise CapslibError(f"validation_size must be a non-negative integer, got {self.validation_size!r}")
        choices = {"recipe": RECIPES, "dataset": DATASETS, "model": MODELS, "speed": SPEED_PATHS,
                   "loss_scaling": LOSS_SCALINGS, "primary_capsules": PRIMARY_CAPSULES, "init": INITS,
                   "augmentation": AUGMENTATIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise CapslibError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not _finite_positive(self.lr) or not (_finite_positive(self.lr_decay) and self.lr_decay <= 1):
            raise CapslibError(f"need a finite lr > 0 and 0 < lr_decay <= 1, got lr={self.lr!r}, "
                               f"lr_decay={self.lr_decay!r}")
        if not (isinstance(self.min_lr, (int, float)) and 0 <= self.min_lr <= self.lr):
            raise CapslibError(f"min_lr must be in [0, lr], got {self.min_lr!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed <= MAX_SEED:
            raise CapslibError(f"seed must be an integer in 0..{MAX_SEED}, got {self.seed!r}")
        if not 0 <= self.max_shift <= 8:
            raise CapslibError(f"max_shift must be in 0..8, got {self.max_shift!r}")
        for name in ("reconstruction", "detach_routing", "verify_checksums", "digit_bias"):
            if not isinstance(getattr(self, name), bool):
                raise CapslibError(f"{name} must be True or False, got {getattr(self, name)!r}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def variant(self) -> str:
        """The recipe and the components switched away from it: 'paper', 'paper+bias',
        'official-init' (a component added to the paper recipe, or removed from the official one)."""
        preset = RECIPES.get(self.recipe, {})
        default = TrainConfig()
        changed = [name for name, fields in COMPONENTS.items()
                   if any(getattr(self, f) != preset.get(f, getattr(default, f)) for f in fields)]
        sign = "+" if self.recipe == "paper" else "-"
        return self.recipe + "".join(sign + name for name in changed)


def _finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


# The official code's choices, by component (the names in run names and ablation tables). Sources,
# all under research/capsules/ in github.com/Sarasra/models (also tensorflow/models):
COMPONENTS = {
    # models/layers/layers.py _margin_loss (0.5·pos + 0.5·0.5·neg) and evaluate (reduce_mean over the
    # batch and the 10 classes): 1/20 of the paper's sum, beside reconstruction's 0.0005·SSE.
    "loss": ("loss_scaling",),
    # layers.py capsule(): biases [10, 16] (0.1) added to the routed sum before every squash.
    "bias": ("digit_bias",),
    # capsule_model.py _build_capsule: conv_slim_capsule(input_dim=1, output_dim=32, num_routing=1)
    # routes one input capsule to 32 types through a softmax of zero logits: conv/32 + its own bias.
    "slim": ("primary_capsules",),
    # models/layers/variables.py: truncated normal weights (default std 0.1), constant 0.1 biases;
    # conv1's std 0.05 is set in capsule_model.py inference(); layers.py reconstruction(): the
    # decoder likewise (std 0.1, biases 0.1). docs/official-code.md gives the lines.
    "init": ("init",),
    # input_data/mnist/mnist_shift.py writes all 25 shifts of every image; mnist_input_record.py
    # reads them in file order through shuffle_batch(min_after_dequeue=batch_capacity, default 5000;
    # capacity 5000 + 3·batch).
    "shifts": ("augmentation",),
    # models/model.py: exponential_decay of experiment.py default_hparams (learning_rate 1e-3,
    # decay_steps 2000, decay_rate 0.96; no staircase, so smooth), floored at 1e-6.
    "schedule": ("lr_decay", "lr_decay_steps", "min_lr"),
}
OFFICIAL = {"loss_scaling": "official", "digit_bias": True, "primary_capsules": "slim", "init": "official",
            "augmentation": "all-shifts", "lr_decay": 0.96, "lr_decay_steps": 2000, "min_lr": 1e-6,
            # README.md's MNIST command: --max_steps=300000 at batch 128, ≈ 640 epochs of 60,000 images
            "epochs": 640}
RECIPES = {"paper": {}, "official": OFFICIAL}


# Fields that may differ when a run is resumed: they change where or how fast it runs, how long,
# or how often it is scored, but not the trajectory it follows.
RESUMABLE_CHANGES = ("epochs", "device", "speed", "eval_batch_size", "eval_every", "ckpt_dir", "logs_dir",
                     "data_root", "verify_checksums")


def resume_conflicts(saved: TrainConfig, requested: TrainConfig) -> list[str]:
    """The fields whose requested value would change a saved run's trajectory."""
    return [f"{f.name}: saved {getattr(saved, f.name)!r}, requested {getattr(requested, f.name)!r}"
            for f in dataclasses.fields(TrainConfig)
            if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(requested, f.name)]
