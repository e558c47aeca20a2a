"""The interactive explorer of notebook 10_explore: one image at a time through a trained CapsNet.

Pick a test image or upload your own (converted as `capslib predict` converts it: core/predict.py);
see the lengths of the 10 class capsules and the prediction; move each of the 16 dimensions of the
predicted class's capsule and watch the decoder's reconstruction change; route 1, 2 or 3 times and
see the coupling coefficients of each iteration and what the capsules become.

`Explorer` computes (no widgets: tested without a browser or a kernel); `ExplorerApp` wires
ipywidgets to it. The capsules and couplings of an image are computed once per
image and routing choice; a slider move runs only the decoder on the cached capsule and encodes a
small PNG (`slider_latency` measures it: a few milliseconds on a 2-core CPU).
"""

from __future__ import annotations

import html
import io
import time
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from PIL import Image

from ..core.errors import CapslibError
from ..core.model import DIGIT_DIM, IMAGE_SIZE, M_NEG, M_POS
from ..core.predict import mnist_like, read_grey
from . import figures
from .analysis import PERTURBATION_DELTAS, TrainedRun, perturb_capsule, routing_summary

# The routing switch offers 1 … 3 iterations (the paper's Table 1 compares 1 and 3), or up to the
# model's own when it was trained with more.
ROUTING_CHOICES = (1, 2, 3)
# A slider moves a dimension over the range of the paper's Fig. 4 (PERTURBATION_DELTAS), finer.
SLIDER_STEP = 0.01
SCREEN_DPI = 90  # the size figures are shown at in the widgets


@dataclass(frozen=True)
class View:
    """One image through the model, routed `iterations` times: what the explorer shows of it."""
    image: torch.Tensor      # 1×1×28×28 in [0, 1], on the model's device
    source: str              # "test image 17", or the uploaded file's name
    label: int | None        # the true class of a test image; None for an upload
    iterations: int
    capsules: torch.Tensor   # 10×16 class capsules v_j
    couplings: torch.Tensor  # iterations×1152×10: the c_ij each routing iteration used
    votes: torch.Tensor      # 1×1152×10×16 predictions û_j|i (Eq. 2): routing again needs only these

    @cached_property
    def lengths(self) -> np.ndarray:
        return self.capsules.norm(dim=-1).float().cpu().numpy()

    @property
    def prediction(self) -> int:
        return int(self.lengths.argmax())


class Explorer:
    """A trained CapsNet with a decoder (a TrainedRun: its model and test set), one image at a time."""

    def __init__(self, run: TrainedRun):
        run.require_routing()
        run.require_decoder()
        self.run = run
        self.model = run.model.eval()
        self.device = run.test_images.device
        own = run.model.routing_iterations
        self.routing_choices = tuple(range(1, max(max(ROUTING_CHOICES), own) + 1))

    @property
    def classes(self) -> tuple[str, ...]:
        return self.run.classes

    @property
    def test_count(self) -> int:
        return len(self.run.test_images)

    @property
    def own_iterations(self) -> int:
        """The routing iterations the model was trained with."""
        return self.model.routing_iterations

    # -- what the explorer looks at

    def test_view(self, index: int, iterations: int | None = None) -> View:
        if not 0 <= index < self.test_count:
            raise CapslibError(f"image_index must be in [0, {self.test_count - 1}] (the run's {self.test_count:,} "
                               f"test images), got {index}")
        image = self.run.test_images[index:index + 1]
        return self.look(image, f"test image {index}", int(self.run.test_labels[index]), iterations)

    def upload_view(self, data: bytes, name: str, invert: bool = False, iterations: int | None = None) -> View:
        """An image file's bytes (PNG, JPEG, ...) converted as MNIST was made (core/predict.py); a file that
        cannot be used raises CapslibError, in one line that names it."""
        grey = mnist_like(read_grey(io.BytesIO(data), invert, name=name), name)
        image = torch.from_numpy(grey).to(self.device).reshape(1, 1, IMAGE_SIZE, IMAGE_SIZE)
        return self.look(image, name, None, iterations)

    def rerouted(self, view: View, iterations: int) -> View:
        return self.look(view.image, view.source, view.label, iterations, view.votes)

    @torch.inference_mode()
    def look(self, image: torch.Tensor, source: str, label: int | None, iterations: int | None = None,
             votes: torch.Tensor | None = None) -> View:
        """`image` (1×1×28×28) routed `iterations` times (default: as the model was trained). The convolutions
        (most of the time: a few hundred ms on a CPU) run once per image: `votes`, û of the image, given
        when rerouted. Routing as CapsNet.digit_capsules and .couplings route, in one pass for both."""
        iterations = iterations or self.own_iterations
        if iterations not in self.routing_choices:
            raise CapslibError(f"routing iterations must be one of {self.routing_choices}, got {iterations}")
        votes = self.model.prediction_vectors(image) if votes is None else votes
        capsules, couplings = self.model.routing(votes, iterations, bias=self.model.digit_bias, return_couplings=True)
        return View(image, source, label, iterations, capsules[0], couplings[:, 0], votes)

    def next_misclassified(self, after: int) -> int | None:
        """The first misclassified test image after index `after` (wrapping around), or None if none is."""
        wrong = self.run.evaluation.misclassified  # trained_run has computed it already
        if len(wrong) == 0:
            return None
        later = wrong[wrong > after]
        return int(later[0] if len(later) else wrong[0])

    @torch.inference_mode()
    def reconstruct(self, view: View, deltas=None) -> np.ndarray:
        """The decoder's 28×28 image from the predicted class's capsule, with `deltas` (16 values, or None)
        added to its dimensions: the decoder alone, from the view's cached capsules."""
        capsules = view.capsules.clone()
        if deltas is not None:
            capsules[view.prediction] += torch.as_tensor(deltas, dtype=capsules.dtype, device=capsules.device)
        classes = torch.tensor([view.prediction], device=capsules.device)
        return self.model.decode(capsules[None], classes).float().cpu().numpy().reshape(IMAGE_SIZE, IMAGE_SIZE)

    # -- its figures (figures.py draws them)

    def lengths_figure(self, view: View):
        return figures.capsule_lengths_figure(view.lengths, self.classes, view.prediction, view.label, (M_POS, M_NEG),
                                              title=f"{view.source}: capsule lengths, predicted "
                                                    f"{self.classes[view.prediction]} ({view.iterations} routing "
                                                    f"iteration{'s' if view.iterations > 1 else ''})")

    def perturbation_figure(self, view: View):
        """The paper's Fig. 4 for this image: each dimension moved over PERTURBATION_DELTAS, decoded."""
        panel = perturb_capsule(self.model, view.capsules[view.prediction], view.prediction)
        title = f"{self.classes[view.prediction]} ({view.source})"
        return figures.perturbation_figure([panel], [title], PERTURBATION_DELTAS)

    def couplings_figure(self, view: View):
        change, entropy = routing_summary(view.couplings[:, None])
        return figures.routing_figure(view.image, change, entropy, [view.label], [view.prediction], self.classes)


class ExplorerApp:
    """The explorer's widgets, wired to an Explorer. A notebook shows it as its last expression (it
    displays as its box); each widget is an attribute, so that tests can move them as a person would."""

    def __init__(self, explorer: Explorer, image_index: int = 0):
        import ipywidgets as widgets  # the notebook stack (pyproject's notebooks extra)

        self.explorer = explorer
        # the last upload, converted again when --invert changes while it is the image chosen (shown, or refused:
        # "the image is mostly light ... --invert" asks the person to tick it)
        self.upload_data: tuple[bytes, str] | None = None
        self.upload_chosen = False
        self._quiet = False  # set while the sliders are reset, so that they decode once, not 16 times
        wide = {"description_width": "initial"}
        self.index = widgets.BoundedIntText(value=image_index, min=0, max=explorer.test_count - 1,
                                            description="test image", style=wide, layout=widgets.Layout(width="170px"))
        self.next_wrong = widgets.Button(description="next misclassified", icon="forward", layout=widgets.Layout(width="auto"),
                                         tooltip="the next test image that the model classifies wrongly")
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="your image")
        self.invert = widgets.Checkbox(value=False, description="--invert (dark ink on a light ground)", indent=False,
                                       layout=widgets.Layout(width="auto"))
        self.status = widgets.HTML()
        self.input = widgets.Image(format="png")
        self.lengths = widgets.Image(format="png")
        self.reconstruction = widgets.Image(format="png")
        low, high = float(PERTURBATION_DELTAS[0]), float(PERTURBATION_DELTAS[-1])
        self.sliders = [widgets.FloatSlider(value=0.0, min=low, max=high, step=SLIDER_STEP, description=f"dim {d + 1}",
                                            readout_format="+.2f", continuous_update=True,
                                            style={"description_width": "52px"}, layout=widgets.Layout(width="310px"))
                        for d in range(DIGIT_DIM)]
        self.reset = widgets.Button(description="reset dimensions", icon="undo", layout=widgets.Layout(width="auto"))
        self.routing = widgets.ToggleButtons(options=[(str(k), k) for k in explorer.routing_choices],
                                             value=explorer.own_iterations, description="routing iterations",
                                             style={**wide, "button_width": "36px"},
                                             tooltips=[f"route {k} time{'s' if k > 1 else ''}"
                                                       for k in explorer.routing_choices])
        self.couplings = widgets.Image(format="png")
        for widget, name in ((self.status, "status"), (self.input, "input"), (self.lengths, "lengths"),
                             (self.reconstruction, "reconstruction"), (self.routing, "routing"),
                             (self.couplings, "couplings"), (self.upload, "upload"), (self.reset, "reset")):
            widget.add_class(f"capslib-{name}")  # stable names for the browser test's selectors
        for slider in self.sliders:
            slider.add_class("capslib-dimension")

        def titled(text: str, widget):
            return widgets.VBox([widgets.HTML(f"<b>{text}</b>"), widget])

        half = DIGIT_DIM // 2
        self.box = widgets.VBox([
            widgets.HBox([self.index, self.next_wrong, self.upload, self.invert]),
            self.status,
            widgets.HBox([titled("input", self.input), titled("capsule lengths", self.lengths),
                          titled("reconstruction", self.reconstruction)], layout=widgets.Layout(align_items="flex-end")),
            widgets.HTML(f"<b>The {DIGIT_DIM} dimensions of the predicted class's capsule</b>: the value added to "
                         f"each (the paper's Fig. 4 moves them by {low:+.2f} … {high:+.2f})"),
            widgets.HBox([widgets.VBox(self.sliders[:half]), widgets.VBox(self.sliders[half:]), self.reset]),
            self.routing,
            self.couplings,
        ]).add_class("capslib-explorer")

        self.index.observe(lambda change: self.on_index(change.new), "value")
        self.next_wrong.on_click(lambda _: self.show_next_misclassified())
        self.upload.observe(lambda change: self.on_upload(change.new), "value")
        self.invert.observe(lambda _: self.on_invert(), "value")
        for slider in self.sliders:
            slider.observe(lambda _: self._quiet or self.update_reconstruction(), "value")
        self.reset.on_click(lambda _: self.reset_dimensions())
        self.routing.observe(lambda change: self.show(explorer.rerouted(self.view, change.new), keep_dimensions=True),
                             "value")
        self.show(explorer.test_view(image_index))  # sets self.view, the View shown

    def _repr_mimebundle_(self, **kwargs):
        return self.box._repr_mimebundle_(**kwargs)

    @property
    def deltas(self) -> list[float]:
        return [slider.value for slider in self.sliders]

    def guarded(self, action) -> None:
        """Run `action`; a mistake of the user's (an index out of range, an unusable upload) becomes the
        status line, in one line, instead of a traceback in the browser's log."""
        try:
            action()
        except CapslibError as err:
            self.status.value = f'<span style="color:crimson">{html.escape(str(err))}</span>'

    def show(self, view: View, keep_dimensions: bool = False) -> None:
        self.view = view
        if not keep_dimensions:
            self.reset_dimensions(update=False)
        self.input.value = figures.image_png(view.image)
        classes = self.explorer.classes
        truth = "" if view.label is None else (
            f" · true class <b>{classes[view.label]}</b>" if view.label == view.prediction else
            f' · <span style="color:crimson">true class <b>{classes[view.label]}</b>: misclassified</span>')
        self.status.value = (f"<b>{html.escape(view.source)}</b> · predicted <b>{classes[view.prediction]}</b> (capsule length "
                             f"{view.lengths[view.prediction]:.3f}){truth} · routed {view.iterations}× "
                             f"(the model was trained with {self.explorer.own_iterations})")
        shown_at_screen_size(self.lengths, figures.png_bytes(self.explorer.lengths_figure(view), compact=False))
        shown_at_screen_size(self.couplings, figures.png_bytes(self.explorer.couplings_figure(view), compact=False))
        self.update_reconstruction()

    def update_reconstruction(self) -> None:
        self.reconstruction.value = figures.image_png(self.explorer.reconstruct(self.view, self.deltas))

    def reset_dimensions(self, update: bool = True) -> None:
        self._quiet = True
        try:
            for slider in self.sliders:
                slider.value = 0.0
        finally:
            self._quiet = False
        if update:
            self.update_reconstruction()

    def on_index(self, index: int) -> None:
        self.upload_chosen = False
        self.guarded(lambda: self.show(self.explorer.test_view(index, self.routing.value)))

    def show_next_misclassified(self) -> None:
        index = self.explorer.next_misclassified(self.index.value)
        if index is None:
            self.status.value = "No test image is misclassified."
        else:
            self.index.value = index  # shows it (the index's observer)

    def on_upload(self, files) -> None:
        if files:
            (file,) = files
            self.upload_data = (bytes(file["content"]), file["name"])
            self.upload_chosen = True
            self.guarded(self.show_upload)

    def on_invert(self) -> None:
        if self.upload_chosen:
            self.guarded(self.show_upload)

    def show_upload(self) -> None:
        data, name = self.upload_data
        self.show(self.explorer.upload_view(data, name, self.invert.value, self.routing.value))


def shown_at_screen_size(widget, png: bytes) -> None:
    """Show a figure's PNG (drawn at figures.DPI) in an Image widget at SCREEN_DPI, about a screen's: left to
    itself the browser stretches it to the page's width."""
    with Image.open(io.BytesIO(png)) as picture:
        width = picture.width
    widget.value = png
    widget.layout.width = f"{round(width * SCREEN_DPI / figures.DPI)}px"
    widget.layout.max_width = "100%"  # a narrower page shrinks it


def slider_latency(app: ExplorerApp, moves: int = 100) -> np.ndarray:
    """Milliseconds per slider move in the kernel, as `moves` moves of the sliders in turn (each from a
    person's drag: the value set, the decoder run, the PNG encoded and handed to the widget). The
    browser's share (a websocket message each way, decoding a 6 kB PNG) comes on top."""
    times = []
    for k in range(moves):
        slider = app.sliders[k % len(app.sliders)]
        value = slider.max if slider.value < slider.max else slider.min  # a change each time
        start = time.perf_counter()
        slider.value = value
        times.append(1000 * (time.perf_counter() - start))
    app.reset_dimensions()
    return np.array(times)
