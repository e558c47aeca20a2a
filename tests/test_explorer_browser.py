"""The explorer used as a person uses it: `make explore` starts JupyterLab on a copy of 10_explore (in a
temporary folder: nothing in the repository changes), headless Chromium opens it, Run › Run All Cells, then
a slider moved with the keyboard, the routing switched, an image uploaded, each checked on the page
(tools/browser/explorer.py drives the browser).

Skipped, with the reason, where Debian's chromium and chromium-driver are not installed; on CI (CI=true),
whose .ci/run installs them with tools/browser/install.sh, a missing browser fails instead.
Run only these with `python -m pytest -m browser`.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools" / "browser"))
import explorer as browser  # noqa: E402  (tools/browser/explorer.py)

pytestmark = pytest.mark.browser
RIGHT, HOME, END = "\ue014", "\ue011", "\ue010"  # WebDriver's keys


def train_tiny_run(parameters: dict) -> None:
    """The tiny run the notebook will find (the same call as the notebook's: notebook.trained_run)."""
    from capslib.study import notebook

    notebook.trained_run("table1", parameters["runs_dir"], parameters["results_dir"], "tiny", "cpu", dataset="mnist",
                         routing_iterations=3, reconstruction=True)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    reason = browser.unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs the browser test: {reason}")
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("explorer")
    parameters = {"runs_dir": str(folder / "runs"), "results_dir": str(folder / "results"), "profile": "tiny",
                  "device": "cpu", "image_index": 0}
    with concurrent.futures.ThreadPoolExecutor(1) as background:
        trained = background.submit(train_tiny_run, parameters)  # while JupyterLab starts
        with browser.lab(folder, parameters) as url:
            trained.result()
            with browser.chromium(folder / "chromium") as driver:
                page = browser.ExplorerPage(driver)
                page.open_and_run_all(url)
                yield page


def width(png: bytes) -> int:
    with Image.open(io.BytesIO(png)) as image:
        return image.width


def test_run_all_shows_the_explorer_of_the_logged_run(page):
    assert page.status().startswith("test image 0 · predicted ")
    assert "(the model was trained with 3)" in page.status()
    assert page.image_bytes("img.capslib-input").startswith(b"\x89PNG")
    assert len(page.driver.find_elements("css selector", ".capslib-dimension")) == 16
    assert [page.slider_readout(d) for d in (0, 15)] == ["+0.00", "+0.00"]


def test_a_slider_moved_with_the_keyboard_changes_the_reconstruction(page):
    before = page.image_bytes("img.capslib-reconstruction")
    page.press_on_slider(0, RIGHT, times=5)  # five steps of 0.01
    page.wait_for_change("img.capslib-reconstruction", before)
    page.wait(lambda d: page.slider_readout(0) == "+0.05", 10, f"dimension 1 reads {page.slider_readout(0)}")
    # from a key press to the new image in the page, kernel and websocket both ways included: End and Home
    # (+0.25, −0.25) so that each press changes the image even of the untrained tiny model
    latencies = [page.keypress_latency(1, END if k % 2 == 0 else HOME) for k in range(6)]
    print(f"key press → new reconstruction in the browser: {', '.join(f'{t:.0f}' for t in latencies)} ms")
    assert statistics.median(latencies) < 500, latencies  # ~30-60 ms on a loaded 2-core CPU


def test_the_routing_switch_changes_the_couplings(page):
    three = page.image_bytes("img.capslib-couplings")
    page.choose_routing(1)
    one = page.wait_for_change("img.capslib-couplings", three)
    assert "routed 1×" in page.status()
    assert width(one) < width(three)  # one iteration's panel, not three
    page.choose_routing(3)
    assert page.wait_for_change("img.capslib-couplings", one) == three  # the same routing, the same picture
    assert "routed 3×" in page.status()


def test_an_uploaded_image_is_explored(page, tmp_path, mnist_test):
    path = tmp_path / "my digit.png"
    Image.fromarray(np.round(mnist_test[0][1, 0].numpy() * 255).astype(np.uint8)).save(path)
    before = page.image_bytes("img.capslib-input")
    page.upload(path)
    page.wait(lambda d: page.status().startswith("my digit.png · predicted"), 30, f"status: {page.status()}")
    assert page.wait_for_change("img.capslib-input", before) != before
