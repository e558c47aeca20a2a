"""Margin and reconstruction losses on hand-made values."""

import pytest
import torch

from capslib.core.model import margin_loss, reconstruction_loss


def test_margin_loss_is_zero_beyond_the_margins():
    lengths = torch.full((1, 10), 0.05)
    lengths[0, 4] = 0.95
    assert margin_loss(lengths, torch.tensor([4])).item() == 0.0


def test_margin_loss_hand_computed():
    # Present class at 0.5: (0.9 − 0.5)² = 0.16. Each of 9 absent classes at 0.5: 0.5·(0.5 − 0.1)² = 0.08.
    lengths = torch.full((1, 10), 0.5)
    assert margin_loss(lengths, torch.tensor([0])).item() == pytest.approx(0.16 + 9 * 0.08)


def test_margin_loss_averages_over_the_batch_and_sums_over_classes():
    lengths = torch.tensor([[0.0] * 10, [0.9] + [0.1] * 9])
    # Image 0: its class (2) at 0 → 0.81; others below m− → 0. Image 1: perfect → 0.
    assert margin_loss(lengths, torch.tensor([2, 0])).item() == pytest.approx(0.81 / 2)


def test_margin_loss_weights_absent_classes_by_lambda():
    lengths = torch.zeros(1, 10)
    lengths[0, 1] = 0.6  # wrong class too long: 0.5·(0.6 − 0.1)² = 0.125; true class 0 at 0: 0.81
    assert margin_loss(lengths, torch.tensor([0])).item() == pytest.approx(0.81 + 0.125)


def test_reconstruction_loss_is_the_mean_sum_of_squared_errors():
    images = torch.ones(2, 1, 28, 28)
    reconstruction = torch.zeros(2, 784)
    reconstruction[1] = 0.5
    # image 0: 784·1² ; image 1: 784·0.5²
    assert reconstruction_loss(reconstruction, images).item() == pytest.approx((784 + 784 * 0.25) / 2)


def test_losses_are_float32_for_bfloat16_inputs():
    lengths = torch.full((2, 10), 0.5, dtype=torch.bfloat16)
    assert margin_loss(lengths, torch.tensor([0, 1])).dtype == torch.float32
    assert reconstruction_loss(torch.zeros(2, 784, dtype=torch.bfloat16), torch.ones(2, 1, 28, 28)).dtype == torch.float32
