"""The study's figures, as matplotlib Figures (no pyplot state) saved as PNG at 150 dpi. They only
draw: what they show is computed in analysis.py (trained models) and summaries.py (run logs).

- reconstruction grid: top 2 rows from correctly classified test images, bottom 2 rows from
  misclassified ones, each input beside its reconstruction from the predicted class's capsule;
- perturbation grid: one test image per class, 16 rows (the 16 capsule dimensions) × 11 columns
  (−0.25 … +0.25 in steps of 0.05 added to that dimension), decoded;
- test error and loss curves of several runs, read back from their metrics.csv: per configuration
  the mean over seeds, the range over seeds and every seed;
- routing: the coupling coefficients of each routing iteration for a few images, and their mean
  entropy per iteration over the test set;
- confusion matrix and per-class sample grids.

Each configuration has one colour in every figure; image grids are drawn pixel for pixel (nearest
neighbour), which keeps them sharp and their PNGs small.
"""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator, FixedLocator, FuncFormatter, NullFormatter
from PIL import Image

from ..core.files import atomic_path

DPI = 150


def png_bytes(figure: Figure, compact: bool = True) -> bytes:
    """`figure` as a PNG of exactly figsize × DPI pixels; with `compact=False` as drawn (RGBA, ~10 ms to
    encode: the explorer's widgets redraw while a person waits), else in the smallest mode that shows it: 8-bit
    grey for grey figures (the image grids, lossless), else a palette of at most 256 colours (exact
    when the figure has that few; charts with antialiased, translucent lines have thousands, which
    a 256-colour median cut shows the same to the eye at a third of the bytes). Keeps the committed
    results and the notebooks that show them a fraction of matplotlib's RGBA size."""
    figure.set_dpi(DPI)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    buffer = io.BytesIO()
    if compact:
        _compact_image(rgba).save(buffer, format="PNG", optimize=True)
    else:
        Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", compress_level=1)
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
        if np.array_equal(np.asarray(palette.convert("RGB")), rgb):  # exact
            return palette
    return image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


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


def save_and_show(figure: Figure, path: Path | str):
    """Save `figure` to `path` (see save_figure) and return it for the notebook to display."""
    save_figure(figure, path)
    return show(figure)


def tile(images: np.ndarray, gap: int = 1, fill: float = 1.0) -> np.ndarray:
    """R×C×H×W images → one (R·(H+gap)−gap)×(C·(W+gap)−gap) canvas with `fill` between tiles."""
    rows, cols, h, w = images.shape
    canvas = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), fill, dtype=np.float32)
    for r in range(rows):
        for c in range(cols):
            canvas[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = images[r, c]
    return canvas


def image_png(image, scale: int = 6) -> bytes:
    """A grey image in [0, 1] as an 8-bit PNG `scale` times its size, each pixel a sharp square
    (nearest neighbour): what the explorer's widgets show, without matplotlib (~1 ms)."""
    pixels = np.clip(_as_images(image)[0], 0.0, 1.0)
    picture = Image.fromarray(np.round(pixels * 255).astype(np.uint8), "L")
    buffer = io.BytesIO()
    picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST).save(buffer, "PNG")
    return buffer.getvalue()


def _pixels(ax, image: np.ndarray) -> None:
    """Draw a grey image in [0, 1] pixel for pixel (no smoothing between pixels)."""
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")


def _as_images(x) -> np.ndarray:
    x = x.detach().float().cpu().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float32)
    return x.reshape(-1, 28, 28)


# ---------------------------------------------------------------------------------------------
# Reconstructions




def reconstruction_figure(images, reconstructions, labels, predictions, classes, per_row: int = 8) -> Figure:
    """4 rows of `per_row` (input, reconstruction) pairs: rows 1-2 correct, rows 3-4 misclassified.
    Each pair is titled 'label → prediction'. Missing misclassified examples leave blank cells."""
    images, reconstructions = _as_images(images), _as_images(reconstructions)
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    correct = np.flatnonzero(predictions == labels)[:2 * per_row]  # drawn in the top rows, in order
    wrong = np.flatnonzero(predictions != labels)[:2 * per_row]    # and in the bottom rows
    figure = Figure(figsize=(1.6 * per_row, 5.2))
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.87, wspace=0.05, hspace=0.35)
    axes = figure.subplots(4, 2 * per_row)
    for group, indices in enumerate((correct, wrong)):
        for k in range(2 * per_row):
            row, col = 2 * group + k // per_row, 2 * (k % per_row)
            pair = axes[row, col], axes[row, col + 1]
            if k < len(indices):
                i = indices[k]
                _pixels(pair[0], images[i])
                _pixels(pair[1], reconstructions[i])
                color = "black" if labels[i] == predictions[i] else "crimson"
                pair[0].set_title(f"{classes[labels[i]]} → {classes[predictions[i]]}", fontsize=7, color=color,
                                  loc="left")
            for ax in pair:
                ax.set_axis_off()
    figure.suptitle("Reconstructions: each test image (left) beside its reconstruction from the predicted class's "
                    "capsule (right), titled true → predicted class.\nTop 2 rows correctly classified, bottom 2 rows "
                    "misclassified (red)", fontsize=10)
    return figure


# ---------------------------------------------------------------------------------------------
# Dimension perturbations






def _tile_centres(count: int, size: int = 28, gap: int = 1) -> list[float]:
    return [k * (size + gap) + (size - 1) / 2 for k in range(count)]


def perturbation_figure(panels: list[np.ndarray], titles: list[str], deltas: np.ndarray) -> Figure:
    """One panel per class (16 rows × 11 columns of images), rows of 5 panels; every panel's rows
    are numbered by dimension and its columns by the value added. Each image pixel is one pixel of
    the PNG (the decoder's 28×28 images, neither smoothed nor enlarged)."""
    cols = min(5, max(1, len(panels)))  # one panel (the explorer's image) is no wider than it needs
    rows = max(1, (len(panels) + cols - 1) // cols)
    tile_h, tile_w = tile(panels[0]).shape if panels else (16 * 29 - 1, len(deltas) * 29 - 1)
    # layout in whole pixels, so that the images land on the pixel grid
    left, gap, right, title, ticks = 85, 75, 15, 45, 100
    width = left + cols * tile_w + (cols - 1) * gap + right
    heading = textwrap.wrap(f"Dimension perturbations: row d decodes the class capsule with {deltas[0]:+.2f} … "
                            f"{deltas[-1]:+.2f} (steps of {deltas[1] - deltas[0]:.2f}) added to dimension d; "
                            "the middle column (0) is the unchanged capsule", width // 12)  # ~12 px a character
    suptitle = max(80, 40 + 25 * len(heading))  # 80 px above the 5-column figures (one line)
    band = title + tile_h + ticks
    height = suptitle + rows * band
    figure = Figure(figsize=(width / DPI, height / DPI))
    dims = panels[0].shape[0] if panels else 16
    for k, (panel, name) in enumerate(zip(panels, titles)):
        row, col = divmod(k, cols)
        x0, y0 = left + col * (tile_w + gap), height - suptitle - row * band - title - tile_h
        ax = figure.add_axes((x0 / width, y0 / height, tile_w / width, tile_h / height))
        _pixels(ax, tile(panel))
        ax.set_yticks(_tile_centres(dims), [str(d + 1) for d in range(dims)], fontsize=6.5)
        ax.set_xticks(_tile_centres(len(deltas)), [f"{x:+.2f}" if x else "0" for x in deltas], fontsize=6.5,
                      rotation=90)
        ax.tick_params(length=2, pad=1)
        ax.set_title(name, fontsize=10)
        if col == 0:
            ax.set_ylabel("capsule dimension", fontsize=8)
        ax.set_xlabel("value added to the dimension", fontsize=7, labelpad=2)
    figure.suptitle("\n".join(heading), fontsize=10, y=1 - 25 / height, va="top")
    return figure


# ---------------------------------------------------------------------------------------------
# Curves of several runs

# One colour per configuration in every figure (Okabe-Ito colours, distinct for colour-blind readers).
CONFIGURATION_COLORS = {
    "baseline CNN": "#555555",
    "routing 1, no reconstruction": "#0072B2",
    "routing 1, reconstruction": "#009E73",
    "routing 3, no reconstruction": "#CC79A7",
    "routing 3, reconstruction": "#D55E00",
}
OTHER_COLORS = ["#E69F00", "#56B4E9", "#000000", "#F0E442"]


def _colors(labels: list[str]) -> dict[str, str]:
    others = iter(OTHER_COLORS * len(labels))
    return {label: CONFIGURATION_COLORS.get(label) or next(others) for label in dict.fromkeys(labels)}


def _by_configuration(runs) -> dict[str, list]:
    groups = {}
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    return groups


def _aligned(runs, column: str) -> tuple[np.ndarray, np.ndarray]:
    """The epochs of any of `runs` and a runs × epochs array of `column` (NaN where a run has none)."""
    series = [run.history.set_index("epoch")[column].astype(float) for run in runs]
    epochs = np.array(sorted(set().union(*(s.index for s in series))))
    return epochs, np.array([s.reindex(epochs).to_numpy() for s in series])


def _plot_seeds(ax, epochs, values, color, label, ls="-") -> None:
    """Every seed thin, the range over seeds as a band, the mean over seeds thick."""
    marker = "o" if len(epochs) == 1 else None
    if len(values) > 1:
        for row in values:
            ax.plot(epochs, row, color=color, lw=0.6, alpha=0.45, ls=ls, marker=marker, ms=3)
        ax.fill_between(epochs, np.nanmin(values, axis=0), np.nanmax(values, axis=0), color=color, alpha=0.15, lw=0)
    with np.errstate(all="ignore"):
        ax.plot(epochs, np.nanmean(values, axis=0), color=color, lw=2, ls=ls, label=label, marker=marker)


def _log_ticks(ax, values: np.ndarray) -> None:
    """Plain-number ticks (0.3, 0.5, 1, 2 …) on a log axis, spanning `values`."""
    finite = values[np.isfinite(values) & (values > 0)]
    low, high = (finite.min(), finite.max()) if len(finite) else (0.1, 100)
    nice = [m * 10.0 ** e for e in range(-3, 3) for m in (1, 1.5, 2, 3, 4, 5, 7)]
    ticks = [t for t in nice if low / 1.3 <= t <= high * 1.3]
    if len(ticks) < 3:  # a narrow range (e.g. 10–11%): evenly spaced plain numbers instead
        ticks = [t for t in MaxNLocator(nbins=5).tick_values(low, high) if low / 1.05 <= t <= high * 1.05] or [low]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def accuracy_figure(runs, title: str = "Test error") -> Figure:
    """Test error (100 − accuracy, %) per epoch on a log scale, which shows the first epochs and the
    last hundredths of a percent at once: per configuration, the mean over seeds (thick line), the
    range over seeds (band) and every seed (thin lines)."""
    figure = Figure(figsize=(9, 5.5), layout="constrained")
    ax = figure.subplots()
    groups = _by_configuration(runs)
    colors = _colors(list(groups))
    shown = []
    for label, group in groups.items():
        epochs, errors = _aligned(group, "test_error")
        shown.append(errors.ravel())
        seeds = f"{len(group)} seeds" if len(group) > 1 else "1 seed"
        _plot_seeds(ax, epochs, errors, colors[label], f"{label} ({seeds})")
    ax.set_yscale("log")
    _log_ticks(ax, np.concatenate(shown) if shown else np.array([]))
    ax.set(xlabel="epoch", ylabel="test error (%) = 100 − test accuracy, log scale", title=title)
    ax.grid(alpha=0.3, which="both")
    if groups:
        ax.legend(fontsize=8, title="thick: mean over seeds; band: range; thin: each seed", title_fontsize=8)
    return figure


def loss_figure(runs, title: str = "Loss") -> Figure:
    """Training (solid) and test (dashed) loss per epoch, log scale, mean over the seeds of each
    configuration; the gap between configurations with and without reconstruction is the weighted
    reconstruction term."""
    figure = Figure(figsize=(9, 5.5), layout="constrained")
    ax = figure.subplots()
    groups = _by_configuration(runs)
    colors = _colors(list(groups))
    for label, group in groups.items():
        for column, ls in (("train_loss", "-"), ("test_loss", "--")):
            epochs, losses = _aligned(group, column)
            with np.errstate(all="ignore"):
                ax.plot(epochs, np.nanmean(losses, axis=0), color=colors[label], lw=1.6, ls=ls,
                        marker="o" if len(epochs) == 1 else None, label=label if ls == "-" else None)
    ax.set(xlabel="epoch", ylabel="loss, log scale (mean over seeds)", title=title, yscale="log")
    ax.grid(alpha=0.3, which="both")
    if groups:
        styles = [Line2D([], [], color="black", ls="-", label="training loss"),
                  Line2D([], [], color="black", ls="--", label="test loss")]
        handles, _ = ax.get_legend_handles_labels()
        ax.legend(handles=handles + styles, fontsize=8)
    return figure


# ---------------------------------------------------------------------------------------------
# Routing




def _decimals_to_tell_apart(span: float) -> int:
    """Enough decimals to show differences of about `span` (at least 2)."""
    return max(2, math.ceil(-math.log10(span)) + 1) if span > 0 else 2


def routing_figure(images, change: np.ndarray, entropy: np.ndarray, labels, predictions, classes) -> Figure:
    """One row per image: the image, then for each routing iteration how far the mean coupling
    coefficient of its primary capsules to each class j lies from the uniform 1/10 that routing starts
    from, in percentage points (the predicted class in colour), and the mean entropy of the couplings.
    The scale adapts to the largest change (trained CapsNets move them little).

    `change`: iterations × images × classes (% points), `entropy`: iterations × images (bits), as
    analysis.routing_summary computes them."""
    images = _as_images(images)
    iterations, count, num_classes = change.shape
    limit = max(float(np.abs(change).max()) * 1.15, 0.05)
    decimals = _decimals_to_tell_apart(np.ptp(entropy))
    figure = Figure(figsize=(1.5 + 2.7 * iterations, 1.55 * count + 0.9), layout="constrained")
    axes = figure.subplots(count, 1 + iterations, squeeze=False, width_ratios=[0.55] + [1] * iterations)
    for row in range(count):
        label, predicted = labels[row], int(predictions[row])
        _pixels(axes[row, 0], images[row])
        axes[row, 0].set_axis_off()
        known = label is not None  # an uploaded image has no true class
        axes[row, 0].set_title(f"{classes[int(label)] if known else '?'} → {classes[predicted]}", fontsize=8,
                               color="crimson" if known and int(label) != predicted else "black")
        for it in range(iterations):
            ax = axes[row, 1 + it]
            colors = ["#D55E00" if j == predicted else "#999999" for j in range(num_classes)]
            ax.bar(range(num_classes), change[it, row], color=colors)
            ax.axhline(0, color="black", lw=0.8)
            ax.set_ylim(-limit, limit)
            ax.set_xticks(range(num_classes), [str(c) for c in classes] if row == count - 1 else [],
                          fontsize=7, rotation=0 if max(len(str(c)) for c in classes) <= 2 else 90)
            ax.tick_params(labelsize=7)
            heading = f"routing iteration {it + 1}\n" if row == 0 else ""
            ax.set_title(f"{heading}entropy {entropy[it, row]:.{decimals}f} bits", fontsize=8)
            if it == 0:
                ax.set_ylabel("mean c_ij − 1/10\n(% points)", fontsize=8)
    heading = ["How routing moves the primary capsules' couplings away from uniform (1/10 to each class)",
               "true → predicted class at left; the predicted class in colour"]
    chars = int(figure.get_figwidth() * DPI / 11)  # ~11 px a character: one routing iteration is a narrow figure
    figure.suptitle("\n".join(line for text in heading for line in textwrap.wrap(text, chars)), fontsize=10)
    return figure


def capsule_lengths_figure(lengths: np.ndarray, classes, predicted: int, label: int | None,
                           margins: tuple[float, float], title: str = "") -> Figure:
    """The lengths of one image's 10 class capsules (the predicted class in colour, the true class,
    when known, marked), with the margin loss's targets: the true class's capsule above m⁺, the others
    below m⁻ (`margins` = (m⁺, m⁻))."""
    figure = Figure(figsize=(4.6, 2.6), layout="constrained")
    ax = figure.subplots()
    colors = ["#D55E00" if j == predicted else "#999999" for j in range(len(lengths))]
    ax.bar(range(len(lengths)), lengths, color=colors)
    for value, name in zip(margins, ("m⁺", "m⁻")):
        ax.axhline(value, color="black", lw=0.8, ls=":")
        ax.text(len(lengths) - 0.45, value, f"{name} {value:g}", fontsize=7, va="bottom", ha="right")
    names = [str(c) for c in classes]
    ax.set_xticks(range(len(lengths)), names, fontsize=8, rotation=0 if max(map(len, names)) <= 2 else 90)
    if label is not None:
        ax.get_xticklabels()[label].set_fontweight("bold")
        ax.get_xticklabels()[label].set_color("black" if label == predicted else "crimson")
    ax.set_ylim(0, 1)
    ax.tick_params(labelsize=7)
    ax.set_ylabel("capsule length ‖v_j‖", fontsize=8)
    known = "" if label is None else f", true class {classes[label]} in bold"
    ax.set_title(title or f"predicted {classes[predicted]} (the longest capsule, in colour){known}", fontsize=8)
    return figure


def coupling_entropy_figure(entropies: dict[str, np.ndarray], num_classes: int = 10) -> Figure:
    """Mean entropy of the couplings per routing iteration over the test set, one line per model;
    the scale spans the values and the uniform log2(classes) that routing starts from."""
    figure = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = figure.subplots()
    colors = _colors(list(entropies))
    uniform = math.log2(num_classes)
    values = np.concatenate([np.asarray(v, dtype=float) for v in entropies.values()] + [np.array([uniform])])
    span = max(float(uniform - values.min()), 1e-4)
    decimals = _decimals_to_tell_apart(span)
    iterations = max((len(e) for e in entropies.values()), default=1)
    for k, (label, entropy) in enumerate(entropies.items()):
        ax.plot(range(1, len(entropy) + 1), entropy, marker="os^D"[k % 4], ms=9 - 2 * k, lw=2, color=colors[label],
                label=label, zorder=3 + len(entropies) - k)  # the first model's (fewer) points stay visible
        for it, value in enumerate(entropy):
            ax.annotate(f"{value:.{decimals}f}", (it + 1, value), textcoords="offset points", xytext=(0, -14 - 10 * k),
                        ha="center", fontsize=8, color=colors[label])
    ax.axhline(uniform, color="black", lw=0.8, ls=":")
    ax.text(iterations + 0.25, uniform, f"uniform: log2({num_classes}) = {uniform:.{decimals}f}", ha="right",
            va="bottom", fontsize=8)
    ax.set_xticks(range(1, iterations + 1))
    ax.set_xlim(0.7, iterations + 0.3)
    ax.set_ylim(max(0.0, values.min() - 0.6 * span), uniform + 0.25 * span)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.{decimals}f}"))
    ax.set(xlabel="routing iteration", ylabel="mean entropy of c_i (bits)",
           title="Coupling entropy per routing iteration, test set")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
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
    """Counts in every cell; colour shows the misclassified images (off the diagonal), the correct
    ones (the diagonal) are on grey, so the errors are not dwarfed."""
    figure = Figure(figsize=(8, 7), layout="constrained")
    ax = figure.subplots()
    errors = matrix.astype(float).copy()
    np.fill_diagonal(errors, np.nan)
    top = max(float(np.nanmax(errors)) if errors.size > 1 else 1.0, 1.0)
    image = ax.imshow(errors, cmap="Reds", vmin=0, vmax=top)
    for i in range(len(matrix)):
        ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, color="#e0e0e0"))
    for (r, c), n in np.ndenumerate(matrix):
        if r == c:
            ax.text(c, r, f"{n:,}", ha="center", va="center", fontsize=8.5, color="black")
        elif n:
            ax.text(c, r, str(n), ha="center", va="center", fontsize=10,
                    color="white" if n > 0.55 * top else "black", fontweight="bold")
    ax.set_xticks(range(len(classes)), list(classes), rotation=35, ha="right", rotation_mode="anchor", fontsize=9)
    ax.set_yticks(range(len(classes)), list(classes), fontsize=9)
    ax.set(xlabel="predicted class", ylabel="true class",
           title="Confusion matrix of the test set (counts; diagonal: correct, in grey)")
    figure.colorbar(image, ax=ax, shrink=0.8, label="misclassified test images")
    return figure


def sample_figure(images: np.ndarray, labels: np.ndarray, classes, per_class: int = 10) -> Figure:
    """The first `per_class` training images of each class: one row per class."""
    rows = [images[np.flatnonzero(labels == c)[:per_class]] for c in range(len(classes))]
    figure = Figure(figsize=(per_class * 0.6 + 1.6, len(classes) * 0.6 + 0.7), layout="constrained")
    ax = figure.subplots()
    grid = np.stack([np.pad(r / 255.0, ((0, per_class - len(r)), (0, 0), (0, 0))) for r in rows])
    _pixels(ax, tile(grid))
    ax.set_yticks(_tile_centres(len(classes)), list(classes), fontsize=8)
    ax.set_xticks(_tile_centres(per_class), [str(k + 1) for k in range(per_class)], fontsize=7)
    ax.tick_params(length=0)
    ax.set(xlabel="the first images of each class in the training set", ylabel="class")
    return figure


# ---------------------------------------------------------------------------------------------
# The paper's other experiments


def _overlay(red: np.ndarray, green: np.ndarray) -> np.ndarray:
    """Two reconstructions in one RGB image: the first in red, the second in green (yellow where both)."""
    return np.stack([red, green, np.zeros_like(red)], axis=-1).clip(0, 1)


def multimnist_figure(inputs, reconstructions, labels, predictions, reconstructed, size: int = 36,
                      per_row: int = 6) -> Figure:
    """The paper's Fig. 5: rows of (input, the two reconstructions overlaid in red and green), each titled
    L (labels), R (the classes reconstructed) and P (the two longest capsules). The caller picks the
    examples: correct ones, misclassified ones and, if given, ones where R holds a class not present
    (the paper's * columns). `reconstructions`: N×2×pixels; `labels`, `predictions`, `reconstructed`: N×2."""
    inputs = np.asarray(inputs, dtype=np.float32).reshape(-1, size, size)
    recon = np.asarray(reconstructions, dtype=np.float32).reshape(-1, 2, size, size)
    count = len(inputs)
    rows = max(1, math.ceil(count / per_row))
    figure = Figure(figsize=(2.2 * per_row, 1.35 * rows + 0.6))
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.55 / (1.35 * rows + 0.6), wspace=0.05, hspace=0.45)
    axes = np.asarray(figure.subplots(rows, 2 * per_row)).reshape(rows, 2 * per_row)
    for k in range(rows * per_row):
        pair = axes[k // per_row, 2 * (k % per_row)], axes[k // per_row, 2 * (k % per_row) + 1]
        for ax in pair:
            ax.set_axis_off()
        if k >= count:
            continue
        _pixels(pair[0], inputs[k])
        pair[1].imshow(_overlay(recon[k, 0], recon[k, 1]), interpolation="nearest")
        wrong = sorted(labels[k]) != sorted(predictions[k])
        forced = not set(reconstructed[k]) <= set(labels[k])
        pair[0].set_title(f"L:{labels[k][0]},{labels[k][1]}  P:{predictions[k][0]},{predictions[k][1]}", fontsize=7,
                          loc="left", color="crimson" if wrong else "black")
        pair[1].set_title(f"R:{reconstructed[k][0]},{reconstructed[k][1]}{' *' if forced else ''}", fontsize=7,
                          loc="left", color="crimson" if wrong else "black")
    figure.suptitle("MultiMNIST: input (grey) beside the reconstructions of the two classes R from their capsules "
                    "(red: first, green: second, yellow: both). L: labels, P: the two longest capsules; red titles: "
                    "misclassified; *: R includes a class not present", fontsize=8)
    return figure


def affine_figure(per_run_histories: dict[str, list], target: float | None = None,
                  title: str = "Expanded MNIST vs affNIST-style accuracy") -> Figure:
    """Accuracy on the affNIST-style generated set against expanded-MNIST test accuracy, one line per
    run through its evaluations (the accuracy-vs-accuracy curve): at any MNIST accuracy, which model
    generalises better to affine transforms. `per_run_histories`: configuration → list of runs."""
    figure = Figure(figsize=(8, 5.5), layout="constrained")
    ax = figure.subplots()
    colors = _colors(list(per_run_histories))
    for label, runs in per_run_histories.items():
        for i, run in enumerate(runs):
            h = run.history.dropna(subset=["affine_accuracy"])
            ax.plot(100 * h.test_accuracy, 100 * h.affine_accuracy, color=colors[label], lw=1.2, marker=".", ms=4,
                    label=label if i == 0 else None, alpha=0.8)
    if target is not None:
        ax.axvline(100 * target, color="grey", ls=":", lw=1, label=f"matched validation accuracy {100 * target:.2f}%")
    ax.set(xlabel="expanded MNIST test accuracy (%)", ylabel="affNIST-style (generated) accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    if per_run_histories:
        ax.legend(fontsize=8)
    return figure


def image_rows_figure(rows: dict, title: str = "") -> Figure:
    """One row of images (N×1×S×S each) per entry of `rows`, labelled by its key."""
    arrays = {name: np.asarray(torch.as_tensor(x).detach().float().cpu())[:, 0] for name, x in rows.items()}
    count = max(len(a) for a in arrays.values())
    figure = Figure(figsize=(1.0 * count + 1.6, 1.1 * len(arrays) + 0.3))
    figure.subplots_adjust(left=0.12, right=0.99, bottom=0.02, top=0.9, wspace=0.05, hspace=0.1)
    axes = np.asarray(figure.subplots(len(arrays), count)).reshape(len(arrays), count)
    for r, (name, images) in enumerate(arrays.items()):
        for c in range(count):
            axes[r, c].set_axis_off()
            if c < len(images):
                _pixels(axes[r, c], images[c])
        axes[r, 0].text(-0.15, 0.5, name, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=9)
    return figure
