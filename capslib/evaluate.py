"""Test-set evaluation: accuracy, losses and the confusion matrix, in large batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .speed import PATHS, SpeedPath, autocast, prepare_images


@dataclass
class Evaluation:
    accuracy: float                   # fraction in [0, 1]
    loss: float                       # the training objective on the test set (decoder fed true labels)
    margin_loss: float | None
    reconstruction_loss: float | None
    predictions: np.ndarray           # N predicted classes
    labels: np.ndarray                # N true classes

    @property
    def error_percent(self) -> float:
        return 100.0 * (1.0 - self.accuracy)

    @property
    def misclassified(self) -> np.ndarray:
        return np.flatnonzero(self.predictions != self.labels)

    def confusion_matrix(self, num_classes: int = 10) -> np.ndarray:
        """Rows: true class; columns: predicted class."""
        return np.bincount(self.labels * num_classes + self.predictions,
                           minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@torch.inference_mode()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000,
             path: SpeedPath = PATHS["fp32"]) -> Evaluation:
    """Evaluate `model` on images/labels (already on the model's device). One host sync at the end."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, device=images.device, dtype=torch.float64)
    predictions = []
    has_margin = has_reconstruction = False
    try:
        for start in range(0, len(images), batch_size):
            x, y = prepare_images(images[start:start + batch_size], path), labels[start:start + batch_size]
            with autocast(path, images.device):
                output = model(x, y)
            predictions.append(output.scores.argmax(dim=1))
            has_margin = output.margin_loss is not None
            has_reconstruction = output.reconstruction_loss is not None
            parts = [output.loss, output.margin_loss, output.reconstruction_loss]
            sums += torch.stack([(p.double() if p is not None else sums.new_zeros(())) for p in parts]) * len(x)
    finally:
        model.train(was_training)
    n = len(images)
    loss, margin, recon = (sums / n).tolist()
    predicted = torch.cat(predictions).cpu().numpy()
    truth = labels.cpu().numpy()
    return Evaluation(
        accuracy=float((predicted == truth).mean()),
        loss=loss,
        margin_loss=margin if has_margin else None,
        reconstruction_loss=recon if has_reconstruction else None,
        predictions=predicted,
        labels=truth,
    )


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1000,
            path: SpeedPath = PATHS["fp32"]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
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
