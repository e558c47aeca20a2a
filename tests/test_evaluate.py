"""capslib.core.evaluate on a stand-in model whose outputs are known functions of each image, so that
every number evaluate() reports can be computed by hand: the mean over images whatever the batch
size, argmax predictions, the images passed through untouched, the model's mode restored."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from capslib.core.evaluate import Evaluation, evaluate
from capslib.core.model import ModelOutput
from helpers import model_calls

N = 25  # not a multiple of the batch sizes below: the last batch is ragged


class KnownModel(nn.Module):
    """Scores of an image are its first 10 pixels; its loss, margin and reconstruction loss are 1, 2
    and 3 × its mean pixel, averaged over the batch as the real models do."""

    def forward(self, images, targets=None):
        flat = images.flatten(1)
        if targets is None:
            return ModelOutput(flat[:, :10])
        mean = flat.mean(dim=1)
        return ModelOutput(flat[:, :10], mean.mean(), 2 * mean.mean(), 3 * mean.mean())


@pytest.fixture(scope="module")
def images():
    # Very different mean pixels (0 … 1) so that any wrong weighting of a batch shows.
    generator = torch.Generator().manual_seed(0)
    scale = torch.linspace(0, 1, N).view(N, 1, 1, 1)
    return scale * torch.rand(N, 1, 28, 28, generator=generator)


@pytest.fixture(scope="module")
def labels(images):
    predicted = images.flatten(1)[:, :10].argmax(dim=1)
    labels = predicted.clone()
    labels[::5] = (labels[::5] + 1) % 10  # 5 of 25 wrong
    return labels


@pytest.mark.parametrize("batch_size", [1, 7, 10, N, 1000])
def test_losses_are_means_over_images_whatever_the_batch_size(images, labels, batch_size):
    result = evaluate(KnownModel(), images, labels, batch_size=batch_size)
    mean = images.double().flatten(1).mean(dim=1).mean().item()
    assert result.loss == pytest.approx(mean, rel=1e-6)
    assert result.margin_loss == pytest.approx(2 * mean, rel=1e-6)
    assert result.reconstruction_loss == pytest.approx(3 * mean, rel=1e-6)


@pytest.mark.parametrize("batch_size", [7, 1000])
def test_predictions_are_the_highest_scores(images, labels, batch_size):
    result = evaluate(KnownModel(), images, labels, batch_size=batch_size)
    expected = images.flatten(1)[:, :10].argmax(dim=1).numpy()
    np.testing.assert_array_equal(result.predictions, expected)
    np.testing.assert_array_equal(result.labels, labels.numpy())
    assert result.accuracy == 20 / 25
    assert result.error_percent == pytest.approx(20.0)
    np.testing.assert_array_equal(result.misclassified, np.arange(0, N, 5))


def test_the_model_sees_the_images_untouched_in_order(images, labels):
    with model_calls(KnownModel) as calls:
        evaluate(KnownModel(), images, labels, batch_size=10)
    assert [len(x) for _, x, _ in calls] == [10, 10, 5]
    assert torch.equal(torch.cat([x for _, x, _ in calls]), images)
    assert torch.equal(torch.cat([y for _, _, y in calls]), labels)
    assert not any(training for training, _, _ in calls)  # scored in eval mode


@pytest.mark.parametrize("training", [True, False])
def test_the_models_mode_is_restored(images, labels, training):
    # The training loop evaluates between epochs; a model left in eval mode would train without
    # dropout (the baseline CNN) from then on.
    model = KnownModel().train(training)
    evaluate(model, images, labels)
    assert model.training is training


def test_confusion_matrix_rows_are_true_classes():
    result = Evaluation(accuracy=0.5, loss=0.0, margin_loss=None, reconstruction_loss=None,
                        predictions=np.array([0, 1, 1, 2]), labels=np.array([0, 0, 1, 3]))
    matrix = result.confusion_matrix()
    assert matrix.shape == (10, 10) and matrix.sum() == 4
    assert (matrix[0, 0], matrix[0, 1], matrix[1, 1], matrix[3, 2]) == (1, 1, 1, 1)
