"""The study's figures, as matplotlib Figures (no pyplot state) saved as PNG.

- reconstruction grid: top 2 rows from correctly classified test images, bottom 2 rows from
  misclassified ones, each input beside its reconstruction from the predicted class's capsule;
- perturbation grid: one test image per class, 16 rows (the 16 capsule dimensions) × 11 columns
  (−0.25 … +0.25 in steps of 0.05 added to that dimension), decoded;
- accuracy and loss curves of several runs, read back from their metrics.csv;
- confusion matrix and per-class sample grids.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from .files import atomic_path
from .model import CapsNet

DPI = 100
PERTURBATION_DELTAS = np.round(np.arange(-0.25, 0.2501, 0.05), 2)  # 11 values, 0 in the middle


def png_bytes(figure: Figure) -> bytes:
    """`figure` as a PNG of exactly figsize × DPI pixels, in the smallest lossless mode that holds
    it: 8-bit grey for grey figures (the image grids), a palette for few colours, else RGB. Keeps
    the committed results and the notebooks that show them a fraction of matplotlib's RGBA size."""
    figure.set_dpi(DPI)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    buffer = io.BytesIO()
    _compact_image(rgba).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _compact_image(rgba: np.ndarray) -> Image.Image:
    if not (rgba[..., 3] == 255).all():
        return Image.fromarray(rgba, "RGBA")
    rgb = np.ascontiguousarray(rgba[..., :3])
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return Image.fromarray(rgb[..., 0], "L")
    image = Image.fromarray(rgb, "RGB")
    if len(np.unique(rgb.reshape(-1, 3), axis=0)) <= 256:
        palette = image.quantize(colors=256, method=Image.Quantize.MAXCOVERAGE)
        if np.array_equal(np.asarray(palette.convert("RGB")), rgb):  # use it only if exact
            return palette
    return image


def save_figure(figure: Figure, path: Path | str) -> Path:
    """Write `figure` as a compact PNG (see png_bytes), atomically; return the path."""
    path = Path(path)
    data = png_bytes(figure)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def show(figure: Figure):
    """The figure as an IPython image of the same compact PNG: what notebooks display."""
    from IPython.display import Image as IPythonImage
    return IPythonImage(data=png_bytes(figure))


def tile(images: np.ndarray, gap: int = 1, fill: float = 1.0) -> np.ndarray:
    """R×C×H×W images → one (R·(H+gap)−gap)×(C·(W+gap)−gap) canvas with `fill` between tiles."""
    rows, cols, h, w = images.shape
    canvas = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), fill, dtype=np.float32)
    for r in range(rows):
        for c in range(cols):
            canvas[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = images[r, c]
    return canvas


def _as_images(x) -> np.ndarray:
    x = x.detach().float().cpu().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float32)
    return x.reshape(-1, 28, 28)


# ---------------------------------------------------------------------------------------------
# Reconstructions


def reconstruction_examples(labels: np.ndarray, predictions: np.ndarray, per_group: int = 16
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the first `per_group` correctly and misclassified test images."""
    correct = np.flatnonzero(predictions == labels)[:per_group]
    wrong = np.flatnonzero(predictions != labels)[:per_group]
    return correct, wrong


def reconstruction_figure(images, reconstructions, labels, predictions, classes, per_row: int = 8) -> Figure:
    """4 rows of `per_row` (input, reconstruction) pairs: rows 1-2 correct, rows 3-4 misclassified.
    Each pair is titled 'label→prediction'. Missing misclassified examples leave blank cells."""
    images, reconstructions = _as_images(images), _as_images(reconstructions)
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    correct, wrong = reconstruction_examples(labels, predictions, 2 * per_row)
    figure = Figure(figsize=(1.6 * per_row, 5.0))
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.88, wspace=0.05, hspace=0.3)
    axes = figure.subplots(4, 2 * per_row)
    for group, indices in enumerate((correct, wrong)):
        for k in range(2 * per_row):
            row, col = 2 * group + k // per_row, 2 * (k % per_row)
            pair = axes[row, col], axes[row, col + 1]
            if k < len(indices):
                i = indices[k]
                pair[0].imshow(images[i], cmap="gray", vmin=0, vmax=1)
                pair[1].imshow(reconstructions[i], cmap="gray", vmin=0, vmax=1)
                color = "black" if labels[i] == predictions[i] else "crimson"
                pair[0].set_title(f"{_short(classes[labels[i]])}→{_short(classes[predictions[i]])}",
                                  fontsize=8, color=color, loc="left")
            for ax in pair:
                ax.set_axis_off()
    figure.suptitle("Reconstructions (input | reconstruction from the predicted capsule): "
                    "top 2 rows correctly classified, bottom 2 rows misclassified", fontsize=10)
    return figure


def _short(name: str) -> str:
    return name if len(name) <= 7 else name[:6].rstrip() + "."


# ---------------------------------------------------------------------------------------------
# Dimension perturbations


def perturbation_examples(labels: np.ndarray, predictions: np.ndarray, num_classes: int = 10) -> dict[int, int]:
    """Class → index of the first test image of that class that the model classifies correctly, or
    of the class's first image if none is; classes absent from the images are left out.
    Deterministic, so figures of different runs show the same images where they can."""
    chosen = {}
    for c in range(num_classes):
        of_class = np.flatnonzero(labels == c)
        hits = of_class[predictions[of_class] == c]
        if len(of_class):
            chosen[c] = int(hits[0]) if len(hits) else int(of_class[0])
    return chosen


@torch.inference_mode()
def perturb_capsule(model: CapsNet, capsule: torch.Tensor, cls: int, deltas=PERTURBATION_DELTAS) -> np.ndarray:
    """Decode `capsule` (16D, of class `cls`) with delta added to each dimension in turn:
    16 × len(deltas) × 28 × 28 images."""
    dims = capsule.shape[-1]
    deltas = torch.as_tensor(deltas, dtype=capsule.dtype, device=capsule.device)
    shifted = capsule.expand(dims, len(deltas), dims).clone()                   # [dim, delta, 16]
    shifted[torch.arange(dims), :, torch.arange(dims)] += deltas                # add delta to dimension d
    capsules = torch.zeros(dims * len(deltas), 10, dims, dtype=capsule.dtype, device=capsule.device)
    capsules[:, cls] = shifted.reshape(-1, dims)
    classes = torch.full((len(capsules),), cls, device=capsule.device)
    return _as_images(model.decode(capsules, classes)).reshape(dims, len(deltas), 28, 28)


def perturbation_figure(panels: list[np.ndarray], titles: list[str], deltas=PERTURBATION_DELTAS) -> Figure:
    """One panel per class (16 rows × 11 columns of images), 2 rows of 5 panels."""
    cols = 5
    rows = (len(panels) + cols - 1) // cols
    figure = Figure(figsize=(3.6 * cols, 5.1 * rows))
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93, wspace=0.05, hspace=0.1)
    axes = np.atleast_2d(figure.subplots(rows, cols))
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, panel, title in zip(axes.flat, panels, titles):
        ax.imshow(tile(panel), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=10)
    figure.suptitle(f"Dimension perturbations: rows = the 16 dimensions of the class capsule, "
                    f"columns = {deltas[0]:+.2f} … {deltas[-1]:+.2f} in steps of "
                    f"{deltas[1] - deltas[0]:.2f} (middle column unperturbed)", fontsize=10)
    return figure


# ---------------------------------------------------------------------------------------------
# Curves of several runs


def _colors(labels: list[str]) -> dict[str, str]:
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:gray"]
    return {label: palette[i % len(palette)] for i, label in enumerate(dict.fromkeys(labels))}


def accuracy_figure(runs, title: str = "Test accuracy", zoom: bool = True) -> Figure:
    """Test accuracy (%) per epoch: one line per run, one colour per configuration."""
    figure = Figure(figsize=(9, 5.5))
    ax = figure.subplots()
    colors = _colors([r.label for r in runs])
    seen = set()
    values = []
    for run in runs:
        acc = 100 * run.history.test_accuracy
        values.extend(acc.iloc[min(2, len(acc) - 1):])
        label = run.label if run.label not in seen else None
        seen.add(run.label)
        ax.plot(run.history.epoch, acc, color=colors[run.label], alpha=0.8, lw=1.2, label=label)
    if zoom and values:
        low, high = np.percentile(values, 5), max(values)
        ax.set_ylim(low - 0.1 * (high - low + 0.05), high + 0.15 * (high - low + 0.05))
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure


def loss_figure(runs, title: str = "Loss") -> Figure:
    """Training (solid) and test (dashed) loss per epoch, log scale; the gap between configurations
    with and without reconstruction is the weighted reconstruction term."""
    figure = Figure(figsize=(9, 5.5))
    ax = figure.subplots()
    colors = _colors([r.label for r in runs])
    seen = set()
    for run in runs:
        label = run.label if run.label not in seen else None
        seen.add(run.label)
        ax.plot(run.history.epoch, run.history.train_loss, color=colors[run.label], lw=1.2, label=label)
        ax.plot(run.history.epoch, run.history.test_loss, color=colors[run.label], lw=1.0, ls="--", alpha=0.7)
    ax.set(xlabel="epoch", ylabel="loss (solid: train, dashed: test)", title=title, yscale="log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return figure


def ablation_figure(per_run, paper_error: float | None = None, references: dict[str, float] | None = None,
                    title: str = "") -> Figure:
    """One panel per base recipe: each variant's test error per seed (dots: final; open circles:
    selected on validation), its mean final error (bar) and the base's (dashed line); dotted lines
    for the paper's reported error and for any `references` (label -> error %)."""
    bases = list(dict.fromkeys(per_run.base))
    figure = Figure(figsize=(11, 6), layout="constrained")
    axes = figure.subplots(1, len(bases), sharex=True, squeeze=False)[0]
    for ax, base in zip(axes, bases):
        rows = per_run[per_run.base == base]
        variants = list(dict.fromkeys(rows.variant))
        for y, variant in enumerate(variants):
            runs = rows[rows.variant == variant]
            first = y == 0 and ax is axes[0]
            ax.scatter(runs.final_test_error, [y] * len(runs), color="tab:blue", s=22, zorder=3,
                       label="final, per seed" if first else None)
            ax.scatter(runs.selected_test_error, [y + 0.22] * len(runs), facecolors="none", edgecolors="tab:orange",
                       s=22, zorder=3, label="selected on validation, per seed" if first else None)
            ax.plot([runs.final_test_error.mean()] * 2, [y - 0.3, y + 0.3], color="tab:blue", lw=2.5,
                    label="mean final" if first else None)
        ax.axvline(rows[rows.variant == base].final_test_error.mean(), color="tab:blue", ls="--", lw=1, alpha=0.7,
                   label="the base recipe's mean final" if ax is axes[0] else None)
        lines = {**({f"paper (Sabour et al. 2017): {paper_error}%": paper_error} if paper_error is not None else {}),
                 **(references or {})}
        for (label, value), color in zip(lines.items(), ["tab:red", "tab:green", "tab:purple"]):
            ax.axvline(value, color=color, ls=":", lw=1.5, label=label if ax is axes[0] else None)
        ax.set_yticks(range(len(variants)), variants)
        ax.invert_yaxis()
        sign = "+ each official choice, alone" if base == "paper" else "− each official choice, alone"
        ax.set(xlabel="MNIST test error (%)", title=f"{base} recipe {sign}")
        ax.grid(alpha=0.3, axis="x")
    figure.legend(loc="outside lower center", ncols=3, fontsize=8)
    if title:
        figure.suptitle(title)
    return figure


# ---------------------------------------------------------------------------------------------
# Data and errors


def confusion_figure(matrix: np.ndarray, classes) -> Figure:
    figure = Figure(figsize=(7, 6))
    ax = figure.subplots()
    shown = matrix.astype(float).copy()
    np.fill_diagonal(shown, np.nan)  # the diagonal dwarfs the errors; print it instead
    image = ax.imshow(shown, cmap="Reds")
    for (r, c), n in np.ndenumerate(matrix):
        if n:
            ax.text(c, r, str(n), ha="center", va="center", fontsize=7, color="black" if r != c else "gray")
    ax.set_xticks(range(len(classes)), [_short(c) for c in classes], rotation=45, fontsize=8)
    ax.set_yticks(range(len(classes)), [_short(c) for c in classes], fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (colour: off-diagonal counts)")
    figure.colorbar(image, ax=ax, shrink=0.8)
    return figure


def sample_figure(images: np.ndarray, labels: np.ndarray, classes, per_class: int = 10) -> Figure:
    """The first `per_class` images of each class: one row per class."""
    rows = [images[np.flatnonzero(labels == c)[:per_class]] for c in range(len(classes))]
    figure = Figure(figsize=(per_class * 0.6 + 1.4, len(classes) * 0.6 + 0.4))
    ax = figure.subplots()
    grid = np.stack([np.pad(r / 255.0, ((0, per_class - len(r)), (0, 0), (0, 0))) for r in rows])
    ax.imshow(tile(grid), cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([c * 29 + 14 for c in range(len(classes))], [_short(c) for c in classes], fontsize=8)
    ax.set_xticks([])
    return figure
