"""The study's notebooks, executed the way the Makefile runs them and the way a newcomer does.

`make PROFILE=tiny STUDY_DIR=<tmp> reproduce` runs once per module (about two minutes on two CPU
cores: every notebook of the study, 10_explore aside, four 1-epoch training runs on 64 images, the HTML
reports); the tests check what it wrote. A newcomer's run: a fresh clone, each notebook executed from its notebooks/
folder with the committed defaults (02-05 and 10 at profile tiny, their one parameter, to fit CI), must
succeed and leave `git status` clean. Also: the committed notebooks are clean, parameterised with
plain literals and carry only the metadata JupyterLab's save hook keeps, and a bad parameter makes
papermill and make fail loudly, leaving no finished target.

Run only these with `python -m pytest -m notebooks`, or skip them with `-m "not notebooks"`.
"""

from __future__ import annotations

import ast
import concurrent.futures
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from capslib.study import paper
from capslib.study import summaries as S
from PIL import Image

from capslib.core.runs import read_misses
from capslib.study.lab import NOTEBOOK_METADATA, keep_committed_metadata
from capslib.study.profiles import GENERATED_PROFILES, PROFILES
from capslib.study.studies import study_runs

pytestmark = pytest.mark.notebooks

REPO = Path(__file__).resolve().parent.parent
SOURCES = sorted((REPO / "notebooks").glob("*.ipynb"))


def tiny_run(study: str, **fields) -> str:
    """The name of the run of `study` (its seed 1) with these fields at the tiny profile (core/layout.py)."""
    (config,) = [c for c in study_runs(study, [1], "runs", "results", "tiny")
                 if all(getattr(c, k) == v for k, v in fields.items())]
    return Path(config.log_dir).name


TABLE1_RUNS = [Path(c.log_dir).name for c in study_runs("table1", [1], "runs", "results", "tiny")]
ROUTING3 = dict(dataset="mnist", model="capsnet", routing_iterations=3, reconstruction=True)
ROUTING1_NORECON = dict(dataset="mnist", model="capsnet", routing_iterations=1, reconstruction=False)


def makefile_words(variable: str) -> list[str]:
    """A Makefile variable's words, as make expands it (`make -pn` prints its database, running nothing)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    database = subprocess.run(["make", "-pn", "docs"], cwd=REPO, env=env, capture_output=True, text=True).stdout
    (line,) = [line for line in database.splitlines() if line.startswith(f"{variable} := ")]
    return line.split(" := ", 1)[1].split()


REPORTED = makefile_words("REPORTED")  # the Makefile declares the reported notebooks; `make report` renders them
EXECUTED = REPORTED
FIGURES = {  # name -> exact size in pixels, where the layout fixes it
    "mnist_samples.png": None, "fashion-mnist_samples.png": None,
    "mnist_reconstructions.png": (1920, 780), "mnist_perturbations.png": (1990, 1296), "mnist_confusion.png": None,
    "mnist_routing.png": None, "mnist_coupling_entropy.png": None,
    "mnist_accuracy.png": (1350, 825), "mnist_accuracy_routing1.png": (1350, 825),
    "mnist_accuracy_routing3.png": (1350, 825), "mnist_loss.png": (1350, 825),
    "fashion-mnist_accuracy.png": (1350, 825), "fashion-mnist_loss.png": (1350, 825),
    "fashion-mnist_reconstructions.png": (1920, 780), "fashion-mnist_perturbations.png": (1990, 1296),
    "fashion-mnist_confusion.png": None, "ablation.png": None, "official_accuracy.png": None,
    "multimnist_accuracy.png": None, "multimnist_reconstructions.png": None, "affine_accuracy.png": None,
    "affine_samples.png": None,
}
RUN_COLUMNS, SUMMARY_COLUMNS = S.RUN_COLUMNS, S.SUMMARY_COLUMNS
CONFIGURATIONS = {("mnist", configuration) for configuration in paper.TABLE1} | {("fashion-mnist", "routing 3, reconstruction")}
ROUTING_MESSAGE = "routing_iterations must be an integer in [1, 10], got 0"


# ---------------------------------------------------------------------------------------------
# helpers


def start_command(command: list[str], log: Path, cwd: Path = REPO) -> subprocess.Popen:
    """Start `command` in `cwd` (the repository root) in its own process group (so that it can be
    killed whole), its stdout and stderr together into the file `log` (a pipe that nobody reads while
    it runs in the background would fill and stop it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    # two processes at a time (make -j2, two newcomer lanes) on CI's two cores: one thread each, not two
    # each that contend (a third faster on tiny runs)
    env.setdefault("OMP_NUM_THREADS", "1")
    with open(log, "w") as output:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True)


def finish_command(process: subprocess.Popen, log: Path, timeout: float) -> tuple[int, str]:
    """Wait for a started command (killing its process group after `timeout` s, and failing the test);
    return its exit status and its output."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"{' '.join(map(str, process.args))} ran past {timeout} s:\n{log.read_text()[-5000:]}")
    return process.returncode, log.read_text()


def run_command(command: list[str], timeout: float, cwd: Path = REPO) -> tuple[int, str]:
    """Run `command` in `cwd`: its exit status and its stdout and stderr together."""
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "output.log"
        return finish_command(start_command(command, log, cwd), log, timeout)


def make_command(study_dir: Path, *targets: str, jobs: int = 1) -> list[str]:
    return ["make", f"-j{jobs}", f"PYTHON={sys.executable}", "PROFILE=tiny", f"STUDY_DIR={study_dir}", *targets]


def make(study_dir: Path, *targets: str, timeout: float = 400, jobs: int = 1) -> tuple[int, str]:
    return run_command(make_command(study_dir, *targets, jobs=jobs), timeout)


def read_notebook(path: Path) -> dict:
    return json.loads(path.read_text())


def code_cells(notebook: dict) -> list[dict]:
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def parameter_names(notebook: dict) -> set[str]:
    (cell,) = [c for c in notebook["cells"] if "parameters" in tags(c)]
    return {node.targets[0].id for node in ast.parse(source(cell)).body}


EMBEDDED_PNG = re.compile(r'<img[^>]*\ssrc="data:image/png;base64,')


def body(page: str) -> str:
    """The page after its <head> (whose CSS names every class)."""
    return page.split("<body", 1)[1]


def visible_text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", body(page)))


# ---------------------------------------------------------------------------------------------
# the tiny study (module-scoped)


# conftest.py starts the tiny study as soon as the tests that need it are collected, so that it runs
# beside the other tests (minutes of work, much of it one process at a time), and runs these tests last.
BACKGROUND: dict = {}


def start_tiny_study() -> None:
    """`make -j2 PROFILE=tiny reproduce` into a new temporary folder, in the background; two steps at
    a time, as on a 2-GPU machine: also a test that the steps' prerequisites are complete (a step
    that ran before what it reads would fail or miss rows). stop_tiny_study removes it all."""
    root = Path(tempfile.mkdtemp(prefix="capslib-tiny-study-"))
    study_dir, log = root / "study", root / "make.log"
    BACKGROUND.update(root=root, study_dir=study_dir, log=log,
                      process=start_command(make_command(study_dir, "reproduce", jobs=2), log))


def stop_tiny_study() -> None:
    process = BACKGROUND.get("process")
    if process is not None and process.poll() is None:  # pytest stopped early (-x, Ctrl-C)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    if "root" in BACKGROUND:
        shutil.rmtree(BACKGROUND["root"], ignore_errors=True)
    BACKGROUND.clear()


@pytest.fixture(scope="module", autouse=True)
def tiny_study_in_the_background(request):
    """Under xdist (conftest.py): start the tiny study as this file's first test starts, if a selected test
    reads it, so that it runs while this worker runs the file's other tests."""
    from conftest import STUDY_NEEDED

    if request.config.stash.get(STUDY_NEEDED, False) and not BACKGROUND:
        start_tiny_study()


@pytest.fixture(scope="module")
def study() -> Path:
    if not BACKGROUND:  # not started at collection (conftest.py): start it now
        start_tiny_study()
    code, output = finish_command(BACKGROUND["process"], BACKGROUND["log"], timeout=900)  # a guard against hangs
    assert code == 0, f"make reproduce failed with status {code}:\n{output[-8000:]}"
    return BACKGROUND["study_dir"]


@pytest.fixture(scope="module")
def results(study) -> Path:
    return study / "results"


@pytest.mark.parametrize("name", EXECUTED)
def test_executed_notebook_ran_every_cell_without_error(results, name):
    path = results / "notebooks" / f"{name}.ipynb"
    assert path.is_file(), f"{path} missing"
    notebook = read_notebook(path)
    errors = [o for cell in notebook["cells"] for o in cell.get("outputs", []) if o["output_type"] == "error"]
    assert errors == [], errors
    assert not notebook["metadata"]["papermill"].get("exception")
    assert all(cell["execution_count"] is not None for cell in code_cells(notebook))
    injected = [c for c in notebook["cells"] if "injected-parameters" in tags(c)]
    assert len(injected) == 1


def test_exactly_the_expected_notebooks_and_no_partial_ones(study, results):
    executed = {str(p.relative_to(results / "notebooks").with_suffix(""))
                for p in (results / "notebooks").rglob("*.ipynb")}
    assert executed == set(EXECUTED)
    assert list(study.rglob("*.partial.ipynb")) == []


def test_makefile_parameters_exist_in_the_notebooks(results):
    # papermill only warns about a parameter the notebook does not define: a typo in the Makefile
    # would silently run with the default
    names = {p.stem: parameter_names(read_notebook(p)) for p in SOURCES}
    for name in EXECUTED:
        executed = read_notebook(results / "notebooks" / f"{name}.ipynb")
        source_name = executed["metadata"]["papermill"]["input_path"]
        passed = set(executed["metadata"]["papermill"]["parameters"])
        assert passed, name
        assert passed <= names[Path(source_name).stem], (name, passed - names[Path(source_name).stem])


@pytest.mark.parametrize("run", TABLE1_RUNS)
def test_table1_runs_used_the_tiny_profile(study, results, run):
    info = json.loads((results / "table1" / run / "run.json").read_text())
    tiny = PROFILES["tiny"]
    config = info["config"]
    assert (config["epochs"], config["batch_size"], config["train_subset"], config["test_subset"]) == (
        tiny.epochs, tiny.batch_size, tiny.train_subset, tiny.test_subset) == (1, 32, 64, 100)
    assert info["status"] == "complete" and info["summary"]["epochs_done"] == 1
    assert (info["train_images"], info["test_images"]) == (64, 100)
    command = info["sessions"][-1]["command"]  # the provenance names the command, as it runs
    assert "capslib sweep table1 --profile tiny" in command and "--device cpu" in command
    assert pd.read_csv(results / "table1" / run / "metrics.csv").epoch.tolist() == [1]
    assert (study / "runs" / "table1" / run / "last.pt").is_file() and (study / "runs" / "table1" / run / "best.pt").is_file()


def test_every_figure_decodes(results):
    pngs = sorted(results.rglob("*.png"))
    assert set(FIGURES) <= {p.name for p in pngs if p.parent == results / "figures"}
    for path in pngs:
        with Image.open(path) as image:
            assert image.format == "PNG", path
            image.load()  # decode every pixel
            if FIGURES.get(path.name):
                assert image.size == FIGURES[path.name], path


def test_result_tables(results):
    everything = pd.read_csv(results / "tables" / "runs.csv")
    assert list(everything.columns) == RUN_COLUMNS
    # table1, then `make validated` (every configuration with the split), the official runs with the split
    # (routing 3 + reconstruction from `make ablation`, the other rows from `make table1-official`) and on all
    # training images (official-60k)
    held_out = PROFILES["tiny"].train_subset // 6  # the official split (10,000 of 60,000) at the tiny scale
    assert set(zip(everything.recipe, everything.validation_images)) == {
        ("paper", 0), ("paper", held_out), ("official", held_out), ("official", 0)}
    validated = everything[everything.validation_images > 0]
    assert validated.selected_test_error.notna().all() and (validated.recipe == "paper").sum() == 6
    assert set(validated[validated.recipe == "official"].configuration) == set(paper.TABLE1)
    assert (validated.recipe == "official").sum() == 6  # five MNIST rows and Fashion-MNIST
    assert len(everything[(everything.recipe == "official") & (everything.validation_images == 0)]) == 1
    runs = everything[(everything.validation_images == 0) & (everything.recipe == "paper")]
    assert runs.selected_test_error.isna().all()
    assert len(runs) == len(TABLE1_RUNS)
    assert set(zip(runs.dataset, runs.configuration)) == CONFIGURATIONS
    assert (runs.seed == 1).all() and (runs.epochs == 1).all()
    for row in runs.itertuples():  # the final error is the last epoch's, from the run's own log
        metrics = pd.read_csv(results / "table1" / Path(row.run).name / "metrics.csv")
        assert row.final_test_error == pytest.approx(100 * (1 - metrics.test_accuracy.iloc[-1]), abs=1e-3)
    assert {Path(r).name for r in runs.run} == set(TABLE1_RUNS)
    summary = pd.read_csv(results / "tables" / "summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    summary = summary[(summary.validation_images == 0) & (summary.recipe == "paper")]
    assert len(summary) == len(CONFIGURATIONS)
    assert set(zip(summary.dataset, summary.configuration)) == CONFIGURATIONS
    assert (summary.runs == 1).all()
    assert summary.final_error_std.isna().all()  # one seed each: no standard deviation
    for table in ("runs", "summary"):
        assert (results / "tables" / f"{table}.md").read_text().startswith("# ")
    balance = pd.read_csv(results / "tables" / "mnist_class_balance.csv")
    assert (balance.train.sum(), balance.test.sum()) == (60000, 10000)


@pytest.mark.parametrize("name", REPORTED)
def test_html_reports_without_and_with_code(results, name):
    # results/html/ holds the reports without code (committed), results/html/with-code/ the full ones
    code_cell_count = len(code_cells(read_notebook(results / "notebooks" / f"{name}.ipynb")))
    no_code = (results / "html" / f"{name}.html").read_text()
    with_code = (results / "html" / "with-code" / f"{name}.html").read_text()
    # one code editor and one 'In [n]:' prompt per code cell with the code, none without
    assert with_code.count('class="jp-CodeMirrorEditor') == code_cell_count
    assert no_code.count('class="jp-CodeMirrorEditor') == 0
    assert body(with_code).count("jp-InputPrompt") >= code_cell_count
    assert "jp-InputPrompt" not in body(no_code)
    # the code's text likewise (every reported notebook starts its work with this call)
    assert "notebook.start(results_dir)" in visible_text(with_code)
    assert "notebook.start(results_dir)" not in visible_text(no_code)
    assert "from capslib.study import" not in visible_text(no_code)
    # the outputs are in both: the same embedded figures, the markdown text
    images = len(EMBEDDED_PNG.findall(with_code))
    assert images >= 1 and len(EMBEDDED_PNG.findall(no_code)) == images
    title = source(read_notebook(results / "notebooks" / f"{name}.ipynb")["cells"][0]).splitlines()[0].lstrip("# ")
    assert title in visible_text(no_code)


@pytest.mark.parametrize("name", EXECUTED)
def test_make_report_lightens_every_executed_notebook(results, name):
    # after rendering, the figures live in the reports (and results/figures/), not a third time in the notebook
    notebook = read_notebook(results / "notebooks" / f"{name}.ipynb")
    assert notebook["metadata"]["capslib"]["lightened"] is True
    outputs = [o for cell in code_cells(notebook) for o in cell["outputs"]]
    assert not [m for o in outputs for m in o.get("data", {}) if m.startswith("image/")]
    texts = ["".join(o.get("data", {}).get("text/plain", "")) for o in outputs]
    pointers = [text for text in texts if text.startswith("[figure")]
    # a report's figures point to it
    assert pointers and all(str(results / "html" / f"{name}.html") in p for p in pointers)


# ---------------------------------------------------------------------------------------------
# the committed notebooks


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_committed_notebook_is_clean(path):
    notebook = read_notebook(path)
    for cell in code_cells(notebook):
        assert cell.get("outputs") == [], f"{path.name}: a cell has outputs"
        assert cell.get("execution_count") is None, f"{path.name}: a cell has an execution count"
    assert "papermill" not in notebook["metadata"]
    assert not any("injected-parameters" in tags(c) for c in notebook["cells"])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_committed_notebook_metadata_does_not_drift(path):
    # only what JupyterLab writes when it saves through make lab's hook: opening one changes nothing
    notebook = read_notebook(path)
    assert notebook["metadata"] == NOTEBOOK_METADATA, f"{path.name}: notebook metadata drifted"
    assert (notebook["nbformat"], notebook["nbformat_minor"]) == (4, 5)  # Lab would add cell ids to 4.4
    ids = [cell.get("id") for cell in notebook["cells"]]
    assert all(isinstance(i, str) and re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", i) for i in ids) and len(set(ids)) == len(ids)
    for cell in notebook["cells"]:
        assert set(cell["metadata"]) <= {"tags"}, f"{path.name}: cell {cell['id']} has metadata {cell['metadata']}"
        assert set(cell) <= {"id", "cell_type", "metadata", "source", "outputs", "execution_count"}
    assert path.read_text().endswith("}\n")  # as nbformat writes it


def test_lab_save_hook_restores_the_committed_metadata():
    # what JupyterLab sends when it saves a notebook it has opened (its kernel filled these in)
    content = {"cells": [], "nbformat": 4, "nbformat_minor": 5, "metadata": {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                          "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
                          "pygments_lexer": "ipython3", "version": "3.11.7"},
        "widgets": {"state": {}}}}
    keep_committed_metadata(model={"type": "notebook", "content": content}, path="notebooks/x.ipynb")
    assert content["metadata"] == {**NOTEBOOK_METADATA, "widgets": {"state": {}}}
    other = {"kernelspec": {"name": "ir", "display_name": "R"}, "language_info": {"name": "R", "version": "4"}}
    keep_committed_metadata(model={"type": "notebook", "content": {"metadata": dict(other)}}, path="r.ipynb")
    keep_committed_metadata(model={"type": "file", "content": "text"}, path="a.txt")  # not a notebook: untouched


def test_make_lab_allows_root_reaches_results_and_keeps_metadata():
    code, output = run_command(["make", "-n", "lab", f"PYTHON={sys.executable}"], timeout=30)
    assert code == 0
    assert "--allow-root" in output and "--ServerApp.root_dir=." in output
    assert "/lab/tree/notebooks" in output
    assert "--ContentsManager.pre_save_hook=capslib.study.lab.keep_committed_metadata" in output


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_committed_notebook_has_one_parameters_cell_of_literals(path):
    notebook = read_notebook(path)
    cells = [c for c in notebook["cells"] if "parameters" in tags(c)]
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells tagged 'parameters'"
    (cell,) = cells
    assert cell["cell_type"] == "code"
    statements = ast.parse(source(cell)).body
    assert statements
    for statement in statements:
        assert isinstance(statement, ast.Assign), ast.dump(statement)
        assert len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name), ast.dump(statement)
        ast.literal_eval(statement.value)  # raises ValueError unless a literal


def test_ten_committed_notebooks():
    assert [p.name for p in SOURCES] == ["01_data.ipynb", "02_train.ipynb", "03_reconstruct.ipynb",
                                         "04_perturb.ipynb", "05_fashion.ipynb", "06_summary.ipynb",
                                         "07_ablation.ipynb", "08_multimnist.ipynb", "09_affine.ipynb",
                                         "10_explore.ipynb"]


def test_other_experiments_tables_and_runs(study, results):
    # make multimnist / affine: a sweep of both models at the tiny generated size, then their notebooks
    tiny = GENERATED_PROFILES["tiny"]
    for name, dataset, routings in (("multimnist", "multimnist", [3]), ("affine", "mnist-expanded", [1, 3])):
        runs = sorted(p.name for p in (results / name).iterdir() if p.is_dir())
        assert runs == sorted(Path(c.log_dir).name for c in study_runs(name, [1], "runs", "results", "tiny"))
        assert len(runs) == 1 + len(routings)  # the baseline and a CapsNet per routing
        for run in runs:
            config = json.loads((results / name / run / "run.json").read_text())["config"]
            assert (config["epochs"], config["batch_size"], config["train_subset"], config["test_subset"]) == (
                tiny.epochs, tiny.batch_size, tiny.train_subset, tiny.test_subset)
            assert (study / "runs" / name / run / "last.pt").is_file()
            assert read_misses(results / name / run) is not None  # which test examples it got wrong
    multimnist = pd.read_csv(results / "tables" / "multimnist.csv")
    assert set(multimnist.configuration) == {"routing 3, reconstruction", "baseline CNN"}
    assert set(multimnist.paper_error) == {5.2, 8.1}
    metrics = pd.read_csv(results / "multimnist" / tiny_run("multimnist", model="capsnet") / "metrics.csv")
    assert metrics.test_accuracy.notna().all() and metrics.affine_accuracy.isna().all()
    per_run = pd.read_csv(results / "tables" / "multimnist_runs.csv")
    assert len(per_run) == 2 and per_run.test_error_se.notna().all() and per_run.paper_scale_error.isna().all()
    affine = pd.read_csv(results / "tables" / "affine.csv")
    assert len(affine) == 3 and affine.final_affine_accuracy.between(0, 100).all()
    summary = pd.read_csv(results / "tables" / "affine_summary.csv").set_index("configuration")
    assert summary.loc["routing 1, reconstruction", "affine_vs"] == "routing 3, reconstruction"
    assert summary.loc["routing 3, reconstruction", "affine_vs"] == "baseline CNN"
    metrics = pd.read_csv(results / "affine" / tiny_run("affine", model="capsnet", routing_iterations=3) / "metrics.csv")
    assert metrics.affine_accuracy.notna().all() and metrics.validation_accuracy.notna().all()


def test_ablation_tables(results):
    per_run = pd.read_csv(results / "tables" / "ablation.csv")
    assert list(per_run.columns) == S.ABLATION_RUN_COLUMNS
    # both bases and each of the six components switched, one seed each in the tiny profile
    assert len(per_run) == 14 and per_run.variant.nunique() == 14
    assert per_run.selected_test_error.notna().all()
    summary = pd.read_csv(results / "tables" / "ablation_summary.csv")
    assert list(summary.columns) == S.ABLATION_SUMMARY_COLUMNS and len(summary) == 14
    # the two hypotheses beside the ablation, each its base and the runs that test it
    for name, runs in (("official_60k", "official-60k"), ("precision", "precision")):
        comparison = pd.read_csv(results / "tables" / f"{name}.csv")
        assert list(comparison.columns) == S.COMPARISON_COLUMNS and list(comparison.runs) == [1, 1]
        (logged,) = [p for p in (results / runs).iterdir() if p.is_dir()]
        final = pd.read_csv(logged / "metrics.csv").test_error.iloc[-1]
        assert comparison.final_mean.iloc[1] == pytest.approx(final, abs=1e-3)
    assert pd.read_csv(results / "tables" / "official_60k.csv").selected_mean.iloc[1:].isna().all()  # no split
    # precision image by image: its run against its bf16 partner of the same seed, from their records
    (paired,) = pd.read_csv(results / "tables" / "precision_paired.csv").to_dict("records")
    fp32, bf16 = (pd.read_csv(results / s / tiny_run(s) / "metrics.csv").test_error.iloc[-1]
                  for s in ("precision", "precision-bf16"))
    assert str(paired["seeds"]) == "1" and paired["difference"] == pytest.approx(fp32 - bf16, abs=1e-6)
    assert paired["difference_low"] <= paired["difference"] <= paired["difference_high"]
    hard = pd.read_csv(results / "tables" / "precision_paired_hard_core.csv")
    assert list(hard.configuration) == ["bf16 + TF32", "strict float32"]


# ---------------------------------------------------------------------------------------------
# a bad parameter fails loudly


def test_papermill_with_routing_0_fails(tmp_path):
    out = tmp_path / "02_train_routing0.ipynb"
    code, output = run_command([
        sys.executable, "-m", "papermill", "--cwd", ".", "--no-progress-bar", "-k", "python3",
        "notebooks/02_train.ipynb", str(out), "-p", "routing_iterations", "0", "-p", "profile", "tiny",
        "-p", "progress_bar", "False", "-y", "options: {device: cpu}",
        "-p", "runs_dir", str(tmp_path / "runs"), "-p", "results_dir", str(tmp_path / "results")], timeout=180)
    assert code != 0
    assert ROUTING_MESSAGE in output
    # papermill keeps the notebook, with the error where it stopped; nothing was trained
    notebook = read_notebook(out)
    assert notebook["metadata"]["papermill"]["exception"]
    errors = [o for cell in notebook["cells"] for o in cell.get("outputs", []) if o["output_type"] == "error"]
    assert len(errors) == 1 and ROUTING_MESSAGE in errors[0]["evalue"]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def test_a_failed_notebook_step_leaves_no_target(tmp_path):
    # a step whose notebook fails keeps its .partial notebook (where it stopped), never the target: make
    # would skip a target next time
    study_dir = tmp_path / "study"
    notebooks = study_dir / "results" / "notebooks"
    code, output = make(study_dir, str(notebooks / "01_data_cifar.ipynb"), timeout=180)
    assert code != 0
    assert "unknown dataset 'cifar'" in output
    assert [p.name for p in notebooks.iterdir()] == ["01_data_cifar.partial.ipynb"]


def test_study_dir_with_a_space_is_one_make_error(tmp_path):
    code, output = run_command(["make", "-n", "data", f"PYTHON={sys.executable}", f"STUDY_DIR={tmp_path / 'my study'}"],
                               timeout=30)
    assert code == 2
    lines = output.strip().splitlines()
    assert len(lines) == 1 and "STUDY_DIR" in lines[0] and "my study" in lines[0], output
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# a newcomer: a fresh clone, every notebook run from notebooks/ with its defaults

NEWCOMER_ORDER = [p.stem for p in SOURCES]  # every committed notebook (test_ten_committed_notebooks lists them)
NEWCOMER_LANES = [["01_data", "02_train", "03_reconstruct", "04_perturb", "06_summary", "10_explore"],
                  ["05_fashion", "07_ablation", "08_multimnist", "09_affine"]]


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout


def tree_snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory) -> Path:
    """A clone of this repository, with the working tree's changes to tracked files committed on top
    (so that a test run before a commit tests what is there), its git status clean."""
    clone = tmp_path_factory.mktemp("newcomer") / "capslib"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    changed = [name for name in git(REPO, "diff", "--name-only", "HEAD").splitlines() if name]
    for name in changed:
        source, target = REPO / name, clone / name
        if source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        else:
            target.unlink(missing_ok=True)
    if changed:
        git(clone, "add", "-A")
        git(clone, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-q", "-m", "working tree")
    assert git(clone, "status", "--porcelain") == ""
    return clone


@pytest.fixture(scope="module")
def newcomer(fresh_clone, tmp_path_factory) -> dict:
    """Each notebook executed in order from the clone's notebooks/ folder, as a newcomer would: no
    parameters, except profile tiny for the notebooks that train (the CI budget; their true
    defaults are timed in the README). The kernel imports capslib from this checkout, not the
    clone (as from a second clone of an editable install): paths must still resolve in the clone."""
    out_dir = tmp_path_factory.mktemp("newcomer_out")
    watched = {folder: tree_snapshot(REPO / folder) for folder in ("scratch", "runs", "results")
               if (REPO / folder).is_dir()}
    status = git(REPO, "status", "--porcelain")
    executed = {}

    def run_in_order(names):
        for name in names:
            tiny = ["-p", "profile", "tiny"] if "profile" in parameter_names(read_notebook(REPO / "notebooks" / f"{name}.ipynb")) else []
            out = out_dir / f"{name}.ipynb"
            code, output = run_command([sys.executable, "-m", "papermill", "--no-progress-bar", "-k", "python3",
                                        f"{name}.ipynb", str(out), *tiny], timeout=300, cwd=fresh_clone / "notebooks")
            executed[name] = (code, output, out)

    # two lanes at once (CI has two cores), each in a newcomer's order; 03, 04 and 10 use the run 02 trains
    # (without it, each would train the same run at once), so they share its lane
    with concurrent.futures.ThreadPoolExecutor(2) as lanes:
        list(lanes.map(run_in_order, NEWCOMER_LANES))
    return {"clone": fresh_clone, "executed": executed, "repo_status": (status, git(REPO, "status", "--porcelain")),
            "repo_trees": (watched, {folder: tree_snapshot(REPO / folder) for folder in watched})}


def output_text(notebook: dict) -> str:
    texts = []
    for cell in code_cells(notebook):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            texts.append("".join(output.get("text", "")) + "".join(data.get("text/markdown", "")))
    return "\n".join(texts)


@pytest.mark.parametrize("name", NEWCOMER_ORDER)
def test_newcomer_runs_every_notebook_with_its_defaults(newcomer, name):
    code, output, out = newcomer["executed"][name]
    assert code == 0, f"{name} failed:\n{output[-6000:]}"
    parameters = read_notebook(out)["metadata"]["papermill"]["parameters"]
    assert set(parameters) <= {"profile"}


def test_newcomer_leaves_every_tracked_file_unchanged(newcomer):
    clone = newcomer["clone"]
    assert git(clone, "status", "--porcelain") == ""
    # ... and writes into the clone's ignored scratch folder
    figures = {p.name for p in (clone / "scratch" / "results" / "figures").iterdir()}
    assert {"mnist_samples.png", "mnist_reconstructions.png", "mnist_perturbations.png", "mnist_routing.png",
            "mnist_coupling_entropy.png", "fashion-mnist_reconstructions.png", "mnist_accuracy.png"} <= figures
    assert sorted(p.name for p in (clone / "scratch" / "runs").iterdir()) == ["affine", "multimnist", "table1"]
    assert sorted(p.name for p in (clone / "scratch" / "runs" / "table1").iterdir()) == sorted(
        [tiny_run("table1", dataset="fashion-mnist"), tiny_run("table1", **ROUTING1_NORECON), tiny_run("table1", **ROUTING3)])
    assert {"ablation.png", "official_accuracy.png"} <= figures  # 07 reads the committed logs, writes here


def test_newcomer_writes_nothing_into_the_checkout_capslib_comes_from(newcomer):
    before, after = newcomer["repo_status"]
    assert before == after
    trees_before, trees_after = newcomer["repo_trees"]
    assert trees_before == trees_after


def test_newcomer_notebooks_say_where_their_model_comes_from(newcomer):
    text = {name: output_text(read_notebook(out)) for name, (_, _, out) in newcomer["executed"].items()}
    routing3, routing1 = tiny_run("table1", **ROUTING3), tiny_run("table1", **ROUTING1_NORECON)
    assert "profile **tiny**" in text["02_train"] and f"scratch/runs/table1/{routing3}" in text["02_train"]
    # 03 uses the run 02 trained; 04 and 05 find none of theirs and train a short one, saying so
    assert f"Run **{routing3}** (the lowest final test error of 1 complete run" in text["03_reconstruct"]
    assert "Training a short one now" not in text["03_reconstruct"]
    assert "Training a short one now" in text["04_perturb"] and routing1 in text["04_perturb"]
    assert "Training a short one now" in text["05_fashion"]
    assert f"Run **{routing3}** (the lowest final test error" in text["10_explore"]
    assert "Training a short one now" not in text["10_explore"]


def test_newcomer_explorer_is_a_static_report_too(newcomer):
    # executed without a browser: the widgets (their state saved for a page that renders them), then the
    # chosen image drawn as figures: its capsule lengths, its perturbation grid, its couplings
    notebook = read_notebook(newcomer["executed"]["10_explore"][2])
    outputs = [o for cell in code_cells(notebook) for o in cell["outputs"]]
    assert sum("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs) == 1
    assert "application/vnd.jupyter.widget-state+json" in notebook["metadata"]["widgets"]
    (figures,) = [cell for cell in code_cells(notebook) if cell["id"] == "figures"]
    assert [bool(o["data"].get("image/png")) for o in figures["outputs"]] == [True, True, True]


def test_newcomer_summary_reproduces_the_committed_table(newcomer):
    # 06 reads the committed run logs by default and writes its tables to scratch: the same numbers
    clone = newcomer["clone"]
    ours = pd.read_csv(clone / "scratch" / "results" / "tables" / "summary.csv")
    committed = pd.read_csv(clone / "results" / "tables" / "summary.csv")
    pd.testing.assert_frame_equal(ours, committed)
    text = output_text(read_notebook(newcomer["executed"]["06_summary"][2]))
    assert "| MNIST | routing 3, reconstruction |" in text
    assert not re.search(r"\bnan\b|\bNone\b", text, re.IGNORECASE)


def test_newcomer_lanes_hold_every_notebook_once_in_order():
    assert sorted(sum(NEWCOMER_LANES, [])) == NEWCOMER_ORDER
    assert all(lane == sorted(lane) for lane in NEWCOMER_LANES)
