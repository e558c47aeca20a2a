"""Fixtures shared by several test files, and the tiny study started in the background."""

import os

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


# Under pytest-xdist (`make test`: -n 2 --dist loadfile), files in this order go out first: each file runs
# whole on one worker, so the longest ones start at once and the last to finish are short. test_notebooks.py
# first: its tiny study and newcomer's run (subprocesses, minutes) then run beside everything else.
FIRST = ("test_notebooks.py", "test_train.py", "test_interrupts.py", "test_cli.py", "test_gpus.py", "test_gpu_job.py",
         "test_figures.py")


STUDY_NEEDED = pytest.StashKey[bool]()  # some selected test reads the tiny study (test_notebooks.py)


def xdist_worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs real trainings, subprocesses or notebooks (make test-fast leaves "
                                       "these out)")
    if xdist_worker(config):
        # one thread per worker: two workers on CI's two cores, each with torch's default of a thread per
        # core, would contend; subprocesses (capslib train, papermill kernels) inherit it
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


# The files whose tests train real runs, start processes and signal them, or execute notebooks: `slow`
# (make test-fast, the edit loop, leaves them out; make test runs everything). Each file whole, so that a
# test added to one is never silently fast or slow by a list kept elsewhere.
SLOW_FILES = {"test_notebooks.py", "test_train.py", "test_interrupts.py", "test_cli.py", "test_gpus.py",
              "test_gpu_job.py", "test_figures.py", "test_slurm.py", "test_explorer_browser.py", "test_explore.py",
              "test_seams.py", "test_reports.py", "test_cpu_speed.py", "test_gpu.py"}


def pytest_itemcollected(item):  # as each test is collected: before -m "not slow" selects
    if item.path.name in SLOW_FILES:
        item.add_marker(pytest.mark.slow)


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected what will not run
def pytest_collection_modifyitems(session, config, items):
    """When the tiny study of tests/test_notebooks.py will run, start it now, in the background, and
    run the tests of that file last: the study (minutes of mostly single-process work) then runs
    beside the other tests instead of after them, on CI's two cores. Under xdist, each worker collects
    everything and cannot know which worker will run test_notebooks.py: the file goes first instead, and
    its worker starts the study when its first test needs it (test_notebooks.study) while the other worker
    runs the rest."""
    notebook_tests = [item for item in items if item.path.name == "test_notebooks.py"]
    if xdist_worker(config):
        # the notebook file's own order: what needs neither the study nor the newcomer's run first, then the
        # newcomer, then the study's checks, so that its worker works while the study runs (it starts the
        # study at the file's first test: test_notebooks.tiny_study_in_the_background)
        rank = {name: i for i, name in enumerate(FIRST)}
        def order(item):
            needs = set(item.fixturenames)
            within = 2 if "study" in needs else 1 if "newcomer" in needs else 0
            return rank.get(item.path.name, len(FIRST)), within if item.path.name == "test_notebooks.py" else 0
        items.sort(key=order)  # stable: each file's order kept otherwise
        config.stash[STUDY_NEEDED] = not config.option.collectonly and any("study" in i.fixturenames for i in notebook_tests)
        return
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
