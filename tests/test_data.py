"""Tests of capslib.core.data: the real MNIST / Fashion-MNIST files, IDX validation, and the
tensors, shifts and epoch streams fed to the model.

The 47 MB train-images files are parsed once per dataset (module-scoped fixture); every
corruption test works on tiny synthetic IDX files or copies of the small t10k files.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from capslib.core import data as D
from capslib.core.datasets import DATASETS
from capslib.core.errors import CapslibError, DataError
from helpers import expected_shift

DATA_ROOT = Path(__file__).resolve().parent.parent / "data"
IMAGES, LABELS = D.SPLIT_FILES["test"]  # t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte
TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
              np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


# ---------------------------------------------------------------------------------------------
# helpers


def idx_bytes(array: np.ndarray, type_code: int | None = None, shape: tuple[int, ...] | None = None) -> bytes:
    """The IDX encoding of `array`; `type_code` / `shape` override the header (to corrupt it)."""
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    code = TYPE_CODES[np.dtype(dtype)] if type_code is None else type_code
    dims = array.shape if shape is None else shape
    header = bytes([0, 0, code, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)
    return header + array.astype(dtype).tobytes()


def write(path: Path, content: bytes, compress: bool = False) -> Path:
    path.write_bytes(gzip.compress(content, compresslevel=1) if compress else content)
    return path


def synthetic_images(n: int, size: tuple[int, int] = (28, 28), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *size), dtype=np.uint8)


def real_labels(dataset: str = "mnist") -> np.ndarray:
    return D.read_idx(DATA_ROOT / dataset / f"{LABELS}.gz")


def split_folder(tmp_path: Path, images: bytes | None, labels: bytes | None,
                name: str = "ds") -> Path:
    """A folder with a test split: raw synthetic images, labels as given (raw) or None (absent)."""
    root = tmp_path / name
    root.mkdir()
    if images is not None:
        write(root / IMAGES, images)
    if labels is not None:
        write(root / LABELS, labels)
    return root


def assert_names(err: pytest.ExceptionInfo, *parts: object) -> None:
    message = str(err.value)
    for part in parts:
        assert str(part) in message, f"{part!s} not in {message!r}"


def md5_file(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def read_sums(path: Path) -> dict[str, str]:
    sums = {}
    for line in path.read_text().splitlines():
        digest, name = line.split()
        sums[name] = digest
    return sums


# ---------------------------------------------------------------------------------------------
# the real files (each dataset parsed once, with MD5 verification on)


@pytest.fixture(scope="module", params=["mnist", "fashion-mnist"])
def real(request) -> D.Dataset:
    return D.load_dataset(request.param)  # verify=True: raises DataError on any MD5 mismatch


@pytest.fixture(scope="module")
def mnist_t10k_images_raw() -> bytes:
    return gzip.decompress((DATA_ROOT / "mnist" / f"{IMAGES}.gz").read_bytes())


# Images per class of each split: MNIST's published counts; Fashion-MNIST is exactly balanced.
CLASS_COUNTS = {
    "mnist": {60000: [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
              10000: [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]},
    "fashion-mnist": {60000: [6000] * 10, 10000: [1000] * 10},
}


def test_real_dataset_shapes_dtypes_and_labels(real):
    assert real.root == DATA_ROOT / real.info.name == real.info.default_root
    for images, labels, n in ((real.train_images, real.train_labels, 60000),
                              (real.test_images, real.test_labels, 10000)):
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.int64
        assert np.bincount(labels, minlength=10).tolist() == CLASS_COUNTS[real.info.name][n], real.info.name
        assert images.min() == 0 and images.max() == 255


def test_real_dataset_pixel_means(real):
    # The well-known normalisation constants: MNIST 0.1307, Fashion-MNIST 0.2860.
    expected = {"mnist": 0.1307, "fashion-mnist": 0.2860}[real.info.name]
    assert real.train_images.mean() / 255 == pytest.approx(expected, abs=5e-4)


def test_real_dataset_train_and_test_differ(real):
    assert not np.array_equal(real.train_images[:100], real.test_images[:100])


def test_real_images_are_not_mostly_blank(real):
    # Every image has ink: guards against a reader that returns zeros or misaligned bytes.
    assert (real.train_images.reshape(60000, -1).max(axis=1) > 100).all()
    assert (real.test_images.reshape(10000, -1).max(axis=1) > 100).all()


def test_registry_classes():
    assert D.dataset_info("mnist").classes == tuple("0123456789")
    fashion = D.dataset_info("fashion-mnist")
    assert len(fashion.classes) == 10
    assert fashion.classes[0] == "T-shirt/top" and fashion.classes[-1] == "Ankle boot"
    assert set(DATASETS) == {"mnist", "fashion-mnist", "multimnist", "mnist-expanded"}
    for generated, size in (("multimnist", 36), ("mnist-expanded", 40)):  # made from MNIST's IDX files
        info = D.dataset_info(generated)
        assert info.default_root == D.dataset_info("mnist").default_root and info.image_size == size


def test_classes_property(real):
    assert real.classes == real.info.classes == DATASETS[real.info.name].classes


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_registry_md5_matches_md5sums_files(dataset):
    folder = DATA_ROOT / dataset
    assert read_sums(folder / "MD5SUMS-decompressed") == D.dataset_info(dataset).md5
    gz_sums = read_sums(folder / "MD5SUMS")
    assert set(gz_sums) == {f"{stem}.gz" for stem in D.dataset_info(dataset).md5}
    for name, digest in gz_sums.items():
        assert md5_file(folder / name) == digest, name


def test_md5sums_differ_between_datasets():
    assert set(DATASETS["mnist"].md5.values()).isdisjoint(DATASETS["fashion-mnist"].md5.values())


# ---------------------------------------------------------------------------------------------
# gzip and raw copies


@pytest.mark.parametrize("stem", [IMAGES, LABELS])
def test_read_idx_gzip_and_raw_agree(tmp_path, stem, mnist_t10k_images_raw):
    source = DATA_ROOT / "mnist" / f"{stem}.gz"
    raw = mnist_t10k_images_raw if stem == IMAGES else gzip.decompress(source.read_bytes())
    raw_copy = write(tmp_path / stem, raw)
    md5 = D.dataset_info("mnist").md5[stem]
    from_gz = D.read_idx(source, md5)
    from_raw = D.read_idx(raw_copy, md5)
    np.testing.assert_array_equal(from_gz, from_raw)
    assert from_gz.shape == ((10000, 28, 28) if stem == IMAGES else (10000,))
    assert from_gz.flags.writeable  # a copy, not a read-only view of the file's bytes


def test_load_split_raw_folder_matches_gzip_folder(tmp_path, mnist_t10k_images_raw):
    raw_root = tmp_path / "raw"
    raw_root.mkdir()
    write(raw_root / IMAGES, mnist_t10k_images_raw)
    write(raw_root / LABELS, gzip.decompress((DATA_ROOT / "mnist" / f"{LABELS}.gz").read_bytes()))
    images_raw, labels_raw = D.load_split(raw_root, "test", "mnist")  # verify=True passes on raw too
    images_gz, labels_gz = D.load_split(DATA_ROOT / "mnist", "test", "mnist")
    np.testing.assert_array_equal(images_raw, images_gz)
    np.testing.assert_array_equal(labels_raw, labels_gz)
    assert labels_raw.dtype == np.int64


def test_gzip_preferred_when_both_exist(tmp_path):
    root = tmp_path / "both"
    root.mkdir()
    write(root / f"{LABELS}.gz", idx_bytes(np.array([1, 2], np.uint8)), compress=True)
    write(root / LABELS, idx_bytes(np.array([3, 4, 5], np.uint8)))
    assert D.find_idx_file(root, LABELS) == root / f"{LABELS}.gz"
    np.testing.assert_array_equal(D.read_idx(D.find_idx_file(root, LABELS)), [1, 2])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, ">i2", ">i4", ">f4", ">f8"])
@pytest.mark.parametrize("compress", [False, True])
def test_parse_idx_round_trips_every_type(tmp_path, dtype, compress):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype) if dtype != np.uint8 \
        else np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write(tmp_path / "a.idx", idx_bytes(array), compress)
    out = D.read_idx(path)
    assert out.shape == (2, 3, 4) and out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, array)


def test_synthetic_split_and_subsets(tmp_path):
    root = tmp_path / "syn"
    root.mkdir()
    train_images, test_images = synthetic_images(30, seed=1), synthetic_images(12, seed=2)
    train_labels, test_labels = np.arange(30, dtype=np.uint8) % 10, np.arange(12, dtype=np.uint8) % 10
    for stem, array in zip(D.SPLIT_FILES["train"] + D.SPLIT_FILES["test"],
                           (train_images, train_labels, test_images, test_labels)):
        write(root / f"{stem}.gz", idx_bytes(array), compress=True)
    with pytest.raises(DataError) as err:  # not the real bytes: MD5 check fails
        D.load_dataset("mnist", root)
    assert_names(err, root / f"{D.SPLIT_FILES['train'][0]}.gz", "MD5")
    ds = D.load_dataset("mnist", str(root), verify=False, train_subset=7, test_subset=5)
    assert ds.root == root
    np.testing.assert_array_equal(ds.train_images, train_images[:7])
    np.testing.assert_array_equal(ds.train_labels, train_labels[:7])
    np.testing.assert_array_equal(ds.test_images, test_images[:5])
    np.testing.assert_array_equal(ds.test_labels, test_labels[:5])
    assert ds.train_labels.dtype == np.int64
    full = D.load_dataset("fashion-mnist", root, verify=False)
    assert len(full.train_images) == 30 and len(full.test_labels) == 12
    assert full.classes[-1] == "Ankle boot"


# ---------------------------------------------------------------------------------------------
# corruption: every problem is a DataError naming the file


GOOD_LABELS = idx_bytes(np.arange(5, dtype=np.uint8))
GOOD_IMAGES = idx_bytes(synthetic_images(5))


def load_test_split(root: Path, dataset: str = "mnist"):
    return D.load_split(root, "test", dataset, verify=False)


def test_synthetic_good_folder_loads(tmp_path):
    # The baseline for the corruption tests below: the same folder, uncorrupted, loads.
    images, labels = load_test_split(split_folder(tmp_path, GOOD_IMAGES, GOOD_LABELS))
    assert images.shape == (5, 28, 28) and labels.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("magic", [b"\x01\x00\x08\x03", b"\x00\x01\x08\x03", b"\x00\x00\x08\x00",
                                   b"\x1e\x8b\x08\x03"])
def test_wrong_magic(tmp_path, magic):
    root = split_folder(tmp_path, magic + GOOD_IMAGES[4:], GOOD_LABELS)
    with pytest.raises(DataError, match="magic") as err:
        load_test_split(root)
    assert_names(err, root / IMAGES)


@pytest.mark.parametrize("code", [0x00, 0x07, 0x0A, 0x0F, 0xFF])
def test_unknown_type_code(tmp_path, code):
    root = split_folder(tmp_path, GOOD_IMAGES, idx_bytes(np.arange(5, dtype=np.uint8), type_code=code))
    with pytest.raises(DataError) as err:
        load_test_split(root)
    assert_names(err, root / LABELS, f"0x0000{code:02x}01")


def test_labels_with_wrong_dtype(tmp_path):
    # A well-formed IDX file of int32 labels (type 0x0C) with values in range: wrong dtype.
    labels = idx_bytes(np.arange(5).astype(">i4"))
    assert labels[2] == 0x0C
    root = split_folder(tmp_path, GOOD_IMAGES, labels)
    with pytest.raises(DataError, match="uint8") as err:
        load_test_split(root)
    assert_names(err, root / LABELS)


def test_images_with_wrong_dtype(tmp_path):
    root = split_folder(tmp_path, idx_bytes(synthetic_images(5).astype(np.float32)), GOOD_LABELS)
    with pytest.raises(DataError, match="uint8") as err:
        load_test_split(root)
    assert_names(err, root / IMAGES)


@pytest.mark.parametrize("shape", [(5, 784), (5, 28, 28, 1), (5 * 784,)])
def test_images_with_wrong_number_of_dimensions(tmp_path, shape):
    root = split_folder(tmp_path, idx_bytes(synthetic_images(5).reshape(shape)), GOOD_LABELS)
    with pytest.raises(DataError, match="3 dimensions") as err:
        load_test_split(root)
    assert_names(err, root / IMAGES)


def test_labels_with_wrong_number_of_dimensions(tmp_path):
    root = split_folder(tmp_path, GOOD_IMAGES, idx_bytes(np.zeros((5, 1), np.uint8)))
    with pytest.raises(DataError, match="1 dimension") as err:
        load_test_split(root)
    assert_names(err, root / LABELS)


@pytest.mark.parametrize("size", [(27, 28), (28, 27), (32, 32)])
def test_wrong_image_size(tmp_path, size):
    root = split_folder(tmp_path, idx_bytes(synthetic_images(5, size)), GOOD_LABELS)
    with pytest.raises(DataError, match=f"{size[0]}x{size[1]}") as err:
        load_test_split(root)
    assert_names(err, root / IMAGES)


@pytest.mark.parametrize("cut", [1, 784, 784 * 5])
def test_truncated_images(tmp_path, cut):
    root = split_folder(tmp_path, GOOD_IMAGES[:-cut], GOOD_LABELS)
    with pytest.raises(DataError, match="header says") as err:
        load_test_split(root)
    assert_names(err, root / IMAGES)


def test_header_claims_more_images_than_present(tmp_path):
    root = split_folder(tmp_path, idx_bytes(synthetic_images(5), shape=(6, 28, 28)), GOOD_LABELS)
    with pytest.raises(DataError) as err:
        load_test_split(root)
    assert_names(err, root / IMAGES)


@pytest.mark.parametrize("content", [b"", b"\x00\x00", b"\x00\x00\x08\x03\x00\x00\x00\x05\x00\x00"])
def test_truncated_header(tmp_path, content):
    root = split_folder(tmp_path, content, GOOD_LABELS)
    with pytest.raises(DataError) as err:
        load_test_split(root)
    assert_names(err, root / IMAGES)


@pytest.mark.parametrize("extra", [b"\x00", b"\x00" * 784, b"junk"])
def test_trailing_bytes(tmp_path, extra):
    root = split_folder(tmp_path, GOOD_IMAGES, GOOD_LABELS + extra)
    with pytest.raises(DataError, match="header says") as err:
        load_test_split(root)
    assert_names(err, root / LABELS)


@pytest.mark.parametrize("bad", [10, 11, 255])
def test_label_out_of_range(tmp_path, bad):
    labels = real_labels()
    labels[1234] = bad
    root = split_folder(tmp_path, idx_bytes(synthetic_images(10000)), idx_bytes(labels))
    with pytest.raises(DataError, match=f"label {bad} ") as err:
        load_test_split(root)
    assert_names(err, root / LABELS)


def test_label_nine_is_accepted(tmp_path):
    root = split_folder(tmp_path, GOOD_IMAGES, idx_bytes(np.array([9, 9, 0, 9, 9], np.uint8)))
    assert load_test_split(root)[1].tolist() == [9, 9, 0, 9, 9]


def test_count_mismatch(tmp_path):
    root = tmp_path / "mismatch"
    root.mkdir()
    shutil.copy(DATA_ROOT / "mnist" / f"{LABELS}.gz", root / f"{LABELS}.gz")  # 10000 labels
    write(root / IMAGES, idx_bytes(synthetic_images(9999)))
    with pytest.raises(DataError, match="9999 images") as err:
        load_test_split(root)
    assert_names(err, root, IMAGES, LABELS, "10000 labels")


def test_truncated_gzip(tmp_path):
    root = tmp_path / "gz"
    root.mkdir()
    content = (DATA_ROOT / "mnist" / f"{LABELS}.gz").read_bytes()
    write(root / f"{LABELS}.gz", content[: len(content) // 2])
    write(root / IMAGES, idx_bytes(synthetic_images(10000)))
    with pytest.raises(DataError, match="gzip") as err:
        load_test_split(root)
    assert_names(err, root / f"{LABELS}.gz")


def test_gzip_with_damaged_body(tmp_path):
    root = tmp_path / "gz"
    root.mkdir()
    content = bytearray((DATA_ROOT / "mnist" / f"{LABELS}.gz").read_bytes())
    for i in range(100, 200):  # scramble part of the deflate stream (breaks it or its CRC)
        content[i] ^= 0x5A
    write(root / f"{LABELS}.gz", bytes(content))
    write(root / IMAGES, idx_bytes(synthetic_images(10000)))
    with pytest.raises(DataError, match="gzip") as err:
        load_test_split(root)
    assert_names(err, root / f"{LABELS}.gz")


@pytest.mark.parametrize("compress", [False, True])
def test_md5_mismatch_then_verify_false_loads(tmp_path, mnist_t10k_images_raw, compress):
    root = tmp_path / "md5"
    root.mkdir()
    flipped = bytearray(mnist_t10k_images_raw)
    offset = 16 + 123 * 784 + 14 * 28 + 14  # a pixel in the middle of image 123
    flipped[offset] ^= 0xFF
    image_path = write(root / (f"{IMAGES}.gz" if compress else IMAGES), bytes(flipped), compress)
    shutil.copy(DATA_ROOT / "mnist" / f"{LABELS}.gz", root / f"{LABELS}.gz")
    with pytest.raises(DataError, match="MD5") as err:
        D.load_split(root, "test", "mnist")
    assert_names(err, image_path, D.dataset_info("mnist").md5[IMAGES],
                 hashlib.md5(bytes(flipped)).hexdigest())
    images, labels = D.load_split(root, "test", "mnist", verify=False)
    original = np.frombuffer(mnist_t10k_images_raw, np.uint8, offset=16).reshape(10000, 28, 28)
    assert images[123, 14, 14] == original[123, 14, 14] ^ 0xFF
    diff = images != original
    assert diff.sum() == 1 and diff[123, 14, 14]
    assert len(labels) == 10000


def test_md5_checked_against_the_named_dataset(tmp_path):
    # Real MNIST labels are rejected when declared to be Fashion-MNIST.
    root = tmp_path / "wrong"
    root.mkdir()
    shutil.copy(DATA_ROOT / "mnist" / f"{LABELS}.gz", root / f"{LABELS}.gz")
    with pytest.raises(DataError, match="MD5") as err:
        D.read_idx(root / f"{LABELS}.gz", D.dataset_info("fashion-mnist").md5[LABELS])
    assert_names(err, root / f"{LABELS}.gz")
    assert len(D.read_idx(root / f"{LABELS}.gz", D.dataset_info("mnist").md5[LABELS])) == 10000


@pytest.mark.parametrize("present", ["images", "labels"])
def test_missing_file(tmp_path, present):
    root = split_folder(tmp_path, GOOD_IMAGES if present == "images" else None,
                       GOOD_LABELS if present == "labels" else None)
    missing = LABELS if present == "images" else IMAGES
    with pytest.raises(DataError, match="missing") as err:
        load_test_split(root)
    assert_names(err, root, f"{missing}.gz")


def test_missing_train_split(tmp_path):
    root = split_folder(tmp_path, GOOD_IMAGES, GOOD_LABELS)  # only the test split
    with pytest.raises(DataError, match="missing") as err:
        D.load_dataset("mnist", root, verify=False)
    assert_names(err, root, D.SPLIT_FILES["train"][0])


def test_missing_folder(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as err:
        D.load_dataset("mnist", root)
    assert_names(err, root)


def test_folder_is_a_file(tmp_path):
    root = write(tmp_path / "file", b"")
    with pytest.raises(DataError) as err:
        load_test_split(root)
    assert_names(err, root)


@pytest.mark.parametrize("name", ["kmnist", "MNIST", "", "fashion_mnist"])
def test_unknown_dataset(tmp_path, name):
    for call in (lambda: D.dataset_info(name), lambda: D.load_dataset(name, tmp_path),
                 lambda: D.load_split(tmp_path, "test", name)):
        with pytest.raises(DataError, match="unknown dataset") as err:
            call()
        assert_names(err, repr(name), "mnist", "fashion-mnist")


def test_data_error_is_a_capslib_error():
    assert issubclass(DataError, CapslibError)


# ---------------------------------------------------------------------------------------------
# tensors


def test_to_tensors():
    images = synthetic_images(7)
    images[0] = 0
    images[1] = 255
    labels = np.arange(7, dtype=np.int64) % 10
    before = images.copy()
    x, y = D.to_tensors(images, labels)
    assert x.shape == (7, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (7,) and y.dtype == torch.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert (x[0] == 0).all() and (x[1] == 1).all()
    np.testing.assert_allclose(x[:, 0].numpy(), images / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(y.numpy(), labels)
    np.testing.assert_array_equal(images, before)  # input untouched


def test_to_tensors_real_test_split(real):
    x, y = D.to_tensors(real.test_images[:500], real.test_labels[:500])
    assert x.shape == (500, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert torch.equal(y, torch.from_numpy(real.test_labels[:500]))


SHIFTS = [(0, 0), (1, 0), (0, 1), (-1, 0), (0, -1), (2, 2), (-2, -2), (2, -1), (-1, 2), (-2, 0), (0, 2)]


def test_shift_images_matches_numpy():
    rng = np.random.default_rng(3)
    base = rng.random((len(SHIFTS), 2, 28, 28)).astype(np.float32) + 0.1  # no zeros, 2 channels
    shifts = torch.tensor(SHIFTS)
    out = D.shift_images(torch.from_numpy(base), shifts, pad=2)
    assert out.shape == base.shape and out.dtype == torch.float32
    for n, (dy, dx) in enumerate(SHIFTS):
        np.testing.assert_array_equal(out[n].numpy(), expected_shift(base[n], dy, dx), err_msg=str((dy, dx)))


def test_shift_images_non_square_and_larger_pad():
    rng = np.random.default_rng(4)
    base = rng.random((4, 1, 5, 7)).astype(np.float32) + 0.1
    shifts = [(3, -3), (-3, 1), (0, 3), (-2, -3)]
    out = D.shift_images(torch.from_numpy(base), torch.tensor(shifts), pad=3)
    for n, (dy, dx) in enumerate(shifts):
        np.testing.assert_array_equal(out[n].numpy(), expected_shift(base[n], dy, dx))


def test_shift_images_explicit_example():
    image = torch.zeros(1, 1, 5, 5)
    image[0, 0, 1, 3] = 1.0
    out = D.shift_images(image, torch.tensor([[2, -1]]), pad=2)
    assert out.sum() == 1 and out[0, 0, 3, 2] == 1.0  # down 2, left 1


def point_images(n: int, size: int = 28) -> torch.Tensor:
    images = torch.zeros(n, 1, size, size)
    images[:, 0, size // 2, size // 2] = 1.0
    return images


def pixel_offsets(shifted: torch.Tensor, size: int = 28) -> torch.Tensor:
    flat = shifted.flatten(1)
    assert (flat.sum(1) == 1).all() and ((flat == 0) | (flat == 1)).all()  # pixel kept, not smeared
    pos = flat.argmax(1)
    return torch.stack([pos // size - size // 2, pos % size - size // 2], 1)


def test_random_shift_uses_all_offsets_within_bound():
    shifted = D.random_shift(point_images(2000), 2, torch.Generator().manual_seed(0))
    offsets = pixel_offsets(shifted)
    assert offsets.abs().max() <= 2
    seen, counts = torch.unique(offsets, dim=0, return_counts=True)
    assert len(seen) == 25
    assert counts.min() > 40 and counts.max() < 130  # ~80 each: roughly uniform


@pytest.mark.parametrize("max_shift", [1, 3])
def test_random_shift_other_bounds(max_shift):
    offsets = pixel_offsets(D.random_shift(point_images(1000), max_shift, torch.Generator().manual_seed(1)))
    assert offsets.abs().max() == max_shift
    assert len(torch.unique(offsets, dim=0)) == (2 * max_shift + 1) ** 2


def test_random_shift_is_a_pure_shift_of_each_image():
    rng = np.random.default_rng(5)
    base = rng.random((20, 1, 28, 28)).astype(np.float32) + 0.1
    out = D.random_shift(torch.from_numpy(base), 2, torch.Generator().manual_seed(2)).numpy()
    candidates = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
    for n in range(len(base)):
        matches = [s for s in candidates if np.array_equal(out[n], expected_shift(base[n], *s))]
        assert len(matches) == 1, n


def test_random_shift_deterministic_and_shape_preserving():
    images = torch.rand(64, 1, 28, 28)
    a = D.random_shift(images, 2, torch.Generator().manual_seed(7))
    b = D.random_shift(images, 2, torch.Generator().manual_seed(7))
    c = D.random_shift(images, 2, torch.Generator().manual_seed(8))
    assert a.shape == images.shape and a.dtype == images.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, images)


def test_random_shift_zero_is_identity():
    images = torch.rand(16, 1, 28, 28)
    before = images.clone()
    out = D.random_shift(images, 0, torch.Generator().manual_seed(0))
    assert torch.equal(out, before) and torch.equal(images, before)


# ---------------------------------------------------------------------------------------------
# epoch streams


def labelled_images(n: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(n) % 10
    images = (labels.float() / 10).view(n, 1, 1, 1).expand(n, 1, 28, 28).contiguous()
    return images, labels


def test_epoch_data_is_pure_function_of_seed_and_epoch():
    images, labels = labelled_images()
    torch.manual_seed(0)
    x1, y1 = D.epoch_data(images, labels, seed=3, epoch=5, max_shift=2)
    torch.manual_seed(12345)  # global RNG state must not matter
    torch.rand(100)
    D.epoch_data(images, labels, seed=3, epoch=4, max_shift=2)  # nor what ran before
    x2, y2 = D.epoch_data(images, labels, seed=3, epoch=5, max_shift=2)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_epoch_data_differs_across_epochs_and_seeds():
    n = 300
    images = torch.rand(n, 1, 28, 28)
    labels = torch.arange(n)
    _, y_base = D.epoch_data(images, labels, seed=3, epoch=5, max_shift=2)
    _, y_epoch = D.epoch_data(images, labels, seed=3, epoch=6, max_shift=2)
    _, y_seed = D.epoch_data(images, labels, seed=4, epoch=5, max_shift=2)
    assert not torch.equal(y_base, y_epoch)
    assert not torch.equal(y_base, y_seed)
    assert not torch.equal(y_base, labels)  # actually shuffled


def test_epoch_data_keeps_labels_aligned():
    images, labels = labelled_images()
    before = images.clone()
    x, y = D.epoch_data(images, labels, seed=1, epoch=0, max_shift=2)
    assert x.shape == images.shape and y.shape == labels.shape and y.dtype == labels.dtype
    # The centre pixel survives any ±2 shift, so it still carries the label.
    assert torch.equal(x[:, 0, 14, 14], y.float() / 10)
    assert torch.equal(torch.sort(y).values, torch.sort(labels).values)
    assert torch.equal(images, before)  # input untouched
    # Shifts were applied: ~24/25 of the non-blank images gained a zero border somewhere.
    bordered = (x[y > 0, 0] == 0).flatten(1).any(1).float().mean()
    assert 0.85 < bordered < 1.0


def test_epoch_data_is_a_permutation_with_unique_labels():
    n = 257
    labels = torch.arange(n)
    images = ((labels.float() + 1) / (n + 1)).view(n, 1, 1, 1).expand(n, 1, 28, 28).contiguous()
    x, y = D.epoch_data(images, labels, seed=9, epoch=2, max_shift=0)
    assert torch.equal(torch.sort(y).values, labels)  # every sample exactly once
    assert torch.equal(x, images[y])                   # no shift with max_shift=0, rows follow labels
    assert not torch.equal(y, labels)
