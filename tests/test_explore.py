"""The explorer of notebook 10 (capslib.study.explore): what it computes, and its widgets moved from Python
as a person moves them in the browser (tests/test_explorer_browser.py does that in a real browser).

The model is the conftest's early CapsNet (random weights, capsules as long as early in training), so that
the tests check which capsule is decoded and routed, not what a model has learned.
"""

from __future__ import annotations

import datetime
import io

import numpy as np
import pytest
import torch
from PIL import Image

from capslib.core.config import TrainConfig
from capslib.core.datasets import DATASETS
from capslib.core.errors import CapslibError
from capslib.core.model import CapsNet
from capslib.core.predict import mnist_like
from capslib.study import explore as E
from capslib.study import figures as F
from capslib.study.analysis import PERTURBATION_DELTAS, TrainedRun, perturb_capsule

pytest.importorskip("ipywidgets")


def run_of(model, mnist_test) -> TrainedRun:
    images, labels = mnist_test
    config = TrainConfig(routing_iterations=model.routing_iterations, reconstruction=model.decoder is not None)
    return TrainedRun(model, config, 1, DATASETS["mnist"].classes, images, labels)


@pytest.fixture(scope="module")
def explorer(early_capsnet, mnist_test) -> E.Explorer:
    return E.Explorer(run_of(early_capsnet, mnist_test))


@pytest.fixture
def app(explorer) -> E.ExplorerApp:
    return E.ExplorerApp(explorer, image_index=0)


def png_of(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def uploaded(data: bytes, name: str) -> tuple[dict]:
    """What ipywidgets' FileUpload holds after a person picks the file `name`."""
    return ({"name": name, "type": "image/png", "size": len(data), "content": memoryview(data),
             "last_modified": datetime.datetime.now(datetime.timezone.utc)},)


def decoded(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image)


# ---------------------------------------------------------------------------------------------
# what it computes


@torch.inference_mode()
def test_a_test_view_is_the_models_capsules_and_couplings(explorer, early_capsnet, mnist_test):
    images, labels = mnist_test
    view = explorer.test_view(7)
    assert (view.source, view.label, view.iterations) == ("test image 7", int(labels[7]), 3)
    torch.testing.assert_close(view.capsules, early_capsnet.digit_capsules(images[7:8])[0])
    assert view.prediction == int(early_capsnet(images[7:8]).scores.argmax())
    assert view.couplings.shape == (3, 1152, 10)
    torch.testing.assert_close(view.couplings[0], torch.full((1152, 10), 0.1))  # routing starts uniform
    torch.testing.assert_close(view.couplings.sum(dim=-1), torch.ones(3, 1152))


@torch.inference_mode()
def test_routing_fewer_times_changes_the_capsules_not_the_earlier_couplings(explorer, early_capsnet, mnist_test):
    three = explorer.test_view(3)
    for k in (1, 2):
        fewer = explorer.rerouted(three, k)
        assert fewer.iterations == k and fewer.couplings.shape[0] == k
        torch.testing.assert_close(fewer.couplings, three.couplings[:k])  # iteration t's couplings: whatever comes after
        torch.testing.assert_close(fewer.capsules, early_capsnet.digit_capsules(mnist_test[0][3:4], k)[0])
        assert not torch.allclose(fewer.capsules, three.capsules)
    with pytest.raises(CapslibError, match=r"routing iterations must be one of \(1, 2, 3\), got 4"):
        explorer.rerouted(three, 4)


@torch.inference_mode()
def test_reconstruct_is_the_decoder_on_the_predicted_capsule_moved_by_the_deltas(explorer, early_capsnet, mnist_test):
    view = explorer.test_view(5)
    plain = explorer.reconstruct(view)
    np.testing.assert_allclose(plain.ravel(), early_capsnet(mnist_test[0][5:6]).reconstruction[0].numpy(), atol=1e-6)
    # one slider at +0.10 is the paper's Fig. 4 grid at that dimension and value
    deltas = [0.0] * 16
    deltas[4] = 0.10
    grid = perturb_capsule(early_capsnet, view.capsules[view.prediction], view.prediction)
    column = int(np.flatnonzero(np.isclose(PERTURBATION_DELTAS, 0.10))[0])
    moved = explorer.reconstruct(view, deltas)
    np.testing.assert_allclose(moved, grid[4, column], atol=1e-6)
    assert np.abs(moved - plain).max() > 1e-4
    assert torch.equal(view.capsules, explorer.test_view(5).capsules)  # the cached capsules are left as they were


def test_an_upload_is_converted_as_mnist_was_made(explorer, mnist_test):
    digit = np.round(mnist_test[0][2, 0].numpy() * 255).astype(np.uint8)
    view = explorer.upload_view(png_of(digit), "mine.png")
    assert (view.source, view.label) == ("mine.png", None)
    np.testing.assert_allclose(view.image[0, 0].numpy(), mnist_like(digit / 255.0), atol=1e-6)
    assert np.abs(view.image[0, 0].numpy() - digit / 255.0).max() < 0.05  # an MNIST digit converts to itself
    # dark ink on a light ground: refused, then converted with --invert
    paper = png_of(255 - digit)
    with pytest.raises(CapslibError, match="paper.png: the image is mostly light.*--invert"):
        explorer.upload_view(paper, "paper.png")
    np.testing.assert_allclose(explorer.upload_view(paper, "paper.png", invert=True).image, view.image, atol=1e-6)
    with pytest.raises(CapslibError, match=r"^notes.txt: not a readable image"):
        explorer.upload_view(b"not an image", "notes.txt")


def test_test_image_out_of_range_is_one_clear_line(explorer):
    with pytest.raises(CapslibError, match=r"image_index must be in \[0, 99\] \(the run's 100 test images\), got 100"):
        explorer.test_view(100)


def test_next_misclassified_wraps_around(explorer):
    wrong = explorer.run.evaluation.misclassified
    assert len(wrong) >= 2
    assert explorer.next_misclassified(-1) == wrong[0]
    assert explorer.next_misclassified(int(wrong[0])) == wrong[1]
    assert explorer.next_misclassified(int(wrong[-1])) == wrong[0]


def test_a_run_without_decoder_or_routing_is_refused(mnist_test):
    with pytest.raises(CapslibError, match="no reconstruction decoder"):
        E.Explorer(run_of(CapsNet(routing_iterations=3, reconstruction=False).eval(), mnist_test))


def test_a_model_routed_more_than_three_times_offers_its_own_number(mnist_test):
    torch.manual_seed(0)
    explorer = E.Explorer(run_of(CapsNet(routing_iterations=5, reconstruction=True).eval(), mnist_test))
    assert explorer.routing_choices == (1, 2, 3, 4, 5) and explorer.test_view(0).iterations == 5


def test_the_static_figures_draw(explorer, tmp_path):
    view = explorer.test_view(0)
    for name, figure in (("lengths", explorer.lengths_figure(view)), ("perturbations", explorer.perturbation_figure(view)),
                         ("couplings", explorer.couplings_figure(view))):
        F.save_figure(figure, tmp_path / f"{name}.png")
    with Image.open(tmp_path / "perturbations.png") as image:
        assert image.width == 418  # one panel: no wider than it needs (85 + 11·29 − 1 + 15 pixels)


# ---------------------------------------------------------------------------------------------
# the widgets, moved as a person moves them


def test_the_explorer_opens_on_the_chosen_test_image(explorer):
    app = E.ExplorerApp(explorer, image_index=4)
    view = explorer.test_view(4)
    assert app.view.source == "test image 4" and app.routing.value == 3
    assert app.input.value == F.image_png(view.image)
    assert app.reconstruction.value == F.image_png(explorer.reconstruct(view))
    assert decoded(app.reconstruction.value).shape == (168, 168)
    assert f"predicted <b>{view.prediction}</b>" in app.status.value
    assert bytes(app.lengths.value).startswith(b"\x89PNG") and bytes(app.couplings.value).startswith(b"\x89PNG")
    assert len(app.sliders) == 16 and all(s.value == 0 for s in app.sliders)
    assert (app.sliders[0].min, app.sliders[0].max, app.sliders[0].step) == (-0.25, 0.25, 0.01)


def test_a_slider_move_redraws_the_reconstruction_and_reset_restores_it(app, explorer):
    original = app.reconstruction.value
    app.sliders[2].value = 0.2
    deltas = [0.0] * 16
    deltas[2] = 0.2
    assert app.reconstruction.value == F.image_png(explorer.reconstruct(app.view, deltas)) != original
    lengths, couplings = app.lengths.value, app.couplings.value
    app.sliders[9].value = -0.15
    assert app.reconstruction.value != F.image_png(explorer.reconstruct(app.view, deltas))
    assert (app.lengths.value, app.couplings.value) == (lengths, couplings)  # a slider runs the decoder only
    app.reset.click()
    assert all(s.value == 0 for s in app.sliders) and app.reconstruction.value == original


def test_another_test_image_shows_it_with_the_dimensions_reset(app, explorer):
    app.sliders[0].value = 0.1
    app.index.value = 9
    view = explorer.test_view(9)
    assert app.view.source == "test image 9" and app.input.value == F.image_png(view.image)
    assert all(s.value == 0 for s in app.sliders)
    assert app.reconstruction.value == F.image_png(explorer.reconstruct(view))
    app.next_wrong.click()
    assert app.index.value == explorer.next_misclassified(9) and "misclassified" in app.status.value


def test_the_routing_switch_reroutes_and_keeps_the_dimensions(app, explorer):
    app.sliders[1].value = 0.05
    couplings = app.couplings.value
    app.routing.value = 1
    assert app.view.iterations == 1 and "routed 1×" in app.status.value
    assert app.couplings.value != couplings and app.sliders[1].value == 0.05
    view = explorer.test_view(0, iterations=1)
    assert app.reconstruction.value == F.image_png(explorer.reconstruct(view, app.deltas))
    app.index.value = 3  # a new image keeps the routing chosen
    assert app.view.iterations == 1


def test_an_upload_shows_and_a_bad_one_says_why_in_one_line(app, mnist_test):
    digit = np.round(mnist_test[0][6, 0].numpy() * 255).astype(np.uint8)
    app.upload.value = uploaded(png_of(255 - digit), "pen.png")  # dark on light
    assert "pen.png: the image is mostly light" in app.status.value and "\n" not in app.status.value
    assert app.view.source == "test image 0"  # the error left the view as it was
    app.invert.value = True  # a person ticks --invert: the upload is converted again
    assert app.view.source == "pen.png" and app.view.label is None
    assert "<b>pen.png</b>" in app.status.value and "true class" not in app.status.value
    app.upload.value = uploaded(b"\x89PNG broken", "broken.png")
    assert "broken.png: not a readable image" in app.status.value and app.view.source == "pen.png"
    app.index.value = 5
    app.invert.value = False  # on a test image, --invert changes nothing
    assert app.view.source == "test image 5"
    app.upload.value = uploaded(png_of(digit), "<img src=x>.png")  # a file's name is shown as text, never as HTML
    assert "<b>&lt;img src=x&gt;.png</b>" in app.status.value and "<img" not in app.status.value


def test_a_slider_move_answers_well_within_100_ms(app):
    # the issue asks ~100 ms on a CPU; the decoder and a 6 kB PNG take a few ms (slider_latency's docstring)
    times = E.slider_latency(app, moves=48)
    assert np.median(times) < 100, times
    assert all(s.value == 0 for s in app.sliders)


def test_image_png_shows_each_pixel_as_a_sharp_square():
    pixels = np.random.default_rng(0).random((28, 28), dtype=np.float32)
    shown = decoded(F.image_png(pixels, scale=6))
    assert shown.shape == (168, 168) and shown.dtype == np.uint8
    np.testing.assert_array_equal(shown, np.kron(np.round(pixels * 255).astype(np.uint8), np.ones((6, 6), np.uint8)))
