"""Fixtures shared by several test files."""

import pytest

from capslib.data import dataset_info, load_split, to_tensors


@pytest.fixture(scope="session")
def mnist_test():
    """The first 100 MNIST test images (N×1×28×28 in [0, 1]) and their labels: real digits, on
    which even an untrained CapsNet predicts many different classes (random images would not)."""
    images, labels = load_split(dataset_info("mnist").default_root, "test", "mnist")
    return to_tensors(images[:100], labels[:100])

