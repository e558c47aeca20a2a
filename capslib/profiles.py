"""Profiles: how big a training run is, by purpose. The sizes are declared here and nowhere else:
the notebooks take a `profile` parameter and the Makefile passes PROFILE.

    full   the study, the committed results: 40 epochs of all 60,000 images, batch 128 (a GPU)
    quick  a CPU, in minutes: 2 epochs of 1,000 images at batch 32 (62 steps, enough to learn
           something), tested on 500 images
    tiny   the test suite: 1 epoch of 64 images at batch 32, 100 test images (checks that everything
           runs, in two steps of the smallest batch that is still a batch; it learns nothing)
    auto   full with a CUDA GPU, quick without

The paper's other experiments (MultiMNIST 36×36, expanded MNIST 40×40: 3–4× the work per image of
MNIST, and baselines of 25–30M parameters) have their own quick and tiny sizes (GENERATED_PROFILES);
their full size is each study's own (capslib/studies.py).

A size given explicitly (a notebook's epochs, batch_size, train_subset, test_subset; make EPOCHS=…)
overrides the profile's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import CapslibError


@dataclass(frozen=True)
class Profile:
    name: str
    epochs: int
    batch_size: int
    train_subset: int | None  # None: all training images
    test_subset: int | None   # None: all test images
    test_pairs: int | None = None  # MultiMNIST pairs per test image; None: TrainConfig's (the paper's 1,000)

    def describe(self) -> str:
        train = f"{self.train_subset:,}" if self.train_subset else "all"
        test = f"{self.test_subset:,}" if self.test_subset else "all"
        epochs = "1 epoch" if self.epochs == 1 else f"{self.epochs} epochs"
        return f"{epochs} of {train} training images at batch {self.batch_size}, {test} test images"


PROFILES = {
    "full": Profile("full", epochs=40, batch_size=128, train_subset=None, test_subset=None),
    "quick": Profile("quick", epochs=2, batch_size=32, train_subset=1000, test_subset=500),
    "tiny": Profile("tiny", epochs=1, batch_size=32, train_subset=64, test_subset=100),
}
GENERATED_PROFILES = {  # on a 2-core CPU a CapsNet trains ~10 such images a second
    "quick": Profile("quick", epochs=2, batch_size=32, train_subset=300, test_subset=100, test_pairs=2),
    "tiny": Profile("tiny", epochs=1, batch_size=32, train_subset=40, test_subset=10, test_pairs=2),
}
CHOICES = ("auto", *PROFILES)


def resolve_profile(name: str, device: torch.device | str, generated: bool = False) -> Profile:
    """The profile called `name`; "auto" is full on a CUDA device and quick otherwise. `generated`: the
    sizes for the paper's other experiments (MultiMNIST, expanded MNIST)."""
    if name == "auto":
        name = "full" if torch.device(device).type == "cuda" else "quick"
    if name not in PROFILES:
        raise CapslibError(f"profile must be one of {', '.join(CHOICES)}, got {name!r}")
    return GENERATED_PROFILES.get(name, PROFILES[name]) if generated else PROFILES[name]
