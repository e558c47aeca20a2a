"""`capslib predict`: your own images, converted the way MNIST was made, then classified.

- the conversion (capslib.core.predict): an MNIST digit converts to itself; the same digit enlarged,
  drawn dark on light in colour and saved as JPEG converts back close to it; bad images are
  refused by name;
- the command: prints the class and the 10 capsule lengths the model gives the original digit;
  mistakes are one line and exit status 2.

One tiny checkpoint (64 training images, 1 epoch, CPU) is trained per module: the tests check that
the command reports what the model computes, not what a trained model would say.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from capslib.core import data as D
from capslib.core.datasets import DATASETS
from capslib.core import predict as P
from capslib.core.checkpoint import load_model, model_for, save_checkpoint
from capslib.core.config import TrainConfig
from capslib.core.errors import DataError
from capslib.core.evaluate import predict as model_scores
from capslib.core.train import train

from helpers import cli, one_line


@pytest.fixture(scope="module")
def test_digits():
    images, labels = D.load_split(DATASETS["mnist"].default_root, "test", "mnist")
    return images[:50], labels[:50]


def grey(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("predict_run")
    config = TrainConfig(epochs=1, batch_size=32, train_subset=64, test_subset=20, routing_iterations=1,
                         device="cpu", ckpt_dir=str(folder))
    train(config, log=lambda *_: None)
    return folder






# ---------------------------------------------------------------------------------------------
# the conversion


def test_an_mnist_digit_converts_to_itself(test_digits):
    images, _ = test_digits
    for image in images[:20]:
        converted = P.mnist_like(grey(image))
        assert converted.shape == (28, 28) and converted.dtype == np.float32
        assert np.abs(converted - grey(image)).max() < 0.05


def dark_on_light_photo(image: np.ndarray, path: Path) -> Path:
    """The digit enlarged 10×, dark ink on an off-white ground, off-centre on a wider RGB canvas."""
    ink = Image.fromarray(255 - image).resize((280, 280), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (520, 360), (250, 248, 240))
    canvas.paste(ink.convert("RGB"), (60, 50))
    canvas.save(path, quality=92)
    return path


def test_a_large_dark_on_light_colour_jpeg_converts_back_close_to_the_digit(test_digits, tmp_path):
    images, _ = test_digits
    for k in (0, 1, 2):
        path = dark_on_light_photo(images[k], tmp_path / f"photo{k}.jpg")
        converted = P.mnist_like(P.read_grey(path, invert=True))
        assert np.abs(converted - grey(images[k])).mean() < 0.05
        # centred like MNIST: the centre of mass at (14, 14)
        rows, cols = np.indices(converted.shape)
        centre = (rows * converted).sum() / converted.sum(), (cols * converted).sum() / converted.sum()
        assert centre == pytest.approx((14, 14), abs=0.75)


def test_transparent_pixels_are_background(tmp_path):
    rgba = np.zeros((60, 40, 4), np.uint8)
    rgba[10:50, 15:25] = (0, 0, 0, 255)  # an opaque black bar on a transparent ground
    Image.fromarray(rgba).save(tmp_path / "bar.png")
    converted = P.mnist_like(P.read_grey(tmp_path / "bar.png", invert=True))
    assert converted.max() == pytest.approx(1.0)
    rows, cols = np.nonzero(converted > 0.5)
    assert rows.max() - rows.min() + 1 == 20  # the longer side fits the 20-pixel box


def test_a_16_bit_png_converts_as_its_8_bit_copy(test_digits, tmp_path):
    """Pillow's convert("L") clips 16-bit grey at 255: the ×257 copy of a digit would become 0/1 ink."""
    images, _ = test_digits
    for k in (0, 1):
        Image.fromarray(images[k].astype(np.uint16) * 257).save(tmp_path / f"wide{k}.png")
        with Image.open(tmp_path / f"wide{k}.png") as saved:
            assert saved.mode.startswith("I;16")  # what a 16-bit PNG opens as: the case under test
        read = P.read_grey(tmp_path / f"wide{k}.png")
        np.testing.assert_allclose(read, grey(images[k]), atol=1e-6)
        np.testing.assert_allclose(P.read_grey(tmp_path / f"wide{k}.png", invert=True), 1 - grey(images[k]),
                                   atol=1e-6)


def test_a_32_bit_grey_image_is_refused_by_name(tmp_path):
    Image.fromarray(np.full((30, 30), 70_000, np.int32), mode="I").save(tmp_path / "wide.tiff")
    with pytest.raises(DataError, match=r"wide.tiff: a 32-bit greyscale image .*8- or 16-bit"):
        P.read_grey(tmp_path / "wide.tiff")


def test_unusable_images_are_refused_by_name(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DataError, match="notes.png: not a readable image"):
        P.read_grey(tmp_path / "notes.png")
    Image.new("L", (30, 30), 0).save(tmp_path / "black.png")
    with pytest.raises(DataError, match="black.png: no ink found"):
        P.load_images([tmp_path / "black.png"])
    Image.new("L", (30, 30), 255).save(tmp_path / "paper.png")
    with pytest.raises(DataError, match="paper.png: .*pass --invert"):
        P.load_images([tmp_path / "paper.png"])


# ---------------------------------------------------------------------------------------------
# the command


def test_predict_prints_the_class_and_capsule_lengths_of_a_saved_test_digit(checkpoint, test_digits, tmp_path):
    images, _ = test_digits
    path = tmp_path / "digit.png"
    Image.fromarray(images[0]).save(path)
    code, out, err = cli("predict", path, "--ckpt-path", checkpoint, "--device", "cpu")
    assert code == 0, err
    model, _, _ = load_model(checkpoint, "cpu")
    lengths = model_scores(model, torch.from_numpy(grey(images[0])).reshape(1, 1, 28, 28))[0][0]
    expected = int(lengths.argmax())
    (line,) = out.splitlines()
    assert line.startswith(f"{path}: {expected}  (capsule lengths: ")
    listed = [float(x) for x in line.split("capsule lengths: ")[1].rstrip(")").split()[1::2]]
    assert listed == pytest.approx(lengths.tolist(), abs=2e-3)


def test_predict_gives_a_16_bit_png_the_scores_of_its_8_bit_copy(checkpoint, test_digits, tmp_path):
    images, _ = test_digits
    Image.fromarray(images[3]).save(tmp_path / "narrow.png")
    Image.fromarray(images[3].astype(np.uint16) * 257).save(tmp_path / "wide.png")
    code, out, err = cli("predict", tmp_path / "narrow.png", tmp_path / "wide.png", "--ckpt-path", checkpoint,
                         "--device", "cpu", "--save-converted", tmp_path / "seen")
    assert code == 0, err
    narrow, wide = out.splitlines()
    assert narrow.split(": ", 1)[1] == wide.split(": ", 1)[1]
    with Image.open(tmp_path / "seen" / "narrow.28x28.png") as a, Image.open(tmp_path / "seen" / "wide.28x28.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b)) and len(np.unique(np.asarray(b))) > 10


def test_predict_several_images_with_invert_and_saved_conversions(checkpoint, test_digits, tmp_path):
    images, _ = test_digits
    paths = [dark_on_light_photo(images[k], tmp_path / f"photo{k}.jpg") for k in (1, 2)]
    code, out, err = cli("predict", *paths, "--invert", "--ckpt-path", checkpoint, "--device", "cpu",
                         "--save-converted", tmp_path / "seen")
    assert code == 0, err
    assert [line.split(":")[0] for line in out.splitlines()] == [str(p) for p in paths]
    for k in (1, 2):
        with Image.open(tmp_path / "seen" / f"photo{k}.28x28.png") as saved:
            assert saved.size == (28, 28) and saved.mode == "L"


@pytest.mark.parametrize("make_file, invert, message", [
    (lambda p: p.write_text("plain text"), False, "not a readable image"),
    (lambda p: Image.new("L", (40, 40), 255).save(p, format="PNG"), False, "pass --invert"),
    (lambda p: Image.new("RGB", (40, 40), "white").save(p, format="PNG"), True, "no ink found"),
])
def test_predict_mistakes_are_one_line_and_exit_2(checkpoint, tmp_path, make_file, invert, message):
    path = tmp_path / "image.png"
    make_file(path)
    code, out, err = cli("predict", path, *(["--invert"] if invert else []), "--ckpt-path", checkpoint,
                         "--device", "cpu")
    assert code == 2 and out == ""
    line = one_line(err)
    assert line.startswith("capslib predict: error:") and str(path) in line and message in line


def test_predict_missing_image_is_named(checkpoint, tmp_path):
    code, out, err = cli("predict", tmp_path / "nope.png", "--ckpt-path", checkpoint)
    assert code == 2 and out == ""
    assert "nope.png does not exist" in one_line(err)


def untrained(folder: Path, dataset: str) -> Path:
    """The checkpoint of an untrained CapsNet for `dataset`, W × 30 so that its capsules differ in length
    (conftest.early_capsnet says why)."""
    config = TrainConfig(dataset=dataset, routing_iterations=1, reconstruction=False)
    model = model_for(config)
    with torch.no_grad():
        model.W.mul_(30)
    path = folder / f"{dataset}.pt"
    save_checkpoint(path, model, None, 1, config, [])
    return path


def printed_lengths(line: str) -> list[float]:
    return [float(x) for x in line.split("capsule lengths: ")[1].rstrip(")").split()[1::2]]


def test_an_expanded_mnist_model_reads_the_digit_in_the_middle_of_its_40x40_frame(test_digits, tmp_path):
    """An expanded-MNIST model (40×40 input) used to fail with a traceback from its primary capsules:
    the converted digit is now placed unshifted in its frame, and --save-converted writes that frame."""
    images, _ = test_digits
    path = tmp_path / "digit.png"
    Image.fromarray(images[3]).save(path)
    checkpoint = untrained(tmp_path, "mnist-expanded")
    code, out, err = cli("predict", path, "--ckpt-path", checkpoint, "--device", "cpu", "--save-converted",
                         tmp_path / "seen")
    assert code == 0, err
    framed = np.zeros((40, 40), np.float32)
    framed[6:34, 6:34] = P.mnist_like(grey(images[3]))
    model, _, _ = load_model(checkpoint, "cpu")
    lengths = model_scores(model, torch.from_numpy(framed).reshape(1, 1, 40, 40))[0][0]
    (line,) = out.splitlines()
    assert line.startswith(f"{path}: {int(lengths.argmax())}  (capsule lengths: ")
    assert printed_lengths(line) == pytest.approx(lengths.tolist(), abs=2e-3)
    assert lengths.max() - lengths.min() > 0.05  # the comparison tells placements apart
    with Image.open(tmp_path / "seen" / "digit.40x40.png") as saved:
        assert np.abs(np.asarray(saved, np.float32) / 255 - framed).max() <= 0.5 / 255 + 1e-6


def test_a_multimnist_model_is_refused_in_one_line(test_digits, tmp_path):
    images, _ = test_digits
    path = tmp_path / "digit.png"
    Image.fromarray(images[0]).save(path)
    checkpoint = untrained(tmp_path, "multimnist")
    code, out, err = cli("predict", path, "--ckpt-path", checkpoint, "--device", "cpu")
    assert code == 2 and out == ""
    line = one_line(err)
    assert str(checkpoint) in line and "two overlapping digits" in line and "capslib evaluate" in line


@pytest.mark.parametrize("case", ["folder-is-a-file", "converted-exists", "two-images-one-name"])
def test_save_converted_never_replaces_a_file_unasked(checkpoint, test_digits, tmp_path, case):
    """--save-converted onto a file used to print the predictions, then a traceback; a converted image
    already there was replaced silently. Now each is one line, before anything is printed or written."""
    images, _ = test_digits
    paths = [tmp_path / "a" / "digit.png", tmp_path / "b" / "digit.png"]
    for path, image in zip(paths, images):
        path.parent.mkdir()
        Image.fromarray(image).save(path)
    seen = tmp_path / "seen"
    if case == "folder-is-a-file":
        seen.write_text("my notes")
    elif case == "converted-exists":
        seen.mkdir()
        (seen / "digit.28x28.png").write_text("an earlier file")
    given = paths if case == "two-images-one-name" else paths[:1]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, out, err = cli("predict", *given, "--ckpt-path", checkpoint, "--device", "cpu", "--save-converted", seen)
    assert code == 2 and out == ""
    line = one_line(err)
    assert line.startswith("capslib predict: error: --save-converted") and str(seen) in line
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    if case == "converted-exists":
        assert "--overwrite" in line
        code, out, err = cli("predict", *given, "--ckpt-path", checkpoint, "--device", "cpu", "--save-converted",
                             seen, "--overwrite")
        assert code == 0 and len(out.splitlines()) == 1, err
        with Image.open(seen / "digit.28x28.png") as saved:
            assert saved.size == (28, 28)


def test_predict_help_states_the_conversion():
    code, out, _ = cli("predict", "--help")
    assert code == 0
    for step in ("greyscale", "--invert", "20 pixels", "28×28", "centre of mass"):
        assert step in out
