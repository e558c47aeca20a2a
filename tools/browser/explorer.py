"""The explorer (notebooks/10_explore.ipynb) in a real browser, used as a person uses it: `make explore`
starts JupyterLab on a copy of the notebook, Debian's Chromium opens it (driven by Selenium), runs every
cell from the Run menu, moves a slider with the keyboard, switches the routing.
tests/test_explorer_browser.py uses this; run as a script it takes the screenshot of docs/:

    python tools/browser/explorer.py docs/explorer.png --runs-dir scratch/runs --results-dir scratch/results

(with a logged run in those folders, e.g. from `make quick` or 02_train; else the notebook trains one).

Selenium, not Playwright: it drives the ChromeDriver that Debian builds from the same source as its
Chromium (tools/browser/install.sh installs both), so the two always agree, and the Python package is all
there is to install; Playwright's Python package carries a Node.js driver of its own and is tested against
its own Chromium builds. Selenium is given the driver's path, so Selenium Manager never runs (SE_OFFLINE too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = "notebooks/10_explore.ipynb"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# As root in a container, on a machine whose network reaches nothing: no sandbox, no GPU, and none of the
# background connections (updates, sync, QUIC) that the closed network would refuse.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


def unavailable() -> str | None:
    """Why the browser machinery cannot run here, or None if it can."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).is_file()]
    if missing:
        return f"{' and '.join(missing)} not installed: run tools/browser/install.sh (Debian, as root)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed: pip install -e '.[dev]'"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def lab(folder: Path, parameters: dict, timeout: float = 120):
    """`make explore` on a copy of the explorer notebook (its parameters set to `parameters`) in `folder`,
    on a free localhost port with a token: yields the address to open. Jupyter's settings, workspaces and
    runtime files stay in `folder` too; the server is stopped (its process group) on the way out."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    (folder / "notebooks").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Makefile", folder / "Makefile")
    notebook = parameterize_notebook(load_notebook_node(str(REPO / NOTEBOOK)), parameters)  # as papermill does
    nbformat.write(notebook, folder / NOTEBOOK)
    # A fresh JupyterLab asks whether to fetch Jupyter's news (a toast over the page) and which kernel to start
    # (a dialog, whose answer a person would tick as 'always'): answered in its user settings
    for plugin, answers in (("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False}),
                            ("notebook-extension/tracker", {"autoStartDefaultKernel": True})):
        path = folder / "jupyter" / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(answers))
    port, token = free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    env.update(JUPYTER_CONFIG_DIR=str(folder / "jupyter" / "config"), JUPYTER_RUNTIME_DIR=str(folder / "jupyter" / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(folder / "jupyter" / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(folder / "jupyter" / "workspaces"), IPYTHONDIR=str(folder / "ipython"))
    options = (f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} --ServerApp.port_retries=0 "
               f"--IdentityProvider.token={token} --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate")
    log = open(folder / "lab.log", "w")
    process = subprocess.Popen(["make", "explore", f"PYTHON={sys.executable}", f"LAB_OPTIONS={options}"], cwd=folder,
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"make explore exited with status {process.returncode}:\n{(folder / 'lab.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not answer in {timeout} s:\n{(folder / 'lab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield f"{base}/?token={token}"  # the server's default URL: the one `make explore` opens
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@contextlib.contextmanager
def chromium(profile: Path, width: int = 1400, height: int = 1600):
    """Headless Debian Chromium with a fresh profile in `profile`, driven by Debian's ChromeDriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager downloads nothing (it is not called: the paths are given)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def kernel_connected(base: str, token: str) -> bool:
    """Whether the Jupyter server at `base` has an idle kernel that a page is connected to."""
    try:
        with urllib.request.urlopen(f"{base}/api/kernels?token={token}", timeout=5) as answer:
            kernels = json.load(answer)
    except OSError:  # jupyter_server answers 500 while a kernel is half started: not yet
        return False
    return any(k["execution_state"] == "idle" and k["connections"] > 0 for k in kernels)


class ExplorerPage:
    """The explorer notebook open in JupyterLab, seen through its widgets' stable class names
    (capslib-*, set in capslib/study/explore.py)."""

    def __init__(self, driver):
        self.driver = driver

    def wait(self, condition, timeout: float, message: str):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(condition, message)

    def element(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def open_and_run_all(self, url: str, timeout: float = 240) -> None:
        """Open `url`, then Run › Run All Cells, as a person does, and wait until the explorer shows."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as EC

        self.driver.get(url)
        # Run All before the page has connected to the kernel runs nothing: wait for the server to see the page
        # connected to an idle kernel, then for the page to say so (Lab's execution indicator)
        base, token = url.split("/?token=")
        self.wait(lambda d: kernel_connected(base, token), timeout / 2, "the notebook's kernel never started")
        self.wait(EC.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']")),
                  timeout / 2, "the notebook's kernel never became idle")
        self.wait(EC.element_to_be_clickable((By.XPATH, "//li[contains(@class,'lm-MenuBar-item')]//*[text()='Run']")),
                  30, "no Run menu").click()
        self.wait(EC.element_to_be_clickable((By.XPATH, "//li[contains(@class,'lm-Menu-item')]//*[text()='Run All Cells']")),
                  30, "no Run All Cells in the Run menu").click()
        self.wait(lambda d: self.image_bytes("img.capslib-reconstruction") and self.image_bytes("img.capslib-couplings"),
                  timeout, "the explorer's reconstruction and couplings never showed")
        # every cell run (a prompt [n], none [*] or [ ]): until then a slider's message waits behind the cells
        self.wait(lambda d: d.execute_script("""
            const prompts = Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputPrompt'), p => p.textContent);
            return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p));"""), timeout, "not every cell ran")

    def image_bytes(self, css: str) -> bytes | None:
        """The bytes of the image an <img> shows (ipywidgets gives it a blob: URL), or None if there is none."""
        data = self.driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const img = document.querySelector(arguments[0]);
            if (!img || !img.src) { done(null); return; }
            fetch(img.src).then(r => r.arrayBuffer()).then(b => done(Array.from(new Uint8Array(b))), () => done(null));
        """, css)
        return bytes(data) if data else None

    def wait_for_change(self, css: str, before: bytes, timeout: float = 30) -> bytes:
        self.wait(lambda d: (self.image_bytes(css) or before) != before, timeout, f"{css} did not change")
        return self.image_bytes(css)

    def slider_handle(self, dimension: int):
        return self.driver.find_elements("css selector", ".capslib-dimension .noUi-handle")[dimension]

    def slider_readout(self, dimension: int) -> str:
        return self.driver.find_elements("css selector", ".capslib-dimension .widget-readout")[dimension].text

    def press_on_slider(self, dimension: int, key: str, times: int = 1) -> None:
        handle = self.slider_handle(dimension)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].focus();", handle)
        for _ in range(times):
            handle.send_keys(key)

    def keypress_latency(self, dimension: int, key: str) -> float:
        """Milliseconds from a key press on a slider to the new reconstruction in the page (both times
        taken in the browser: the kernel's work and the websocket both ways, not the paint)."""
        handle = self.slider_handle(dimension)
        self.driver.execute_script("""
            const [handle, img] = arguments;
            window.capslibLatency = null;
            const start = {t: null};
            handle.addEventListener('keydown', () => { start.t = performance.now(); }, {once: true});
            new MutationObserver((changes, observer) => {
                if (start.t !== null) { window.capslibLatency = performance.now() - start.t; observer.disconnect(); }
            }).observe(img, {attributes: true, attributeFilter: ['src']});
        """, handle, self.element("img.capslib-reconstruction"))
        self.press_on_slider(dimension, key)
        return self.wait(lambda d: d.execute_script("return window.capslibLatency"), 30, "no new reconstruction")

    def choose_routing(self, iterations: int) -> None:
        from selenium.webdriver.common.by import By

        button = self.driver.find_element(By.XPATH, f"//*[contains(@class,'capslib-routing')]//button[normalize-space()='{iterations}']")
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
        button.click()

    def upload(self, path: Path) -> None:
        """Click the upload button and choose the file at `path` in the dialog it opens. ipywidgets' button opens
        the dialog through a file <input> that it never puts in the page: the click is caught on its way to that
        input, which is put in the page so that ChromeDriver can choose the file in it, as the dialog would."""
        button = self.element(".capslib-upload")
        self.driver.execute_script("""
            const click = HTMLInputElement.prototype.click;
            HTMLInputElement.prototype.click = function () {
                HTMLInputElement.prototype.click = click;
                this.classList.add('capslib-file-dialog');
                document.body.appendChild(this);
            };
            arguments[0].scrollIntoView({block: 'center'});
            arguments[0].click();
        """, button)
        self.element("input.capslib-file-dialog").send_keys(str(path))

    def status(self) -> str:
        return self.element(".capslib-status").text


def main() -> None:
    parser = argparse.ArgumentParser(description="Screenshot of the explorer in JupyterLab, in Debian's Chromium.")
    parser.add_argument("out", type=Path, help="the PNG to write (docs/explorer.png)")
    parser.add_argument("--runs-dir", type=Path, default=REPO / "scratch/runs")
    parser.add_argument("--results-dir", type=Path, default=REPO / "scratch/results")
    parser.add_argument("--profile", default="quick", help="the size of the run trained when none is logged")
    parser.add_argument("--image-index", type=int, default=0)
    parser.add_argument("--dimension", type=int, default=0, help="the slider moved before the screenshot (0-15)")
    args = parser.parse_args()
    reason = unavailable()
    if reason:
        sys.exit(f"explorer.py: {reason}")
    parameters = {"runs_dir": str(args.runs_dir.resolve()), "results_dir": str(args.results_dir.resolve()),
                  "profile": args.profile, "device": "cpu", "image_index": args.image_index}
    with tempfile.TemporaryDirectory(prefix="capslib-explorer-") as folder, lab(Path(folder), parameters) as url, \
            chromium(Path(folder) / "chromium") as driver:
        page = ExplorerPage(driver)
        page.open_and_run_all(url, timeout=600)
        before = page.image_bytes("img.capslib-reconstruction")
        page.press_on_slider(args.dimension, "\ue014", times=20)  # → 20 steps: +0.20
        page.wait_for_change("img.capslib-reconstruction", before)
        explorer = page.element(".capslib-explorer")
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", explorer)
        time.sleep(1)  # the last images decoded and painted
        args.out.write_bytes(explorer.screenshot_as_png)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
