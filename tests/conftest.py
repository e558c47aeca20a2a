"""Fixtures shared by several test files, and the tiny study started in the background."""

import pytest
import torch

from capslib.core.data import load_split, to_tensors
from capslib.core.datasets import dataset_info
from capslib.core.model import CapsNet


@pytest.fixture(scope="session")
def mnist_test():
    """The first 100 MNIST test images (N×1×28×28 in [0, 1]) and their labels: real digits, on
    which even an untrained CapsNet predicts many different classes (random images would not)."""
    images, labels = load_split(dataset_info("mnist").default_root, "test", "mnist")
    return to_tensors(images[:100], labels[:100])


@pytest.fixture(scope="session")
def early_capsnet():
    """A random CapsNet (routing 3, decoder; eval mode) whose capsules are as long as early in training.

    W × 30 gives capsule lengths of about 0.2 on MNIST; with the initial W (std 0.01) they are about
    0.0002, and the decoder's outputs from one class's capsule or another's differ by < 1e-5: too
    little for a test to tell which class was decoded. On mnist_test it predicts 9 classes."""
    torch.manual_seed(0)
    model = CapsNet(routing_iterations=3, reconstruction=True).eval()
    with torch.no_grad():
        model.W.mul_(30)
    return model


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected what will not run
def pytest_collection_modifyitems(session, config, items):
    """When the tiny study of tests/test_notebooks.py will run, start it now, in the background, and
    run the tests of that file last: the study (minutes of mostly single-process work) then runs
    beside the other tests instead of after them, on CI's two cores."""
    notebook_tests = [item for item in items if item.path.name == "test_notebooks.py"]
    if config.option.collectonly or not any("study" in item.fixturenames for item in notebook_tests):
        return
    items[:] = [item for item in items if item.path.name != "test_notebooks.py"] + notebook_tests
    notebook_tests[0].module.start_tiny_study()
    torch.set_num_threads(1)  # the study takes the other core; two threads each would contend


def pytest_unconfigure(config):
    import sys

    module = sys.modules.get("test_notebooks")
    if module is not None:
        module.stop_tiny_study()
