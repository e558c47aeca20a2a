"""capslib: a reproducible PyTorch study of "Dynamic Routing Between Capsules" (Sabour, Frosst,
Hinton, NeurIPS 2017).

    capslib/core/    the paper's CapsNet and its training: data, the model with its routing and
                     losses, the speed paths, training, evaluation, checkpoints, run folders.
                     It imports nothing of the study.
    capslib/study/   the study built on it: the declared sets of runs and their sweeps, profiles,
                     analysis, tables, figures, notebook helpers, HTML reports, benchmarks
    capslib/cli.py   the command line (`capslib ...`, `python -m capslib ...`)

The layers are a contract that `make test` checks (import-linter, pyproject.toml). `import capslib`
is light: it loads neither torch nor the study's matplotlib and pandas; the names below are imported
the first time they are used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> the module that defines it (imported on first use, PEP 562)
_EXPORTS = {
    "TrainConfig": "capslib.core.config",
    "CapslibError": "capslib.core.errors",
    "CapsNet": "capslib.core.model",
    "BaselineCNN": "capslib.core.model",
    "squash": "capslib.core.model",
    "dynamic_routing": "capslib.core.model",
    "count_parameters": "capslib.core.model",
    "train": "capslib.core.train",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in ("core", "study", "cli"):
        return importlib.import_module(f"capslib.{name}")
    raise AttributeError(f"module 'capslib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, "core", "study", "cli"])
