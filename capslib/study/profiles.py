"""Profiles: how big a training run is, by purpose, declared here and nowhere else. Every run is sized
by `sized` — a sweep's, 02_train's, a notebook's short run — so a profile means one protocol wherever
it is used.

    full   the study's own sizes: each run as its study declares it (Table 1: 40 epochs of all
           60,000 images at batch 128; the official recipe: 300,000 steps). Meant for a GPU.
    laptop a CPU, in a quarter of an hour: 2 epochs of all 60,000 images at batch 128, tested on all
           10,000; the paper's recipe otherwise. On a 2-core CPU with native bf16 (`--speed auto`:
           the compiled bf16 path) `make laptop` trains seed 1 past 99% (the record: results/laptop). Two
           epochs, not three: a third takes the run past 15 minutes there (docs/running.md).
    quick  a CPU, in minutes: 2 epochs of 1,000 images at batch 32 (62 steps, enough to learn
           something), tested on 500 images: a first look, near 80% accuracy
    tiny   the test suite: 1 epoch of 64 images at batch 32, 100 test images (checks that everything
           runs, in two steps of the smallest batch that is still a batch; it learns nothing)
    auto   full with a CUDA GPU, quick without

A small profile keeps a study's protocol at its own scale: a study that holds the first 10,000 of the
60,000 training images out for validation holds out a sixth of the profile's images. The paper's
other experiments (MultiMNIST 36×36, expanded MNIST 40×40: 3–4× the work per image of MNIST, and
baselines of 25–30M parameters) have their own quick and tiny sizes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..core.config import TrainConfig
from ..core.datasets import dataset_info
from ..core.errors import CapslibError
from ..core.runs import epochs_text

MNIST_TRAIN_IMAGES = 60_000  # the scale at which studies declare their validation split


@dataclass(frozen=True)
class Profile:
    name: str
    epochs: int | None = None        # None (full): the study's own
    batch_size: int | None = None
    train_subset: int | None = None  # None: all training images
    test_subset: int | None = None   # None: all test images
    test_pairs: int | None = None    # MultiMNIST pairs per test image; None: the study's own

    def sizes(self) -> dict:
        """The fields this profile sets (none for full)."""
        return {name: value for name, value in dataclasses.asdict(self).items() if name != "name" and value is not None}


PROFILES = {
    "full": Profile("full"),
    "laptop": Profile("laptop", epochs=2, batch_size=128),
    "quick": Profile("quick", epochs=2, batch_size=32, train_subset=1000, test_subset=500),
    "tiny": Profile("tiny", epochs=1, batch_size=32, train_subset=64, test_subset=100),
}
GENERATED_PROFILES = {  # on a 2-core CPU a CapsNet trains ~10 such images a second
    "quick": Profile("quick", epochs=2, batch_size=32, train_subset=300, test_subset=100, test_pairs=2),
    "tiny": Profile("tiny", epochs=1, batch_size=32, train_subset=40, test_subset=10, test_pairs=2),
}
CHOICES = ("auto", *PROFILES)


def resolve_profile(name: str, cuda: bool) -> str:
    """The profile called `name`; "auto" is full with a CUDA device and quick without."""
    if name == "auto":
        return "full" if cuda else "quick"
    if name not in PROFILES:
        raise CapslibError(f"profile must be one of {', '.join(CHOICES)}, got {name!r}")
    return name


def profile_for(name: str, dataset: str) -> Profile:
    """The sizes of profile `name` (not auto) for a run on `dataset`."""
    generated = dataset_info(dataset).generator is not None
    return GENERATED_PROFILES.get(name, PROFILES[name]) if generated else PROFILES[name]


def sized(config: TrainConfig, name: str, keep: tuple[str, ...] = ()) -> TrainConfig:
    """`config` sized by profile `name` (not auto), but for the fields named in `keep` (given
    explicitly). The validation split is scaled with the training images."""
    profile = profile_for(name, config.dataset)
    sizes = {k: v for k, v in profile.sizes().items() if k not in keep}
    if "train_subset" in sizes and "validation_size" not in keep and config.validation_size:
        sizes["validation_size"] = config.validation_size * sizes["train_subset"] // MNIST_TRAIN_IMAGES
    return dataclasses.replace(config, **sizes)


def describe(config: TrainConfig) -> str:
    """'2 epochs of 1,000 training images (166 held out) at batch 32, 500 test images'."""
    train = f"{config.train_subset:,}" if config.train_subset else "all"
    held = f" ({config.validation_size:,} held out)" if config.validation_size else ""
    test = f"{config.test_subset:,}" if config.test_subset else "all"
    return f"{epochs_text(config.epochs)} of {train} training images{held} at batch {config.batch_size}, {test} test images"
