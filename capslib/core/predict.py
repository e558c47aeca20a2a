"""Classify your own images (`capslib predict`): any PNG or JPEG, converted the way MNIST was made.

MNIST's digits were size-normalised to fit a 20×20 box preserving their aspect ratio (the
anti-aliasing gives grey levels), then centred in 28×28 by their centre of mass (LeCun et al.).
A model trained on them expects exactly that, so `mnist_like` repeats it for an image of any size
or colour.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .datasets import dataset_info
from .errors import CapslibError, DataError
from .files import atomic_path

# What `capslib predict --help` and the README say the conversion does.
CONVERSION = """\
Each image (PNG, JPEG, any size or colour) is converted as MNIST was made:
  1. greyscale (a 16-bit PNG scaled by its bit depth; transparent pixels count as background);
     with --invert, dark ink on a light ground (a pen on paper) becomes light on dark, as in MNIST;
  2. the ground set to 0 (its level: the image's median) and the ink stretched to 1;
  3. cropped to the bounding box of the ink, resized so that its longer side is 20 pixels
     (aspect ratio kept, anti-aliased);
  4. placed in a 28×28 image with its centre of mass at the centre;
  5. for a model of expanded MNIST (40×40), that image placed in the middle of the 40×40 frame
     (zero padding), as the expanded test set's digits are, unshifted. A MultiMNIST model reads two
     overlapping digits: predict refuses it (capslib evaluate scores it)."""

SIZE, BOX = 28, 20
CENTRE = 14.0  # row and column index of MNIST's centres of mass (measured: 14.0 ± 0.3 on its test images)
INK = 0.05     # pixels above this (after step 2) count as ink for the bounding box: above JPEG noise


def read_grey(path: Path | str | BinaryIO, invert: bool = False, name: str | None = None) -> np.ndarray:
    """The image at `path` (or in a binary file object: an upload's bytes in io.BytesIO) as greyscale
    in [0, 1], light ink on a dark ground (steps 1 of CONVERSION). Errors name it `name` (default: the path)."""
    source = path if hasattr(path, "read") else Path(path)
    name = name or str(source)
    try:
        with Image.open(source) as image:
            png = image.format == "PNG"
            image = ImageOps.exif_transpose(image)  # photos: the orientation the camera recorded
            if image.mode in WIDE_GREY:
                grey = _wide_grey(image, png, invert, name)
            else:
                if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                    ground = Image.new("RGBA", image.size, "white" if invert else "black")
                    image = Image.alpha_composite(ground, image.convert("RGBA"))
                grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as err:
        reason = str(err).splitlines()[0][:100] if str(err) else type(err).__name__
        raise DataError(f"{name}: not a readable image ({reason})") from None
    return 1.0 - grey if invert else grey


# Greyscale modes of more than 8 bits. Pillow's convert("L") clips them at 255 instead of scaling, so a
# 16-bit PNG (0-65535) would reach the model as 0/1 ink: these are scaled by their bit depth instead.
WIDE_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _wide_grey(image: Image.Image, png: bool, invert: bool, name: str) -> np.ndarray:
    """A 16-bit greyscale image in [0, 1], scaled by its bit depth; a transparent grey level (PNG's tRNS)
    counts as background. A PNG holds at most 16 bits a pixel (some Pillow versions open 16-bit grey
    as mode I); 32-bit integer or float images of other formats are refused: their range says nothing
    of where white is."""
    if not (image.mode.startswith("I;16") or (image.mode == "I" and png)):
        raise DataError(f"{name}: a 32-bit greyscale image (mode {image.mode}), whose white level is unknown: "
                        "save it as an 8- or 16-bit PNG")
    pixels = np.asarray(image, dtype=np.float32)
    transparent = image.info.get("transparency")
    if isinstance(transparent, int):
        pixels = np.where(pixels == transparent, 65535.0 if invert else 0.0, pixels)
    return pixels / 65535.0


def mnist_like(grey: np.ndarray, name: str = "image") -> np.ndarray:
    """A greyscale image (light ink on dark, [0, 1]) as a 28×28 MNIST-like image (steps 2-4)."""
    ground = float(np.median(grey))
    if ground > 0.5:
        raise DataError(f"{name}: the image is mostly light, which looks like dark ink on a light ground: "
                        "pass --invert")
    span = float(grey.max()) - ground
    if span <= 0.05:
        raise DataError(f"{name}: no ink found (the image is almost one flat colour)")
    ink = np.clip((grey - ground) / span, 0.0, 1.0)
    rows, cols = np.nonzero(ink > INK)
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    height, width = ink.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    fitted = np.asarray(Image.fromarray(ink).resize(size, Image.Resampling.LANCZOS), dtype=np.float32)
    fitted = np.clip(fitted, 0.0, 1.0)
    weight = fitted.sum()
    centre_row = (fitted.sum(axis=1) * np.arange(fitted.shape[0])).sum() / weight
    centre_col = (fitted.sum(axis=0) * np.arange(fitted.shape[1])).sum() / weight
    top, left = round(CENTRE - centre_row), round(CENTRE - centre_col)
    canvas = np.zeros((SIZE, SIZE), np.float32)
    # paste, clipped to the canvas (a very lopsided shape may push a few pixels off the edge)
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + fitted.shape[0], SIZE), min(left + fitted.shape[1], SIZE)
    canvas[r0:r1, c0:c1] = fitted[r0 - top:r1 - top, c0 - left:c1 - left]
    return canvas


def load_images(paths: list[Path | str], invert: bool = False) -> torch.Tensor:
    """N×1×28×28 MNIST-like images of `paths`; a file that cannot be used raises DataError naming it."""
    import torch  # here, not at the top: `capslib --help` shows this module's CONVERSION without torch

    return torch.from_numpy(np.stack([mnist_like(read_grey(p, invert), str(p)) for p in paths])).unsqueeze(1)


def in_frame(images: torch.Tensor, dataset: str, checkpoint: Path | str) -> torch.Tensor:
    """N×1×28×28 MNIST-like images as the input of a model trained on `dataset` (step 5 of CONVERSION):
    centred in its frame, zero padded (expanded MNIST: 40×40). A MultiMNIST model, whose every input
    holds two overlapping digits of different classes, is refused by name (a CapslibError)."""
    import torch.nn.functional as F

    info = dataset_info(dataset)
    if info.targets > 1:
        raise CapslibError(f"{checkpoint}: a {dataset} model reads two overlapping digits ({info.image_size}×"
                           f"{info.image_size}); predict classifies one digit per image (capslib evaluate scores "
                           "this model)")
    return F.pad(images, (info.pad,) * 4)


def save_grey(image: torch.Tensor | np.ndarray, path: Path | str) -> None:
    """A square image in [0, 1] (any leading dimensions of size 1) as an 8-bit greyscale PNG, written
    atomically (a failed write is a CapslibError naming the file)."""
    pixels = np.asarray(image, dtype=np.float32).squeeze()
    with atomic_path(path) as tmp:
        Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(tmp, format="PNG")
