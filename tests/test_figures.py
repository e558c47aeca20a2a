"""Tests of the figures (capslib.study.figures) and result tables (capslib.study.tables, capslib.core.runs,
capslib.study.bench.add_speedups): pure functions on hand-made inputs, no training.

Decoding uses a freshly initialised CapsNet (random weights, fixed seed): the perturbation tests
check which capsule is decoded, not what the decoder has learned.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from capslib.study import analysis as A
from capslib.study import figures as F
from capslib.study import summaries as S
from capslib.study import tables as T
from capslib.study.bench import add_speedups
from capslib.core.config import TrainConfig
from capslib.core.datasets import DATASETS
from capslib.core.model import CapsNet
from capslib.core.layout import run_name
from capslib.core.errors import RunFolderError
from capslib.core.runs import find_runs, write_metrics, write_run_info

MNIST_CLASSES = DATASETS["mnist"].classes


# ---------------------------------------------------------------------------------------------
# helpers


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # decode every pixel
        return image.size


def expected_pixels(figure) -> tuple[int, int]:
    width, height = figure.get_size_inches() * F.DPI
    return round(width), round(height)


def saved_size(figure, folder, name="figure.png") -> tuple[int, int]:
    path = F.save_figure(figure, folder / name)
    assert path == folder / name
    assert sorted(p.name for p in folder.iterdir()) == [name]  # the temporary file is gone
    return png_size(path)


def missing(value) -> bool:
    """None, or the NaN pandas turns it into in a numeric column."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------
# fake run folders


def history(errors: list[float], epoch_seconds: float = 2.0) -> list[dict]:
    rows = []
    for i, error in enumerate(errors):
        rows.append({"epoch": i + 1, "lr": 1e-3 * 0.95 ** i, "train_loss": 0.5 / (i + 1),
                     "train_margin_loss": 0.4 / (i + 1), "train_reconstruction_loss": 20.0,
                     "train_accuracy": 0.9, "test_loss": 0.6 / (i + 1), "test_margin_loss": 0.5 / (i + 1),
                     "test_reconstruction_loss": 21.0, "test_accuracy": 1 - error / 100, "test_error": error,
                     "epoch_seconds": epoch_seconds + i, "train_images_per_second": 1000.0,
                     "wall_seconds": 10.0 * (i + 1)})
    return rows


def make_run(root, errors, status="complete", metrics=True, command="python -m capslib train", test_images=10_000,
             **config):
    config = TrainConfig(**config)
    folder = root / run_name(config)
    info = {"config": config.to_dict(), "parameters": 1, "status": status, "test_images": test_images,
            "sessions": [{"command": "an earlier session", "commit": "old", "device": "old", "software": "old",
                          "date": "2020-01-01T00:00:00Z", "start_epoch": 0},
                         {"command": command, "commit": "abc123", "device": "1x GPU", "software": "torch",
                          "date": "2025-01-01T00:00:00Z", "start_epoch": 1}]}
    write_run_info(folder, info)
    if metrics:
        write_metrics(folder, history(errors))
    return folder


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Run folders as training leaves them: three complete MNIST runs, a Fashion-MNIST run, one
    still running (the lowest error, so that choosing it would show) and one just started."""
    root = tmp_path_factory.mktemp("study") / "runs"
    folders = {
        "r3s1": make_run(root, [0.50, 0.30], routing_iterations=3, reconstruction=True, seed=1,
                         command="python -m capslib train | tee log"),
        "r3s2": make_run(root, [0.28, 0.34], routing_iterations=3, reconstruction=True, seed=2),
        "r1s1": make_run(root, [0.45, 0.40], routing_iterations=1, reconstruction=False, seed=1),
        "fashion": make_run(root, [9.0, 8.0], dataset="fashion-mnist", seed=1),
        "running": make_run(root, [0.10], status="running", routing_iterations=3, reconstruction=True, seed=3),
        "starting": make_run(root, [], status="running", metrics=False, routing_iterations=3,
                             reconstruction=True, seed=4),
    }
    return root, folders


@pytest.fixture(scope="module")
def per_run(study):
    root, _ = study
    return S.run_table([r for r in find_runs(root) if r.info["status"] == "complete"])


# ---------------------------------------------------------------------------------------------
# What each figure shows (the data of every image and line, the titles), and its exact PNG size
# (figsize × DPI pixels)


def shown(ax) -> np.ndarray | None:
    """The image an axes shows, or None for a blank cell."""
    return np.asarray(ax.images[0].get_array()) if ax.images else None


def test_reconstruction_figure_shows_each_input_beside_its_reconstruction(tmp_path):
    n, per_row = 40, 8
    images, reconstructions = rng(0).random((n, 1, 28, 28)), torch.rand(n, 784)
    labels = np.arange(n) % 10
    predictions = labels.copy()
    predictions[::3] = (labels[::3] + 1) % 10  # 14 misclassified: two cells of the bottom rows stay blank
    figure = F.reconstruction_figure(images, reconstructions, labels, predictions, MNIST_CLASSES, per_row=per_row)
    axes = np.array(figure.axes).reshape(4, 2 * per_row)
    correct, wrong = np.flatnonzero(predictions == labels)[:16], np.flatnonzero(predictions != labels)
    for group, indices in enumerate((correct, wrong)):  # rows 1-2 correct, rows 3-4 misclassified
        for k in range(2 * per_row):
            row, col = 2 * group + k // per_row, 2 * (k % per_row)
            if k >= len(indices):
                assert shown(axes[row, col]) is None and shown(axes[row, col + 1]) is None
                continue
            i = indices[k]
            np.testing.assert_array_equal(shown(axes[row, col]), images[i, 0].astype(np.float32))
            np.testing.assert_array_equal(shown(axes[row, col + 1]), reconstructions[i].reshape(28, 28).numpy())
            assert axes[row, col].get_title(loc="left") == f"{labels[i]} → {predictions[i]}"
    assert expected_pixels(figure) == (1920, 780)
    assert saved_size(figure, tmp_path) == (1920, 780)


def test_reconstruction_figure_size_follows_per_row_and_missing_errors(tmp_path):
    labels = np.arange(12) % 10
    figure = F.reconstruction_figure(rng(1).random((12, 784)), rng(2).random((12, 784)), labels, labels,
                                     MNIST_CLASSES, per_row=3)  # no misclassified image: blank cells
    assert [shown(ax) is not None for ax in figure.axes] == [True] * 12 + [False] * 12
    assert figure.get_size_inches() == pytest.approx((4.8, 5.2))
    assert saved_size(figure, tmp_path) == expected_pixels(figure) == (720, 780)


# fewer than 5 panels: as many columns as panels, the heading wrapped to the width (the explorer draws one)
@pytest.mark.parametrize("panels, pixels", [(10, (1990, 1296)), (3, (1204, 698)), (1, (418, 798))])
def test_perturbation_figure_tiles_each_panel(tmp_path, panels, pixels):
    grids = [rng(i).random((16, 11, 28, 28)) for i in range(panels)]
    figure = F.perturbation_figure(grids, [f"class {i}" for i in range(panels)], A.PERTURBATION_DELTAS)
    for k, ax in enumerate(figure.axes):
        if k < panels:
            np.testing.assert_array_equal(shown(ax), F.tile(grids[k]))
            assert ax.get_title() == f"class {k}"
        else:
            assert shown(ax) is None  # the unused cells of the 2 × 5 layout
    assert expected_pixels(figure) == pixels
    assert saved_size(figure, tmp_path) == pixels


def test_curve_figures_plot_each_runs_history(study, tmp_path):
    root, _ = study
    runs = find_runs(root, "mnist_*")
    assert len(runs) == 4
    lines = F.accuracy_figure(runs, title="t").axes[0].lines
    def drawn(line, history, column):  # the line passes through the run's every point
        points = dict(zip(line.get_xdata(), line.get_ydata()))
        return all(e in points and np.isclose(points[e], v) for e, v in zip(history.epoch, history[column]))

    for run in runs:  # every seed's test error is drawn (a thin line, or the line of a lone seed)
        assert any(drawn(line, run.history, "test_error") for line in lines), run.folder
    loss = F.loss_figure(runs, title="t").axes[0].lines
    r3 = [r for r in runs if r.label == "routing 3, reconstruction"]
    mean_train = pd.concat([r.history.set_index("epoch").train_loss for r in r3], axis=1).mean(axis=1)
    assert any(line.get_linestyle() == "-" and np.allclose(line.get_ydata(), mean_train.to_numpy()) for line in loss)
    for maker in (F.accuracy_figure, F.loss_figure):
        figure = maker(runs, title="t")
        assert expected_pixels(figure) == (1350, 825)
        assert saved_size(figure, tmp_path, f"{maker.__name__}.png") == (1350, 825)
        (tmp_path / f"{maker.__name__}.png").unlink()


def test_accuracy_figure_one_legend_entry_per_configuration(study):
    root, _ = study
    runs = find_runs(root, "mnist_*")
    labels = [t.get_text() for t in F.accuracy_figure(runs).axes[0].get_legend().get_texts()]
    assert sorted(labels) == ["routing 1, no reconstruction (1 seed)", "routing 3, reconstruction (3 seeds)"]


def test_accuracy_figure_draws_the_mean_band_and_every_seed(study):
    root, _ = study
    runs = find_runs(root, "mnist_routing3_recon_*")  # seeds 1, 2 (2 epochs) and 3 (1 epoch, running)
    ax = F.accuracy_figure(runs).axes[0]
    (mean,) = [line for line in ax.get_lines() if line.get_label().startswith("routing 3")]
    np.testing.assert_allclose(mean.get_xdata(), [1, 2])
    np.testing.assert_allclose(mean.get_ydata(), [(0.50 + 0.28 + 0.10) / 3, (0.30 + 0.34) / 2])
    assert mean.get_color() == F.CONFIGURATION_COLORS["routing 3, reconstruction"]
    seeds = [line for line in ax.get_lines() if line.get_label().startswith("_") and line.get_lw() < 1]
    assert len(seeds) == 3
    (band,) = ax.collections
    low, high = band.get_paths()[0].vertices[:, 1].min(), band.get_paths()[0].vertices[:, 1].max()
    assert (low, high) == pytest.approx((0.10, 0.50))
    assert ax.get_yscale() == "log"
    ticks = ax.yaxis.get_major_locator()()
    assert min(ticks) <= 0.10 * 1.3 and max(ticks) >= 0.50 / 1.3  # the ticks span the data


def test_each_configuration_keeps_its_colour_and_colours_differ():
    colours = list(F.CONFIGURATION_COLORS.values())
    assert len(set(colours)) == len(colours)
    picked = F._colors(["routing 3, reconstruction", "something new", "baseline CNN", "another"])
    assert picked["routing 3, reconstruction"] == F.CONFIGURATION_COLORS["routing 3, reconstruction"]
    assert len(set(picked.values())) == 4


def test_confusion_figure_colours_the_errors_and_prints_every_count(tmp_path):
    matrix = rng(3).integers(0, 20, (10, 10))
    matrix[2, 7] = 0  # a zero is left blank
    figure = F.confusion_figure(matrix, DATASETS["fashion-mnist"].classes)
    colours = shown(figure.axes[0])
    off_diagonal = ~np.eye(10, dtype=bool)
    np.testing.assert_array_equal(colours[off_diagonal], matrix[off_diagonal])
    assert saved_size(figure, tmp_path) == expected_pixels(figure) == (1200, 1050)
    # full class names, every count written
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(DATASETS["fashion-mnist"].classes)
    written = sorted(int(t.get_text().replace(",", "")) for t in ax.texts)
    assert written == sorted(int(n) for (r, c), n in np.ndenumerate(matrix) if n or r == c)


def test_sample_figure_shows_the_first_images_of_each_class_in_its_row(tmp_path):
    images = rng(4).integers(0, 256, (200, 28, 28), dtype=np.uint8)
    labels = np.arange(200) % 10
    figure = F.sample_figure(images, labels, MNIST_CLASSES)
    canvas = shown(figure.axes[0])
    for c in range(10):
        for k, i in enumerate(np.flatnonzero(labels == c)[:10]):
            np.testing.assert_allclose(canvas[29 * c:29 * c + 28, 29 * k:29 * k + 28], images[i] / 255, atol=1e-6)
    assert saved_size(figure, tmp_path) == expected_pixels(figure) == (1140, 1005)


def test_save_figure_replaces_an_existing_file(tmp_path):
    path = tmp_path / "figure.png"
    path.write_bytes(b"old")
    F.save_figure(F.confusion_figure(np.eye(10, dtype=int), MNIST_CLASSES), path)
    assert png_size(path) == (1200, 1050)


# ---------------------------------------------------------------------------------------------
# layout and example selection


def test_tile_layout_and_gap_fill():
    images = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2) + 1  # no zeros, no fill value
    canvas = F.tile(images, gap=1, fill=0.5)
    assert canvas.shape == (2 * 3 - 1, 3 * 3 - 1) == (5, 8)
    for r in range(2):
        for c in range(3):
            np.testing.assert_array_equal(canvas[3 * r:3 * r + 2, 3 * c:3 * c + 2], images[r, c])
    gaps = np.zeros(canvas.shape, bool)
    gaps[2, :], gaps[:, 2], gaps[:, 5] = True, True, True
    assert (canvas[gaps] == 0.5).all()
    assert not np.isin(canvas[~gaps], [0.5]).any()


def test_tile_without_gap_and_default_fill():
    images = np.zeros((1, 2, 3, 4), np.float32)
    assert F.tile(images, gap=0).shape == (3, 8)
    canvas = F.tile(images, gap=2)
    assert canvas.shape == (3, 10) and (canvas[:, 4:6] == 1.0).all() and canvas.dtype == np.float32


def test_reconstruction_examples_first_correct_and_wrong():
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    predictions = np.array([0, 9, 2, 9, 4, 5, 0, 7])
    correct, wrong = A.reconstruction_examples(labels, predictions, per_group=3)
    assert correct.tolist() == [0, 2, 4] and wrong.tolist() == [1, 3, 6]
    correct, wrong = A.reconstruction_examples(labels, predictions, per_group=16)
    assert correct.tolist() == [0, 2, 4, 5, 7] and wrong.tolist() == [1, 3, 6]


def test_perturbation_examples_first_correct_per_class_else_first_of_class():
    labels = np.array([3, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 3, 9])
    predictions = labels.copy()
    predictions[0] = 5   # the first 3 is wrong: the 3 at index 4 is chosen
    predictions[1] = 7   # the first 0 is wrong: the 0 at index 11
    predictions[10] = 1  # both 9s wrong: fall back to the first 9 (index 10)
    predictions[13] = 1
    chosen = A.perturbation_examples(labels, predictions)
    assert chosen == dict(enumerate([11, 2, 3, 4, 5, 6, 7, 8, 9, 10]))
    assert all(isinstance(i, int) for i in chosen.values())
    assert A.perturbation_examples(labels[:3], predictions[:3]) == {0: 1, 1: 2, 3: 0}  # absent classes left out


def test_perturbation_deltas():
    deltas = A.PERTURBATION_DELTAS
    assert len(deltas) == 11
    assert deltas[0] == pytest.approx(-0.25) and deltas[-1] == pytest.approx(0.25)
    assert deltas[5] == 0
    np.testing.assert_allclose(np.diff(deltas), 0.05, atol=1e-12)
    np.testing.assert_allclose(deltas, -deltas[::-1], atol=1e-12)  # symmetric about the middle


# ---------------------------------------------------------------------------------------------
# perturb_capsule on a random CapsNet


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CapsNet(routing_iterations=3, reconstruction=True).eval()


@pytest.fixture(scope="module")
def capsule():
    generator = torch.Generator().manual_seed(1)
    return 0.3 * torch.randn(16, generator=generator)


def decode(model, capsule, cls):
    capsules = torch.zeros(1, 10, 16)
    capsules[0, cls] = capsule
    with torch.no_grad():
        return model.decode(capsules, torch.tensor([cls])).reshape(28, 28).numpy()


@pytest.fixture(scope="module")
def grid(model, capsule):
    return A.perturb_capsule(model, capsule, 4)


def test_perturb_capsule_shape(grid):
    assert grid.shape == (16, 11, 28, 28)
    assert grid.dtype == np.float32
    assert (grid >= 0).all() and (grid <= 1).all()  # sigmoid output


def test_perturb_capsule_middle_column_is_unperturbed(model, capsule, grid):
    unperturbed = decode(model, capsule, 4)
    for d in range(16):
        np.testing.assert_allclose(grid[d, 5], unperturbed, atol=1e-5)


@pytest.mark.parametrize("d, k", [(3, 9), (0, 0), (15, 10)])
def test_perturb_capsule_shifts_one_dimension(model, capsule, grid, d, k):
    shifted = capsule.clone()
    shifted[d] += float(A.PERTURBATION_DELTAS[k])
    np.testing.assert_allclose(grid[d, k], decode(model, shifted, 4), atol=1e-5)
    # a real change, and not the one of another dimension
    assert np.abs(grid[d, k] - grid[d, 5]).max() > 1e-4
    other = (d + 1) % 16
    assert np.abs(grid[d, k] - grid[other, k]).max() > 1e-4


def test_perturb_capsule_uses_the_class(model, capsule, grid):
    # the decoder masks every capsule but the given class's: another class decodes differently
    assert np.abs(A.perturb_capsule(model, capsule, 7)[:, 5] - grid[:, 5]).max() > 1e-4
    np.testing.assert_allclose(A.perturb_capsule(model, capsule, 7)[2, 5], decode(model, capsule, 7), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The figures of a trained run (capslib.study.analysis), with a random CapsNet on the first 100 MNIST test
# images (conftest.py): it predicts many classes, about 1 in 10 correctly.


@pytest.fixture(scope="module")
def trained_run(early_capsnet, mnist_test):
    return A.TrainedRun(early_capsnet, TrainConfig(), 1, MNIST_CLASSES, *mnist_test)


@pytest.fixture(scope="module")
def capsules_and_predictions(early_capsnet, mnist_test):
    """Computed here from the capsules' lengths, independently of the model's forward."""
    with torch.no_grad():
        capsules = early_capsnet.digit_capsules(mnist_test[0])
    return capsules, capsules.norm(dim=-1).argmax(dim=1).numpy()


def test_reconstruction_figure_of_a_run_decodes_the_predicted_class(early_capsnet, trained_run,
                                                                    capsules_and_predictions):
    capsules, predicted = capsules_and_predictions
    labels = trained_run.test_labels.numpy()
    correct, wrong = np.flatnonzero(predicted == labels)[:16], np.flatnonzero(predicted != labels)[:16]
    assert len(correct) and len(wrong) == 16 and len(set(predicted[wrong])) > 2  # not one class everywhere
    with torch.no_grad():
        expected = early_capsnet.decode(capsules, torch.as_tensor(predicted)).reshape(-1, 28, 28).numpy()
    axes = np.array(A.reconstruction_figure_of(trained_run).axes).reshape(4, 16)
    for group, indices in enumerate((correct, wrong)):
        for k, i in enumerate(indices):
            row, col = 2 * group + k // 8, 2 * (k % 8)
            np.testing.assert_array_equal(shown(axes[row, col]), trained_run.test_images[i, 0].numpy())
            np.testing.assert_allclose(shown(axes[row, col + 1]), expected[i], atol=1e-5)
            assert axes[row, col].get_title(loc="left") == f"{labels[i]} → {predicted[i]}"


def test_perturbation_figure_of_a_run_perturbs_each_chosen_images_own_class(early_capsnet, trained_run,
                                                                            capsules_and_predictions):
    capsules, predicted = capsules_and_predictions
    labels = trained_run.test_labels.numpy()
    chosen = {}  # per class: its first correctly classified image, else its first image
    for c in range(10):
        of_class = np.flatnonzero(labels == c)
        hits = of_class[predicted[of_class] == c]
        chosen[c] = int(hits[0]) if len(hits) else int(of_class[0])
    figure = A.perturbation_figure_of(trained_run)
    for ax, (c, i) in zip(figure.axes, chosen.items()):
        assert ax.get_title() == f"{c} (test image {i})"
        expected = F.tile(A.perturb_capsule(early_capsnet, capsules[i, c], c))
        np.testing.assert_allclose(shown(ax), expected, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# tables


RUN_COLUMNS, SUMMARY_COLUMNS = S.RUN_COLUMNS, S.SUMMARY_COLUMNS


def test_find_runs_skips_a_run_just_started(study):
    root, folders = study
    found = {r.folder for r in find_runs(root)}
    assert folders["starting"] not in found
    assert found == {f for name, f in folders.items() if name != "starting"}


def test_run_table(per_run, study):
    _, folders = study
    assert list(per_run.columns) == RUN_COLUMNS
    assert len(per_run) == 4
    rows = {(r.dataset, r.configuration, r.seed): r for r in per_run.itertuples()}
    r3s1 = rows[("mnist", "routing 3, reconstruction", 1)]
    assert (r3s1.final_test_error, r3s1.best_test_error, r3s1.best_epoch, r3s1.epochs) == (0.30, 0.30, 2, 2)
    r3s2 = rows[("mnist", "routing 3, reconstruction", 2)]
    assert (r3s2.final_test_error, r3s2.best_test_error, r3s2.best_epoch) == (0.34, 0.28, 1)  # final, not best
    assert r3s2.mean_epoch_seconds == 2.5 and r3s2.wall_seconds == 20.0
    assert r3s2.run == str(folders["r3s2"])
    # provenance of the latest session
    assert (r3s1.device, r3s1.commit, r3s1.command) == ("1x GPU", "abc123", "python -m capslib train | tee log")
    assert rows[("fashion-mnist", "routing 3, reconstruction", 1)].final_test_error == 8.0


def test_run_table_order(per_run):
    # datasets (MNIST first), then Table 1's configuration order, then seeds
    assert list(zip(per_run.dataset, per_run.configuration, per_run.seed)) == [
        ("mnist", "routing 1, no reconstruction", 1),
        ("mnist", "routing 3, reconstruction", 1),
        ("mnist", "routing 3, reconstruction", 2),
        ("fashion-mnist", "routing 3, reconstruction", 1),
    ]


def test_run_table_of_no_runs_is_empty():
    assert S.run_table([]).empty


def test_summary_table(per_run):
    summary = S.summary_table(per_run)
    assert list(summary.columns) == SUMMARY_COLUMNS
    rows = {(r["dataset"], r["configuration"]): r for r in summary.to_dict("records")}
    assert len(rows) == len(summary) == 3

    r3 = rows[("mnist", "routing 3, reconstruction")]
    finals, bests = [0.30, 0.34], [0.30, 0.28]
    mean = sum(finals) / 2
    std = math.sqrt(sum((x - mean) ** 2 for x in finals) / (2 - 1))  # sample std, ddof=1
    best_mean = sum(bests) / 2
    best_std = math.sqrt(sum((x - best_mean) ** 2 for x in bests) / (2 - 1))
    assert r3["runs"] == 2 and r3["epochs"] == "2"
    assert r3["final_error_mean"] == pytest.approx(round(mean, 3)) == pytest.approx(0.32)
    assert r3["final_error_std"] == pytest.approx(round(std, 3)) == pytest.approx(0.028)
    assert r3["best_error_mean"] == pytest.approx(0.29)
    assert r3["best_error_std"] == pytest.approx(round(best_std, 3)) == pytest.approx(0.014)
    assert (r3["paper_error"], r3["paper_std"]) == (0.25, 0.005)
    assert r3["other_reference_error"] == 0.26  # the TensorFlow study's 99.74%
    assert r3["gap_to_paper"] == pytest.approx(round(mean - 0.25, 3)) == pytest.approx(0.07)

    r1 = rows[("mnist", "routing 1, no reconstruction")]
    assert r1["runs"] == 1 and r1["final_error_mean"] == 0.40
    assert missing(r1["final_error_std"]) and missing(r1["best_error_std"])  # one seed: no std
    assert (r1["paper_error"], r1["paper_std"]) == (0.34, 0.032)
    assert r1["gap_to_paper"] == pytest.approx(0.06)

    fashion = rows[("fashion-mnist", "routing 3, reconstruction")]
    assert missing(fashion["paper_error"]) and missing(fashion["gap_to_paper"])  # Table 1 is MNIST only
    assert fashion["other_reference_error"] == 6.4


def test_summary_table_ddof1_matches_pandas_by_hand():
    per_run = pd.DataFrame({"dataset": ["mnist"] * 3, "configuration": ["baseline CNN"] * 3,
                            "recipe": ["paper"] * 3, "validation_images": [0] * 3,
                            "epochs": [40, 40, 50], "final_test_error": [0.40, 0.35, 0.45],
                            "selected_test_error": [None] * 3, "best_test_error": [0.30, 0.30, 0.30]})
    row = S.summary_table(per_run).iloc[0]
    assert row.final_error_mean == pytest.approx(0.4)
    assert row.final_error_std == pytest.approx(0.05)  # sqrt((0.0025 + 0 + 0.0025) / 2)
    assert row.best_error_std == 0
    assert row.epochs == "40/50"
    assert row.paper_error == 0.39 and row.gap_to_paper == pytest.approx(0.01)


def test_markdown_table_escapes_pipes_and_blanks_missing_values():
    table = pd.DataFrame({"name": ["a|b", "plain"], "value": [1.5, float("nan")], "note": [None, "x"],
                          "n": [1, 2]})
    lines = T.markdown_table(table).splitlines()
    assert lines[0] == "| name | value | note | n |"
    assert lines[1] == "|---|---|---|---|"
    assert lines[2] == "| a\\|b | 1.5 |  | 1 |"
    assert lines[3] == "| plain |  | x | 2 |"
    assert len(lines) == 4 and T.markdown_table(table).endswith("\n")
    # every row splits into as many cells as the header, once escaped pipes are set aside
    for line in lines:
        assert line.replace("\\|", "").count("|") == 5


def test_write_result_tables(study, tmp_path):
    root, folders = study
    per_run, summary = T.write_result_tables(find_runs(root), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairwise.csv", "pairwise.md", "runs.csv", "runs.md",
                                                          "summary.csv", "summary.md"]
    runs_csv, summary_csv = pd.read_csv(tmp_path / "runs.csv"), pd.read_csv(tmp_path / "summary.csv")
    assert list(runs_csv.columns) == RUN_COLUMNS and list(summary_csv.columns) == SUMMARY_COLUMNS
    # the running run and the one just started are left out
    assert len(runs_csv) == len(per_run) == 4
    assert str(folders["running"]) not in set(runs_csv.run)
    assert sorted(runs_csv.seed[runs_csv.configuration == "routing 3, reconstruction"]) == [1, 1, 2]
    assert len(summary_csv) == len(summary) == 3
    r3 = summary_csv[(summary_csv.dataset == "mnist") & (summary_csv.configuration == "routing 3, reconstruction")]
    assert r3.runs.item() == 2 and r3.final_error_mean.item() == pytest.approx(0.32)
    runs_md = (tmp_path / "runs.md").read_text()
    assert runs_md.startswith("# ") and "| dataset | configuration |" in runs_md
    assert "python -m capslib train \\| tee log" in runs_md  # the command's pipe, escaped
    summary_md = (tmp_path / "summary.md").read_text()  # formatted for a reader
    assert summary_md.count("\n| MNIST |") == 2
    assert ("| MNIST | routing 3, reconstruction | paper | — | 2 | 2 | 0.32 ± 0.03 | — | 0.29 ± 0.01 | 0.25 ± 0.005 "
            "| +0.07 |") in summary_md
    assert "| Fashion-MNIST | routing 3, reconstruction | paper | — | 1 | 2 | 8.00 | — | 8.00 | — | — |" in summary_md
    for text in (runs_md, summary_md):  # no 'nan' or 'None' cells
        assert "| nan |" not in text and "| None |" not in text and "nan ±" not in text


def test_write_result_tables_is_rebuilt_not_appended(study, tmp_path):
    root, _ = study
    T.write_result_tables(find_runs(root), tmp_path)
    first = (tmp_path / "runs.csv").read_text()
    T.write_result_tables(find_runs(root), tmp_path)
    assert (tmp_path / "runs.csv").read_text() == first


def test_the_model_shown_has_the_lowest_final_error_of_its_complete_runs(study):
    from capslib.study.notebook import lowest_final_error, matching_runs

    root, folders = study
    # seed 2 has the lowest best-epoch error (0.28) and the running seed 3 the lowest of all (0.10):
    # neither counts; seed 1's final 0.30 beats seed 2's final 0.34
    routing3 = matching_runs(root, dataset="mnist", routing_iterations=3, reconstruction=True)
    assert lowest_final_error(routing3).folder == folders["r3s1"]
    assert lowest_final_error(matching_runs(root, dataset="mnist")).folder == folders["r3s1"]
    assert lowest_final_error(matching_runs(root, dataset="fashion-mnist")).folder == folders["fashion"]
    assert matching_runs(root, model="baseline") == []


# ---------------------------------------------------------------------------------------------
# benchmark speed-ups


def bench_row(path, routing, reconstruction, images_per_second, batch_size=128, model="capsnet"):
    return {"model": model, "path": path, "routing": routing, "reconstruction": reconstruction,
            "batch_size": batch_size, "images_per_second": images_per_second}


def test_multimnist_table_shows_the_test_pairs_each_run_scored(tmp_path):
    root = tmp_path / "runs"
    make_run(root, [9.0, 6.0], dataset="multimnist", seed=1, test_pairs=100)
    make_run(root, [8.0, 5.0], dataset="multimnist", seed=2, test_pairs=100)
    make_run(root, [12.0], dataset="multimnist", model="baseline", seed=1, test_pairs=1000)
    make_run(root, [11.0], dataset="multimnist", model="baseline", seed=2, test_pairs=2, test_images=10)
    table = S.multimnist_table(find_runs(root)).set_index("configuration")
    assert table.loc["routing 3, reconstruction", "test_pairs_scored"] == "1000000"   # 10,000 images × 100
    assert table.loc["baseline CNN", "test_pairs_scored"] == "20/10000000"            # runs that differ: both
    assert table.loc["routing 3, reconstruction", "test_error_mean"] == pytest.approx(5.5)
    assert table.loc["baseline CNN", "paper_error"] == 8.1


def test_multimnist_runs_set_each_run_beside_its_score_on_the_papers_10m_pairs(tmp_path):
    import json

    root = tmp_path / "runs"
    scored = make_run(root, [9.0, 5.0], dataset="multimnist", seed=1, test_pairs=100)
    make_run(root, [8.0, 6.0], dataset="multimnist", seed=2, test_pairs=100)
    (scored / S.PAPER_SCALE_SCORE).write_text(json.dumps({"epoch": 2, "test_examples": 10_000_000,
                                                         "test_error_percent": 5.01}))
    table = S.multimnist_run_table(find_runs(root)).set_index("seed")
    se_1m = 100 * math.sqrt(0.05 * 0.95 / 1_000_000)
    assert table.loc[1, "test_error_se"] == pytest.approx(se_1m, abs=1e-3)
    assert table.loc[1, "paper_scale_error"] == 5.01 and table.loc[1, "paper_scale_pairs"] == 10_000_000
    se_10m = 100 * math.sqrt(0.0501 * 0.9499 / 10_000_000)
    assert table.loc[1, "difference_in_se"] == pytest.approx(0.01 / math.hypot(se_1m, se_10m), abs=0.01)
    assert missing(table.loc[2, "paper_scale_error"])  # not scored again
    # a score of another checkpoint than the run's last is refused, by name
    (scored / S.PAPER_SCALE_SCORE).write_text(json.dumps({"epoch": 1, "test_examples": 10, "test_error_percent": 5}))
    with pytest.raises(RunFolderError, match=S.PAPER_SCALE_SCORE):
        S.multimnist_run_table(find_runs(root))


def test_affine_summary_compares_capsnet_with_the_cnn_and_routing_1_with_3():
    rows = [{"configuration": c, "seed": seed, "target_validation_accuracy": 99.1, "expanded_test_accuracy": 99.2,
             "affine_accuracy": a} for c, values in (("routing 3, reconstruction", [80.0, 82.0, 81.0]),
                                                     ("baseline CNN", [70.0, 71.0, 69.0]),
                                                     ("routing 1, reconstruction", [81.0, 80.0, 82.0]))
            for seed, a in enumerate(values, 1)]
    summary = S.affine_summary(pd.DataFrame(rows)).set_index("configuration")
    capsnet, routing1 = summary.loc["routing 3, reconstruction"], summary.loc["routing 1, reconstruction"]
    assert capsnet.affine_vs == "baseline CNN" and capsnet.affine_difference == pytest.approx(11.0)
    assert capsnet.affine_difference_low > 0  # three seeds see an 11-point gap with a spread of 1
    assert routing1.affine_vs == "routing 3, reconstruction" and routing1.affine_difference == pytest.approx(0.0)
    assert routing1.affine_difference_low < 0 < routing1.affine_difference_high
    assert missing(summary.loc["baseline CNN", "affine_difference"]) and summary.loc["baseline CNN", "paper_affine"] == 66.0
    assert capsnet.affine_mean == 81.0 and capsnet.affine_std == 1.0 and capsnet.runs == 3


def test_add_speedups():
    table = pd.DataFrame([
        bench_row("fp32", 3, True, 1000),
        bench_row("graph", 3, True, 7000),
        bench_row("bf16", 3, True, 1500),
        bench_row("fp32", 1, False, 2000),
        bench_row("graph", 1, False, 3000),
        bench_row("graph", 3, True, 10000, batch_size=512),  # over fp32 at batch 128
        {"model": "capsnet", "path": "compile", "routing": 3, "reconstruction": True, "batch_size": 128,
         "error": "RuntimeError: broken"},  # a path that failed: no speed-up
    ])
    speedups = add_speedups(table).speedup_vs_fp32.tolist()
    assert speedups[:6] == [1.0, 7.0, 1.5, 1.0, 1.5, 10.0]
    assert missing(speedups[6])


def test_add_speedups_baseline():
    table = pd.DataFrame([
        bench_row("fp32", 3, True, 1000),
        bench_row("graph", 3, True, 7000),
        bench_row("fp32", None, False, 100, model="baseline"),  # as run_benchmark builds them
        bench_row("graph", None, False, 400, model="baseline"),
    ])
    assert add_speedups(table).speedup_vs_fp32.tolist() == [1.0, 7.0, 1.0, 4.0]


# ---------------------------------------------------------------------------------------------
# tables formatted for a reader


def test_mean_std_formatting():
    assert T.mean_std(0.37333, 0.0306) == "0.37 ± 0.03"
    assert T.mean_std(0.3, float("nan")) == "0.30"  # one seed: no spread
    assert T.mean_std(None, None) == ""


def test_table1_is_formatted_from_unrounded_values(per_run):
    table = T.table1(per_run)
    assert list(table.columns) == ["dataset", "configuration", "recipe", "held out", "seeds", "epochs",
                                   "final error (%)", "selected on validation (%)", "best epoch (%)", "paper (%)",
                                   "gap to paper"]
    rows = {(r["dataset"], r["configuration"]): r for r in table.to_dict("records")}
    r3 = rows[("MNIST", "routing 3, reconstruction")]
    assert (r3["final error (%)"], r3["best epoch (%)"]) == ("0.32 ± 0.03", "0.29 ± 0.01")
    assert (r3["paper (%)"], r3["gap to paper"]) == ("0.25 ± 0.005", "+0.07")
    assert rows[("MNIST", "routing 1, no reconstruction")]["final error (%)"] == "0.40"
    assert rows[("Fashion-MNIST", "routing 3, reconstruction")]["paper (%)"] == T.NONE
    # a std of 0.0153 is 0.02: rounding to 3 digits first (0.015) and then to 2 would print 0.01
    runs = pd.DataFrame({"dataset": ["mnist"] * 3, "configuration": ["baseline CNN"] * 3, "recipe": ["paper"] * 3,
                         "validation_images": [0] * 3, "epochs": [40] * 3, "final_test_error": [0.36, 0.34, 0.37],
                         "selected_test_error": [None] * 3, "best_test_error": [0.36, 0.34, 0.37]})
    assert T.table1(runs)["final error (%)"].item() == "0.36 ± 0.02"


def test_runs_overview_is_one_line_per_run_and_short(per_run):
    table = T.runs_overview(per_run)
    assert len(table) == len(per_run) and list(table.index) == list(range(len(per_run)))
    first = table.iloc[0].to_dict()
    assert first["final error (%)"] == "0.40" and first["best (epoch)"] == "0.40 (2)"
    assert first["device"] == "1x GPU".removeprefix("1x ")
    markdown = T.markdown_table(table, right=T.numeric_columns(table))
    assert "nan" not in markdown and "None" not in markdown
    assert "---:|" in markdown.splitlines()[1]


def test_short_device_names_fit_one_column():
    assert T._short_device("1x NVIDIA H100 80GB HBM3") == "H100 80GB HBM3"
    assert T._short_device("CPU (x86_64, 2 threads)") == "CPU (x86_64, 2 threads)"


def test_numeric_columns_right_aligned():
    table = pd.DataFrame({"name": ["a", "b"], "error": ["0.38 ± 0.03", "7.10"], "best": ["0.34 (37)", "1.00 (2)"],
                          "paper": ["0.25 ± 0.005", T.NONE], "gap": ["+0.13", T.NONE], "blank": [T.NONE, T.NONE]})
    assert T.numeric_columns(table) == ("error", "best", "paper", "gap")
    assert T.markdown_table(table, right=("error",)).splitlines()[1] == "|---|---:|---|---|---|---|"


def test_training_time_sums_each_configuration_and_all(per_run):
    table = T.training_time(per_run)
    assert table.iloc[-1].tolist() == ["all", "", 4, f"{per_run.wall_seconds.sum() / 60:.1f}"]
    r3 = table[table.configuration == "routing 3, reconstruction"]
    assert r3.runs.tolist() == [2, 1]  # MNIST (2 seeds) and Fashion-MNIST (1)


# ---------------------------------------------------------------------------------------------
# routing figures


def test_coupling_entropy_is_in_bits():
    uniform = torch.full((2, 5, 10), 0.1)
    assert torch.allclose(A.coupling_entropy(uniform), torch.full((2, 5), math.log2(10)))
    certain = torch.zeros(1, 1, 10)
    certain[..., 3] = 1
    assert A.coupling_entropy(certain).item() == pytest.approx(0.0)


def test_routing_figure_shows_each_iterations_mean_coupling(tmp_path):
    iterations, count = 3, 2
    couplings = torch.full((iterations, count, 6, 10), 0.1)
    couplings[1, 0] = torch.softmax(torch.arange(10.0), dim=0)  # iteration 2 of image 0: leaning to class 9
    images = torch.rand(count, 1, 28, 28)
    figure = F.routing_figure(images, *A.routing_summary(couplings), np.array([9, 1]), np.array([9, 2]), MNIST_CLASSES)
    axes = np.array(figure.axes).reshape(count, 1 + iterations)
    # bars: the mean coupling minus the uniform 1/10, in percentage points
    heights = [bar.get_height() for bar in axes[0, 2].patches]
    np.testing.assert_allclose(heights, 100 * (torch.softmax(torch.arange(10.0), dim=0).numpy() - 0.1), atol=1e-4)
    np.testing.assert_allclose([bar.get_height() for bar in axes[1, 1].patches], 0, atol=1e-5)
    # the predicted class's bar is the coloured one
    assert [bar.get_facecolor() != axes[1, 1].patches[0].get_facecolor() for bar in axes[1, 1].patches].count(True) == 1
    assert axes[1, 1].patches[2].get_facecolor() != axes[1, 1].patches[0].get_facecolor()
    assert axes[0, 1].get_title() == "routing iteration 1\nentropy 3.32 bits"
    assert axes[1, 1].get_title() == "entropy 3.32 bits"
    # tiny changes (trained CapsNets move the couplings little) get the decimals to tell them apart
    couplings = torch.full((iterations, count, 6, 10), 0.1, dtype=torch.float64)
    couplings[1:, :, :, 0] += 0.001
    couplings[1:] /= couplings[1:].sum(dim=-1, keepdim=True)
    figure = F.routing_figure(images, *A.routing_summary(couplings), np.array([0, 0]), np.array([0, 0]), MNIST_CLASSES)
    assert figure.axes[3].get_title() == "routing iteration 3\nentropy 3.3219216 bits"
    assert saved_size(figure, tmp_path) == expected_pixels(figure)


def test_coupling_entropy_figure_one_line_per_model(tmp_path):
    figure = F.coupling_entropy_figure({"routing 1, no reconstruction": np.array([3.32]),
                                        "routing 3, reconstruction": np.array([3.32, 2.9, 2.5])})
    ax = figure.axes[0]
    lines = {line.get_label(): line.get_ydata().tolist() for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert lines == {"routing 1, no reconstruction": [3.32], "routing 3, reconstruction": [3.32, 2.9, 2.5]}
    assert saved_size(figure, tmp_path) == expected_pixels(figure)


def test_charts_are_saved_as_small_palette_pngs(study, tmp_path):
    root, _ = study
    path = F.save_figure(F.accuracy_figure(find_runs(root, "mnist_*")), tmp_path / "curves.png")
    with Image.open(path) as image:
        assert image.mode == "P"


def test_show_gives_plain_headers_and_right_aligned_numbers():
    markdown = T.show(pd.DataFrame({"split": ["train"], "zero_fraction": [0.5], "images": [60000]}), "a note").data
    lines = markdown.splitlines()
    assert lines[:3] == ["| split | zero fraction | images |", "|---|---:|---:|", "| train | 0.5 | 60000 |"]
    assert lines[-1] == "a note"


@pytest.mark.parametrize("low, high", [(9.99, 11.4), (0.3, 2.5), (0.35, 0.41)])
def test_a_log_error_axis_labels_at_least_three_plain_numbers_within_its_range(low, high):
    from matplotlib.figure import Figure

    from capslib.study.figures import _log_ticks

    ax = Figure().subplots()
    ax.set_yscale("log")
    _log_ticks(ax, np.array([low, high]))
    ticks = ax.yaxis.get_major_locator()()
    assert len(ticks) >= 3 and all(low / 1.3 <= t <= high * 1.3 for t in ticks), ticks
