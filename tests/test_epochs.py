"""What a training run feeds the model and the optimizer, watched from outside train(): full
batches of shifted training images with their own labels, a new order every epoch, the logged
learning rate in the optimizer, the test images unshifted and scored independently of the
evaluation batch size. And the paper's settings as the defaults of a run.

One tiny run (2 epochs of 100 MNIST images, batch 32, routing 1, CPU) is trained once for the
module, with every forward call of its CapsNet recorded (helpers.model_calls). 100 images make 3
full batches and 4 left over; 50 test images in evaluation batches of 16 end in a ragged batch of 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from capslib.core.checkpoint import load_checkpoint, load_model
from capslib.core.config import TrainConfig
from capslib.core.data import load_dataset, to_tensors
from capslib.core.evaluate import evaluate
from capslib.core.model import LAMBDA, M_NEG, M_POS
from capslib.core.model import RECONSTRUCTION_WEIGHT, CapsNet
from capslib.core.runs import Run
from capslib.core.train import train
from helpers import expected_shift, model_calls

TRAIN_IMAGES, TEST_IMAGES, BATCH, EVAL_BATCH, EPOCHS = 100, 50, 32, 16, 2
PAPER_MAX_SHIFT = 2  # "shifted by up to 2 pixels in each direction with zero padding"


@dataclass
class RecordedRun:
    run: Run
    folder: Path
    epochs: list[tuple[list, list]]  # per epoch: its training calls and its evaluation calls
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def by_epoch(calls: list) -> list[tuple[list, list]]:
    """Split recorded calls into epochs: training-mode calls, then the evaluation's (eval mode)."""
    epochs = []
    for training, images, targets in calls:
        if training and (not epochs or epochs[-1][1]):  # training after an evaluation: a new epoch
            epochs.append(([], []))
        epochs[-1][0 if training else 1].append((images, targets))
    return epochs


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> RecordedRun:
    folder = tmp_path_factory.mktemp("epochs") / "run"
    config = TrainConfig(train_subset=TRAIN_IMAGES, test_subset=TEST_IMAGES, batch_size=BATCH,
                         eval_batch_size=EVAL_BATCH, epochs=EPOCHS, routing_iterations=1, device="cpu",
                         speed="fp32", ckpt_dir=str(folder))  # float32, as evaluate() scores (auto may be bf16)
    with model_calls(CapsNet) as calls:
        run = train(config, log=lambda *_: None)
    data = load_dataset("mnist", train_subset=TRAIN_IMAGES, test_subset=TEST_IMAGES)
    return RecordedRun(run, folder, by_epoch(calls), *to_tensors(data.train_images, data.train_labels),
                       *to_tensors(data.test_images, data.test_labels))


def test_every_step_trains_on_a_full_batch(recorded):
    # The ragged last batch (4 of the 100 images) is dropped, so every step has the same shape (the
    # CUDA-graph path replays one fixed batch size) and the configured size.
    assert len(recorded.epochs) == EPOCHS
    for training, _ in recorded.epochs:
        assert [len(images) for images, _ in training] == [BATCH] * (TRAIN_IMAGES // BATCH)
    trained = BATCH * (TRAIN_IMAGES // BATCH)  # 96: the logged train accuracy is a count of these
    for accuracy in recorded.run.history.train_accuracy:
        assert round(accuracy * trained) == pytest.approx(accuracy * trained)


def shifted_sources(images: torch.Tensor, max_shift: int) -> dict[bytes, tuple[int, tuple[int, int]]]:
    """Every shift of at most `max_shift` pixels of every image, as its bytes: (image index, shift)."""
    sources = {}
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            for index, shifted in enumerate(expected_shift(images.numpy(), dy, dx)):
                sources.setdefault(shifted.tobytes(), (index, (dy, dx)))
    return sources


def test_training_images_are_shifted_training_images_with_their_labels(recorded):
    sources = shifted_sources(recorded.train_images, PAPER_MAX_SHIFT)
    orders = []
    for training, _ in recorded.epochs:
        seen = []
        for images, targets in training:
            for image, target in zip(images, targets):
                key = image.numpy().tobytes()
                assert key in sources, "a training input that is no shift of at most 2 pixels of a training image"
                index, shift = sources[key]
                assert target == recorded.train_labels[index]
                seen.append((index, shift))
        indices = [index for index, _ in seen]
        assert len(set(indices)) == len(indices), "an image trained on twice in one epoch"
        moved = sum(shift != (0, 0) for _, shift in seen)
        assert moved > 0.8 * len(seen), f"only {moved} of {len(seen)} images shifted"  # expected: 24 in 25
        orders.append(indices)
    assert orders[0] != orders[1], "the same order in both epochs"


def test_the_optimizer_uses_the_logged_learning_rate(recorded):
    # The log shows the decay; the optimizer must follow it: after the last epoch its lr is the
    # last logged one (0.001 · 0.95), not the initial 0.001.
    logged = recorded.run.history.lr.tolist()
    assert logged == pytest.approx([1e-3, 1e-3 * 0.95])
    groups = load_checkpoint(recorded.folder)["optimizer"]["param_groups"]
    assert [float(group["lr"]) for group in groups] == pytest.approx([logged[-1]])


def test_evaluation_sees_the_test_images_unshifted_and_in_order(recorded):
    for _, evaluation in recorded.epochs:
        assert [len(images) for images, _ in evaluation] == [16, 16, 16, 2]
        assert torch.equal(torch.cat([images for images, _ in evaluation]), recorded.test_images)
        assert torch.equal(torch.cat([targets for _, targets in evaluation]), recorded.test_labels)


def test_logged_test_scores_do_not_depend_on_the_evaluation_batch_size(recorded):
    # The run scored the test set in batches of 16 (the last of 2 images); the same weights scored
    # in one batch give the same mean over the 50 images.
    model, _, _ = load_model(recorded.folder)
    whole = evaluate(model, recorded.test_images, recorded.test_labels, batch_size=TEST_IMAGES)
    logged = recorded.run.history.iloc[-1]
    assert logged.test_loss == pytest.approx(whole.loss, rel=1e-5)
    assert logged.test_margin_loss == pytest.approx(whole.margin_loss, rel=1e-5)
    assert logged.test_reconstruction_loss == pytest.approx(whole.reconstruction_loss, rel=1e-5)
    assert logged.test_accuracy == whole.accuracy
    assert np.isclose(logged.test_error, 100 * (1 - whole.accuracy))


def test_a_default_run_keeps_the_papers_settings():
    config = TrainConfig()
    assert (config.model, config.routing_iterations, config.reconstruction, config.detach_routing) == \
        ("capsnet", 3, True, False)
    assert (config.batch_size, config.max_shift, config.lr) == (128, PAPER_MAX_SHIFT, 1e-3)
    assert config.lr_decay == 0.95  # not the paper's (it states no schedule): the seed study's
    assert (M_POS, M_NEG, LAMBDA) == (0.9, 0.1, 0.5)
    assert RECONSTRUCTION_WEIGHT == 0.0005
