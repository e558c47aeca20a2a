"""A training run, described in one plain dataclass (the nanoGPT way): every option, its default and
its help, declared once.

The command line derives its `train` and `sweep` flags from these declarations (each field is a flag,
named after it, with the aliases of the TensorFlow study this project follows), the notebooks pass
any field through, and `TrainConfig.validate` checks a run against the same declarations. So adding
an option is one line here: a field with its default and help (and a check in `validate` only if it
needs more than a choice list or a range).

A *recipe* is a named preset of the training choices on which the paper and the authors' official
TensorFlow code differ (research/capsules in github.com/Sarasra/models):

    paper     the paper's equations with the seed study's schedule: this study's Table 1
    official  what the official code does: see COMPONENTS below, each choice with its source line

`TrainConfig.from_recipe("official", seed=2)` starts from a preset; any field can still be set.
Plain data: no torch here (`python -m capslib --help` and reading run logs stay light).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .datasets import DATASETS
from .errors import CapslibError
from .routing import ROUTING_PROCEDURES

MAX_SEED = 2**32 - 1  # seeds feed torch generators as seed · 1,000,003 + epoch (< 2**64)


@dataclass(frozen=True)
class SpeedPath:
    """One way of running the same training step (capslib/core/speed.py implements them)."""
    name: str
    bf16: bool = False             # bfloat16 autocast; routing, squash and losses stay float32
    tf32: bool = False             # TF32 tensor cores for float32 convolutions and matmuls (CUDA)
    channels_last: bool = False
    compile: bool = False          # torch.compile of the model
    cuda_graph: bool = False       # the whole step captured in one CUDA graph and replayed
    cudnn_benchmark: bool = False  # let cuDNN time its convolution algorithms once per shape
    cuda_only: bool = False


SPEED_PATHS = {
    "fp32": SpeedPath("fp32"),
    "tf32": SpeedPath("tf32", tf32=True, cudnn_benchmark=True, cuda_only=True),
    "bf16": SpeedPath("bf16", bf16=True, tf32=True, channels_last=True, cudnn_benchmark=True),
    "compile": SpeedPath("compile", bf16=True, tf32=True, channels_last=True, compile=True, cudnn_benchmark=True),
    "compile-fp32": SpeedPath("compile-fp32", compile=True),  # compiled, for a CPU without native bf16
    "graph": SpeedPath("graph", bf16=True, tf32=True, channels_last=True, compile=True, cuda_graph=True,
                       cudnn_benchmark=True, cuda_only=True),
}
AUGMENTATIONS = ("random-shift", "all-shifts")


def option(default, help: str, *, choices=None, low=None, above=None, high=None, existing_folder=False, flags=(),
           metavar=None):
    """A TrainConfig field: its default, its help, the values it accepts (a choice list, for numbers a
    range: at least `low` or above `above`, at most `high`; for paths, an existing folder) and its
    command-line aliases besides --<name-with-dashes>."""
    return field(default=default, metadata={"help": help, "choices": choices, "low": low, "above": above,
                                            "high": high, "existing_folder": existing_folder, "flags": flags,
                                            "metavar": metavar})


@dataclass
class TrainConfig:
    # what to train
    # choices: the registries themselves, so that a dataset or procedure registered later is accepted
    dataset: str = option("mnist", "the dataset", choices=DATASETS)
    data_root: str | None = option(None, "the folder of the four IDX files (default: the repository's "
                                   "data/<dataset>)", existing_folder=True, flags=("--mnist-root-path",), metavar="DIR")
    verify_checksums: bool = option(True, "check the data files' MD5 (False: for other copies of the datasets)")
    model: str = option("capsnet", "capsnet, or baseline: Table 1's CNN", choices=("capsnet", "baseline"))
    routing_iterations: int = option(3, "routing iterations (the paper: 1 or 3)", low=1, high=10,
                                     flags=("--routing-frequency", "--routing"), metavar="N")
    routing_procedure: str = option("dynamic", "the routing procedure (capslib/core/routing.py)",
                                    choices=ROUTING_PROCEDURES)
    reconstruction: bool = option(True, "add 0.0005 × the reconstruction SSE to the loss",
                                  flags=("--reconstruction-loss",))
    detach_routing: bool = option(False, "stop gradients through all but the last routing iteration "
                                  "(XifengGuo's port)")
    # the recipe: choices where the paper and the official code differ (see COMPONENTS)
    recipe: str = option("paper", "preset of the choices where the paper and the official code differ",
                         choices=("paper", "official"))
    loss_scaling: str = option("paper", "official: the margin loss × 0.05 beside 0.0005·SSE",
                               choices=("paper", "official"))
    digit_bias: bool = option(False, "a learned [10, 16] DigitCaps bias, added before every squash (official)")
    primary_capsules: str = option("conv", "slim: the official conv_slim_capsule (conv/32 + bias)",
                                   choices=("conv", "slim"))
    init: str = option("default", "official: truncated normals, biases 0.1", choices=("default", "official"))
    augmentation: str = option("random-shift", "all-shifts: the official 25 shifts per image through a "
                               "shuffle buffer", choices=AUGMENTATIONS)
    # how (the paper: Adam, batch 128; the seed study: lr = 0.001·0.95^epoch; ±2 px shifts)
    epochs: int = option(40, "epochs to train", low=1, metavar="N")
    batch_size: int = option(128, "training batch size", low=1, metavar="N")
    lr: float = option(1e-3, "initial learning rate (Adam)", above=0, high=1)
    lr_decay: float = option(0.95, "lr factor per epoch, or per --lr-decay-steps steps", above=0, high=1)
    lr_decay_steps: int | None = option(None, "decay smoothly per N steps instead of per epoch", low=1, metavar="N")
    min_lr: float = option(0.0, "the lr never falls below this (official: 1e-6)", low=0, high=1)
    max_shift: int = option(2, "random shifts of up to N pixels in each direction", low=0, high=8, metavar="N")
    seed: int = option(1, "the seed of the initial weights and of every epoch's order and shifts", low=0,
                       high=MAX_SEED)
    train_subset: int | None = option(None, "keep the first N training images (quick runs)", low=1, metavar="N")
    test_subset: int | None = option(None, "keep the first N test images", low=1, metavar="N")
    # MultiMNIST pair indices (images × pairs) feed a 32-bit hash: at most 60,000 pairs per image
    test_pairs: int = option(1000, "MultiMNIST: generated test pairs per test (and validation) image "
                             "(the paper's 1,000: 10M pairs)", low=1, high=60_000, metavar="N")
    # how runs are scored: a validation split is held out of the training images, and every
    # evaluation scores it and the test set; the checkpoint is selected on validation only
    validation_size: int = option(0, "hold the first N training images out for validation (the official "
                                  "split: 10,000)", low=0, metavar="N")
    eval_every: int = option(1, "evaluate every N epochs (and after the last)", low=1, metavar="N")
    eval_batch_size: int = option(1000, "batch size of evaluations", low=1, metavar="N")
    # where and how fast
    ckpt_dir: str | None = option(None, "checkpoints: last.pt, best.pt (default: --logs-dir, or runs/<run name>: "
                                  "capslib/core/layout.py)", metavar="DIR")
    logs_dir: str | None = option(None, "metrics.csv, run.json, TensorBoard events (default: --ckpt-dir)",
                                  metavar="DIR")
    device: str = option("auto", "auto (a free CUDA GPU when present, else the CPU), cpu or cuda[:N]")
    speed: str = option("auto", "auto, or a speed path (capslib/core/speed.py)", choices=("auto", *SPEED_PATHS))

    @classmethod
    def from_recipe(cls, recipe: str = "paper", **fields) -> "TrainConfig":
        """The preset `recipe`, with any field overridden by `fields`."""
        if recipe not in RECIPES:
            raise CapslibError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
        return cls(**{**RECIPES[recipe], **fields, "recipe": recipe})

    @property
    def log_dir(self) -> Path:
        """Where the run's logs go: logs_dir, or beside the checkpoints (layout.placed sets both)."""
        return Path(self.logs_dir or self.ckpt_dir)

    def validate(self) -> "TrainConfig":
        """Raise CapslibError naming the first field whose value its declaration does not accept;
        return self so calls can chain."""
        for f in dataclasses.fields(self):
            problem = check(f, getattr(self, f.name))
            if problem:
                raise CapslibError(f"{f.name} must be {problem}, got {getattr(self, f.name)!r}")
        if self.min_lr > self.lr:
            raise CapslibError(f"min_lr must be at most lr ({self.lr!r}), got {self.min_lr!r}")
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
        preset = {**dataclasses.asdict(TrainConfig()), **RECIPES.get(self.recipe, {})}
        changed = [name for name, fields in COMPONENTS.items() if any(getattr(self, f) != preset[f] for f in fields)]
        sign = "+" if self.recipe == "paper" else "-"
        return self.recipe + "".join(sign + name for name in changed)

    def implied_by_variant(self) -> dict:
        """Every field's value as the recipe and variant() say it: the recipe's preset, with each component
        the variant names switched to the other recipe's choice (paper+bias: the official bias). What a
        run's name says of it (layout.unnamed_choices names the rest)."""
        preset = {**dataclasses.asdict(TrainConfig()), **RECIPES.get(self.recipe, {})}
        other = {**dataclasses.asdict(TrainConfig()), **RECIPES["official" if self.recipe == "paper" else "paper"]}
        for name, fields in COMPONENTS.items():
            if any(getattr(self, f) != preset[f] for f in fields):
                preset.update({f: other[f] for f in fields})
        return preset


# ---------------------------------------------------------------------------------------------
# Where each value of a run's config was set. A config passes through layers, each setting some fields
# over the one before: the field defaults here, a recipe (RECIPES), a study's declaration
# (capslib/study/studies.py), a profile's sizes (capslib/study/profiles.py), the flags or notebook
# options given, and the run folder (core/layout.py). `--show-config` prints what each set.

Layer = tuple[str, "TrainConfig", tuple[str, ...]]  # (its name, the config after it, the fields it names)


def set_by(layers: list[Layer]) -> dict[str, str]:
    """For each field of the last layer's config, the name of the layer that set it: the last whose
    value differs from the layer before, or that names the field among those it sets (a flag that
    restates a default is still the flag's). The first layer sets everything."""
    sources, before = {}, None
    for name, config, named in layers:
        for f in dataclasses.fields(TrainConfig):
            if before is None or f.name in named or getattr(config, f.name) != getattr(before, f.name):
                sources[f.name] = name
        before = config
    return sources


def recipe_layers(recipe: str, given: dict) -> list[Layer]:
    """The layers of a config made from a recipe and given fields (TrainConfig.from_recipe)."""
    preset = TrainConfig.from_recipe(recipe)
    return [("default", TrainConfig(), ()), (f"recipe {recipe}", preset, tuple(RECIPES[recipe])),
            ("given", TrainConfig.from_recipe(recipe, **given), tuple(given))]


def show_config(layers: list[Layer], extra: dict[str, str] = ()) -> str:
    """The last layer's config, one field a line with its value and the layer that set it, then the
    lines of `extra` (label: text)."""
    config, sources = layers[-1][1], set_by(layers)
    width = max(len(f.name) for f in dataclasses.fields(TrainConfig))
    values = {f.name: repr(getattr(config, f.name)) for f in dataclasses.fields(TrainConfig)}
    value_width = min(max(map(len, values.values())), 48)
    lines = [f"  {name:<{width}}  {value:<{value_width}}  {sources[name]}" for name, value in values.items()]
    lines += [f"  {label:<{width}}  {text}" for label, text in dict(extra).items()]
    return "\n".join(lines)


@functools.lru_cache(maxsize=None)
def _hints(owner: type) -> dict:
    return typing.get_type_hints(owner)  # the annotations evaluated (they are strings under __future__)


def kind(f: dataclasses.Field, owner: type = None) -> tuple[type, bool]:
    """A field of dataclass `owner` (TrainConfig by default): its type and whether it may be None
    (`int | None` → (int, True))."""
    hint = _hints(owner or TrainConfig)[f.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        members = typing.get_args(hint)
        return next(m for m in members if m is not type(None)), type(None) in members
    return hint, False


def check(f: dataclasses.Field, value, owner: type = None) -> str | None:
    """What field `f` of `owner` (TrainConfig by default) must be, if `value` is not that (its declared
    type, choices or range); else None."""
    expected, nullable = kind(f, owner)
    meta = f.metadata
    if value is None:
        return None if nullable else "given"
    if meta["choices"] is not None:
        return None if value in meta["choices"] else f"one of {', '.join(map(str, meta['choices']))}"
    if expected is bool:
        return None if isinstance(value, bool) else "True or False"
    if expected is str:
        if not isinstance(value, str):
            return "a string"
        return "an existing folder" if meta["existing_folder"] and not Path(value).is_dir() else None
    if expected is int:
        number, what = isinstance(value, int) and not isinstance(value, bool), "an integer"
    else:
        number, what = (isinstance(value, (int, float)) and not isinstance(value, bool)
                        and math.isfinite(value)), "a finite number"
    low, above, high = meta["low"], meta["above"], meta["high"]
    if number and (low is None or value >= low) and (above is None or value > above) \
            and (high is None or value <= high):
        return None
    return what + describe_range(f) + (" or None" if nullable else "")


def describe_range(f: dataclasses.Field) -> str:
    """' ≥ 1', ' in [1, 10]', ' in (0, 1]': the range a number field accepts."""
    low, above, high = f.metadata["low"], f.metadata["above"], f.metadata["high"]
    if high is None:
        return f" ≥ {low}" if low is not None else (f" > {above}" if above is not None else "")
    return f" in [{low}, {high}]" if low is not None else f" in ({above}, {high}]"


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


# Fields that only the CapsNet reads: the baseline CNN trains the same whatever they hold.
CAPSNET_ONLY = ("routing_iterations", "routing_procedure", "reconstruction", "detach_routing", "digit_bias",
                "primary_capsules", "init", "loss_scaling")


def resume_conflicts(saved: TrainConfig, requested: TrainConfig) -> list[str]:
    """The fields whose requested value would change a saved run's trajectory."""
    ignored = RESUMABLE_CHANGES + (CAPSNET_ONLY if saved.model == requested.model == "baseline" else ())
    return [f"{f.name}: saved {getattr(saved, f.name)!r}, requested {getattr(requested, f.name)!r}"
            for f in dataclasses.fields(TrainConfig)
            if f.name not in ignored and getattr(saved, f.name) != getattr(requested, f.name)]
