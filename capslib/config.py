"""One plain configuration for a training run (the nanoGPT way: a dataclass, no magic)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .data import DATASETS
from .errors import CapslibError

SPEED_PATHS = ("auto", "fp32", "tf32", "bf16", "compile", "graph")
MODELS = ("capsnet", "baseline")


@dataclass
class TrainConfig:
    # what to train
    dataset: str = "mnist"
    data_root: str | None = None          # default: the repository's data/<dataset>
    model: str = "capsnet"                # or "baseline", Table 1's CNN
    routing_iterations: int = 3
    reconstruction: bool = True
    detach_routing: bool = False          # stop gradients in early routing iterations (XifengGuo)
    # how (the paper: Adam, batch 128; the seed study: lr = 0.001·0.95^epoch; ±2 px shifts)
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    lr_decay: float = 0.95                # lr of epoch e (from 0) is lr · lr_decay^e
    max_shift: int = 2
    seed: int = 1
    train_subset: int | None = None       # keep the first N training images (quick runs)
    test_subset: int | None = None
    verify_checksums: bool = True
    # where and how fast
    ckpt_dir: str = "runs/default"
    logs_dir: str | None = None           # default: ckpt_dir
    device: str = "auto"                  # auto: CUDA when present
    speed: str = "auto"                   # auto: "graph" on CUDA, "fp32" on CPU (see speed.py)
    eval_batch_size: int = 1000

    @property
    def log_dir(self) -> Path:
        return Path(self.logs_dir or self.ckpt_dir)

    def validate(self) -> "TrainConfig":
        """Raise CapslibError naming the first bad field; return self so calls can chain."""
        positive = ("epochs", "batch_size", "routing_iterations", "eval_batch_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CapslibError(f"{name} must be a positive integer, got {value!r}")
        for name in ("train_subset", "test_subset"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise CapslibError(f"{name} must be a positive integer or None, got {value!r}")
        if self.dataset not in DATASETS:
            raise CapslibError(f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if self.model not in MODELS:
            raise CapslibError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.speed not in SPEED_PATHS:
            raise CapslibError(f"speed must be one of {', '.join(SPEED_PATHS)}, got {self.speed!r}")
        if not self.lr > 0 or not 0 < self.lr_decay <= 1:
            raise CapslibError(f"need lr > 0 and 0 < lr_decay <= 1, got lr={self.lr!r}, lr_decay={self.lr_decay!r}")
        if not 0 <= self.max_shift <= 8:
            raise CapslibError(f"max_shift must be in 0..8, got {self.max_shift!r}")
        for name in ("reconstruction", "detach_routing", "verify_checksums"):
            if not isinstance(getattr(self, name), bool):
                raise CapslibError(f"{name} must be True or False, got {getattr(self, name)!r}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# Fields that may differ when a run is resumed: they change where or how fast it runs, or how
# long, but not the trajectory it follows.
RESUMABLE_CHANGES = ("epochs", "device", "speed", "eval_batch_size", "ckpt_dir", "logs_dir",
                     "data_root", "verify_checksums")


def resume_conflicts(saved: TrainConfig, requested: TrainConfig) -> list[str]:
    """The fields whose requested value would change a saved run's trajectory."""
    return [f"{f.name}: saved {getattr(saved, f.name)!r}, requested {getattr(requested, f.name)!r}"
            for f in dataclasses.fields(TrainConfig)
            if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(requested, f.name)]
