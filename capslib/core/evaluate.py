"""Test-set evaluation: accuracy, losses and the confusion matrix, in large batches.

A set is scored batch by batch (`evaluate_set`): held in memory, or generated on the device as it is
scored (MultiMNIST's 10M test pairs are never stored; capslib/generated.py). With two labels per
example an example is correct iff its two longest capsules are its two labels (model.is_correct)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import CapslibError
from .generated import TensorSet
from .model import is_correct, predicted_classes
from .speed import SPEED_PATHS, SpeedPath, autocast, prepare_images


@dataclass
class Evaluation:
    accuracy: float                   # fraction in [0, 1]
    loss: float                       # the training objective on the test set (decoder fed true labels)
    margin_loss: float | None
    reconstruction_loss: float | None
    predictions: np.ndarray           # N predicted classes (N×k: the k longest capsules)
    labels: np.ndarray                # N true classes (N×k)

    @property
    def error_percent(self) -> float:
        return 100.0 * (1.0 - self.accuracy)

    @property
    def single_label(self) -> bool:
        return self.labels.ndim == 1

    @property
    def correct(self) -> np.ndarray:
        if self.single_label:
            return self.predictions == self.labels
        return (np.sort(self.predictions, axis=1) == np.sort(self.labels, axis=1)).all(axis=1)

    @property
    def misclassified(self) -> np.ndarray:
        return np.flatnonzero(~self.correct)

    def misses(self) -> dict[str, np.ndarray]:
        """The examples got wrong: their indices in the set, their labels and the predicted classes
        (with two labels, both, as "3 7": labels in the set's order, predictions longest capsule first)."""
        index = self.misclassified

        def spelled(classes: np.ndarray) -> np.ndarray:
            return classes if classes.ndim == 1 else np.array([" ".join(map(str, row)) for row in classes])

        return {"index": index, "label": spelled(self.labels[index]), "predicted": spelled(self.predictions[index])}

    def confusion_matrix(self, num_classes: int = 10) -> np.ndarray:
        """Rows: true class; columns: predicted class."""
        if not self.single_label:
            raise CapslibError("a confusion matrix needs one label per image (this set has several)")
        return np.bincount(self.labels * num_classes + self.predictions,
                           minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000,
             path: SpeedPath = SPEED_PATHS["fp32"]) -> Evaluation:
    """Evaluate `model` on images/labels (already on the model's device). One host sync at the end."""
    return evaluate_set(model, TensorSet(images, labels), batch_size, path)


@torch.inference_mode()
def evaluate_set(model: nn.Module, examples, batch_size: int = 1000, path: SpeedPath = SPEED_PATHS["fp32"]) -> Evaluation:
    """Evaluate `model` on a set (generated.TensorSet, MultiMNISTSet, ...: len() and batch(start, stop),
    which yields generated.Examples), already on the model's device. One host sync at the end."""
    was_training = model.training
    model.eval()
    device = examples.images.device
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    predictions, all_labels, hits = [], [], []
    has_margin = has_reconstruction = False
    try:
        for start in range(0, len(examples), batch_size):
            x, y, reconstruction_targets = examples.batch(start, start + batch_size)
            x = prepare_images(x, path)
            with autocast(path, device):  # a set whose images are their own reconstruction targets passes none
                output = model(x, y) if reconstruction_targets is None else model(x, y, reconstruction_targets)
            predictions.append(predicted_classes(output.scores, 1 if y.dim() == 1 else y.shape[1]))
            all_labels.append(y)
            hits.append(is_correct(output.scores, y))
            has_margin = output.margin_loss is not None
            has_reconstruction = output.reconstruction_loss is not None
            parts = [output.loss, output.margin_loss, output.reconstruction_loss]
            sums += torch.stack([(p.double() if p is not None else sums.new_zeros(())) for p in parts]) * len(x)
    finally:
        model.train(was_training)
    n = len(examples)
    loss, margin, recon = (sums / n).tolist()
    predicted = torch.cat(predictions).cpu().numpy()
    truth = torch.cat(all_labels).cpu().numpy()
    return Evaluation(
        accuracy=float(torch.cat(hits).double().mean()),
        loss=loss,
        margin_loss=margin if has_margin else None,
        reconstruction_loss=recon if has_reconstruction else None,
        predictions=predicted,
        labels=truth,
    )


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1000,
            path: SpeedPath = SPEED_PATHS["fp32"]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Scores, digit capsules and reconstructions (from the predicted class) of every image."""
    was_training = model.training
    model.eval()
    outputs = []
    try:
        for start in range(0, len(images), batch_size):
            with autocast(path, images.device):
                outputs.append(model(prepare_images(images[start:start + batch_size], path)))
    finally:
        model.train(was_training)

    def gather(field):
        parts = [getattr(o, field) for o in outputs]
        return None if parts[0] is None else torch.cat(parts).float()

    return gather("scores"), gather("capsules"), gather("reconstruction")
