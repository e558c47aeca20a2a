"""A trained run, loaded with its test set: evaluation, reconstructions and perturbations.

What the `evaluate`, `reconstruct` and `perturb` commands and notebooks 03-05 call. Inference here
runs in float32 (the reference precision) whatever path the run was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .checkpoint import load_model
from .config import TrainConfig
from .data import dataset_info, load_split, to_tensors
from .errors import CapslibError
from .evaluate import Evaluation, evaluate, predict
from .figures import (perturb_capsule, perturbation_examples, perturbation_figure,
                      reconstruction_figure)
from .speed import resolve_device


@dataclass
class TrainedRun:
    model: nn.Module
    config: TrainConfig
    epoch: int
    classes: tuple[str, ...]
    test_images: torch.Tensor  # N×1×28×28 in [0, 1], on the model's device
    test_labels: torch.Tensor

    @cached_property
    def evaluation(self) -> Evaluation:
        return evaluate(self.model, self.test_images, self.test_labels)

    @cached_property
    def outputs(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Scores, capsules and reconstructions (from the predicted class) of every test image."""
        return predict(self.model, self.test_images)

    @property
    def predictions(self) -> np.ndarray:
        return self.outputs[0].argmax(dim=1).cpu().numpy()

    @property
    def labels(self) -> np.ndarray:
        return self.test_labels.cpu().numpy()

    def require_decoder(self) -> None:
        if getattr(self.model, "decoder", None) is None:
            raise CapslibError(f"this {self.config.model} run ({self.config.ckpt_dir}) has no reconstruction "
                               "decoder: train with --reconstruction-loss=True to draw reconstructions")


def load_trained(ckpt_path: Path | str, data_root: Path | str | None = None, device: str = "auto",
                 test_subset: int | None = None, verify: bool = True) -> TrainedRun:
    """A checkpoint (file, or run folder → its last.pt) and the test split of its dataset."""
    device = resolve_device(device)
    model, config, checkpoint = load_model(ckpt_path, device)
    info = dataset_info(config.dataset)
    images, labels = load_split(Path(data_root or config.data_root or info.default_root), "test", config.dataset, verify)
    subset = test_subset or config.test_subset
    images, labels = to_tensors(images[:subset], labels[:subset], device)
    return TrainedRun(model, config, checkpoint["epoch"], info.classes, images, labels)


def reconstruction_figure_of(run: TrainedRun, per_row: int = 8):
    run.require_decoder()
    _, _, reconstructions = run.outputs
    return reconstruction_figure(run.test_images, reconstructions, run.labels, run.predictions, run.classes, per_row)


def reconstruction_errors(run: TrainedRun) -> pd.DataFrame:
    """Per test image: label, prediction, and the sum of squared errors of its reconstruction."""
    run.require_decoder()
    _, _, reconstructions = run.outputs
    sse = ((reconstructions - run.test_images.flatten(1)) ** 2).sum(dim=1).cpu().numpy()
    return pd.DataFrame({"label": run.labels, "prediction": run.predictions, "sse": sse,
                         "correct": run.labels == run.predictions})


def perturbation_figure_of(run: TrainedRun):
    run.require_decoder()
    _, capsules, _ = run.outputs
    chosen = perturbation_examples(run.labels, run.predictions)
    panels = [perturb_capsule(run.model, capsules[i, c], c) for c, i in chosen.items()]
    titles = [f"{run.classes[c]} (test image {i})" for c, i in chosen.items()]
    return perturbation_figure(panels, titles)
