"""MNIST and Fashion-MNIST: reading and validating IDX files, and feeding them to the model.

The IDX format (http://yann.lecun.com/exdb/mnist/): a 4-byte magic number (two zero bytes, a
type code, the number of dimensions), one big-endian uint32 per dimension, then the data in
row-major order. Unlike torchvision's reader, which checks with bare asserts, every problem here
raises :class:`~capslib.core.errors.DataError` naming the file and what is wrong, and the decompressed
bytes are checked against the published MD5 sums of the known datasets.

Training data lives on the device as one tensor; batches are slices of it and the paper's random
shift ("shifted by up to 2 pixels in each direction with zero padding") is applied there, for
the whole epoch at once, so the GPU never waits on a per-sample data loader.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import AUGMENTATIONS
from .datasets import IMAGE_SIZE, NUM_CLASSES, SPLIT_FILES, DatasetInfo, dataset_info
from .errors import DataError

# IDX type code -> numpy dtype (big-endian where it matters).
IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


# ---------------------------------------------------------------------------------------------
# IDX files


def find_idx_file(root: Path, stem: str) -> Path:
    """The file `stem` in `root`, gzip-compressed (`stem.gz`) or raw."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist")
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"{root}: missing {stem}.gz (or {stem})")


def read_raw_bytes(path: Path) -> bytes:
    """The file's content, decompressed if it is gzip (recognised by its magic bytes)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: not a readable gzip file ({err})") from None


def parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Decode IDX bytes into an array, checking the header against the file length."""
    if len(data) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    zero0, zero1, type_code, ndim = data[:4]
    if zero0 != 0 or zero1 != 0 or ndim == 0:
        raise DataError(f"{path}: bad IDX magic number 0x{data[:4].hex()}")
    if type_code not in IDX_TYPES:
        raise DataError(f"{path}: unknown IDX type code 0x{type_code:02x} in magic number 0x{data[:4].hex()}")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{path}: header names {ndim} dimensions but the file ends after {len(data)} bytes")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_TYPES[type_code]
    expected = header_len + math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if len(data) != expected:
        raise DataError(
            f"{path}: header says shape {shape} ({expected} bytes) but the file holds {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape).copy()  # writable


def read_idx(path: Path, expected_md5: str | None = None) -> np.ndarray:
    """Read one IDX file (gzip or raw); if `expected_md5` is given, check the decompressed bytes."""
    path = Path(path)
    data = read_raw_bytes(path)
    if expected_md5 is not None:
        actual = hashlib.md5(data).hexdigest()
        if actual != expected_md5:
            raise DataError(
                f"{path}: MD5 of the decompressed content is {actual}, expected {expected_md5}"
            )
    return parse_idx(data, path)


# ---------------------------------------------------------------------------------------------
# Splits and datasets


def _check_images(images: np.ndarray, path: Path, channels: int = 1) -> None:
    """uint8 N×28×28 (one channel) or N×C×28×28 (the C channels its dataset declares)."""
    frame = (IMAGE_SIZE, IMAGE_SIZE) if channels == 1 else (channels, IMAGE_SIZE, IMAGE_SIZE)
    if images.dtype != np.uint8 or images.ndim != 1 + len(frame):
        raise DataError(f"{path}: expected uint8 images of {1 + len(frame)} dimensions, got {images.dtype} of shape "
                        f"{images.shape}")
    if images.shape[1:] != frame:
        raise DataError(f"{path}: expected {'x'.join(map(str, frame))} images, got {'x'.join(map(str, images.shape[1:]))}")


def _check_labels(labels: np.ndarray, path: Path) -> None:
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{path}: expected uint8 labels of 1 dimension, got {labels.dtype} of shape {labels.shape}")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataError(f"{path}: label {int(labels.max())} is outside 0..{NUM_CLASSES - 1}")


def load_split(root: Path, split: str, dataset: str, verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8, N×28×28, or N×C×28×28) and labels (int64, N) of one split ('train' or 'test')."""
    info = dataset_info(dataset)
    if split not in SPLIT_FILES:
        raise DataError(f"unknown split {split!r}; choose train or test")
    image_stem, label_stem = SPLIT_FILES[split]
    image_path, label_path = find_idx_file(root, image_stem), find_idx_file(root, label_stem)
    images = read_idx(image_path, info.md5.get(image_stem) if verify else None)
    labels = read_idx(label_path, info.md5.get(label_stem) if verify else None)
    _check_images(images, image_path, info.channels)
    _check_labels(labels, label_path)
    if len(images) != len(labels):
        raise DataError(f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels")
    return images, labels.astype(np.int64)


@dataclass
class Dataset:
    """Both splits of one dataset, as uint8 arrays."""
    info: DatasetInfo
    root: Path
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    validation_images: np.ndarray | None = None  # held out of the training images, or None
    validation_labels: np.ndarray | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes


def load_dataset(dataset: str = "mnist", root: Path | str | None = None, verify: bool = True,
                 train_subset: int | None = None, test_subset: int | None = None,
                 validation_size: int = 0) -> Dataset:
    """Load and validate a dataset; `*_subset` keeps the first N images of a split (quick runs).

    `validation_size` holds the first N (kept) training images out as a validation split, as the
    official code's --validate does with the first 10,000 (mnist_shift.py, MNIST_RANGE)."""
    info = dataset_info(dataset)
    root = Path(root) if root is not None else info.default_root
    train_images, train_labels = load_split(root, "train", dataset, verify)
    test_images, test_labels = load_split(root, "test", dataset, verify)
    train_images, train_labels = train_images[:train_subset], train_labels[:train_subset]
    if not 0 <= validation_size < len(train_images):
        raise DataError(f"validation_size {validation_size} must leave training images out of "
                        f"{len(train_images)}")
    validation = (train_images[:validation_size], train_labels[:validation_size]) if validation_size else (None, None)
    return Dataset(info, root, train_images[validation_size:], train_labels[validation_size:],
                   test_images[:test_subset], test_labels[:test_subset], *validation)


def checksum_report(dataset: str, root: Path | str | None = None) -> list[dict]:
    """Each file of a dataset folder with its expected and actual decompressed MD5."""
    info = dataset_info(dataset)
    root = Path(root) if root is not None else info.default_root
    rows = []
    for stem, expected in info.md5.items():
        path = find_idx_file(root, stem)
        actual = hashlib.md5(read_raw_bytes(path)).hexdigest()
        rows.append({"file": path.name, "expected_md5": expected, "actual_md5": actual, "ok": actual == expected})
    return rows


# ---------------------------------------------------------------------------------------------
# Tensors on the device


def to_tensors(images: np.ndarray, labels: np.ndarray, device: torch.device | str = "cpu"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 N×28×28 (or N×C×28×28) images -> float N×1×28×28 (N×C×28×28) in [0, 1]; labels -> int64.
    Both new tensors on `device`."""
    x = torch.as_tensor(images, device=device)
    x = (x.unsqueeze(1) if x.dim() == 3 else x).float().div_(255)
    y = torch.tensor(labels, dtype=torch.int64, device=device)
    return x, y


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by its own random (dy, dx) in [-max_shift, max_shift]², zero padded."""
    if max_shift == 0:
        return images
    offsets = torch.randint(0, 2 * max_shift + 1, (len(images), 2), generator=generator, device=images.device)
    return shift_images(images, offsets - max_shift, max_shift)


def shift_images(images: torch.Tensor, shifts: torch.Tensor, pad: int) -> torch.Tensor:
    """Move image n down by shifts[n, 0] and right by shifts[n, 1] pixels, filling with zeros.

    `pad` must bound the shifts (|shift| <= pad); larger shifts would read neighbouring rows. One gather over a padded copy and no Python loop,
    so a whole epoch is shifted in a few kernels.
    """
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = (pad - shifts[:, 0, None]) + torch.arange(h, device=images.device)  # n×h source rows
    cols = (pad - shifts[:, 1, None]) + torch.arange(w, device=images.device)  # n×w source cols
    index = rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]                  # n×h×w
    index = index.view(n, 1, h * w).expand(n, c, h * w)
    return padded.flatten(2).gather(2, index).view(n, c, h, w)


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The random stream of one epoch: a pure function of (seed, epoch), so a resumed run draws
    exactly the batches and shifts that the uninterrupted run would have drawn."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + epoch)
    return generator


SHUFFLE_BUFFER = 5000  # the official reader's shuffle_batch(min_after_dequeue=batch_capacity), default 5,000


def epoch_data(images: torch.Tensor, labels: torch.Tensor, seed: int, epoch: int, max_shift: int,
               augmentation: str = "random-shift") -> tuple[torch.Tensor, torch.Tensor]:
    """The epoch's training set, as many images as the training split, ready to be sliced into batches.

    random-shift  every image once, in a random order, each with its own random shift (the paper)
    all-shifts    the official code's stream: every image in all (2·max_shift+1)² shifts, in file
                  order, through a shuffle buffer (see `all_shifts_order`); epoch e is the e-th
                  stretch of len(images) records of that stream, so 25 epochs make one pass
    """
    generator = epoch_generator(seed, epoch, images.device)
    if augmentation == "random-shift":
        order = torch.randperm(len(images), generator=generator, device=images.device)
        return random_shift(images[order], max_shift, generator), labels[order]
    if augmentation != "all-shifts":
        raise ValueError(f"unknown augmentation {augmentation!r}; choose one of {', '.join(AUGMENTATIONS)}")
    side = 2 * max_shift + 1
    records_per_pass = len(images) * side * side
    pass_index, stretch = divmod(epoch, side * side)
    order = all_shifts_order(records_per_pass, epoch_generator(seed, -1 - pass_index, images.device))
    records = order[stretch * len(images):(stretch + 1) * len(images)]
    image_index, shift_index = records // (side * side), records % (side * side)
    shifts = torch.stack([shift_index // side, shift_index % side], dim=1) - max_shift
    return shift_images(images[image_index], shifts, max_shift), labels[image_index]


def all_shifts_order(records: int, generator: torch.Generator, buffer: int = SHUFFLE_BUFFER) -> torch.Tensor:
    """The order in which a shuffle buffer of `buffer` records emits a stream of `records` records.

    The official data (mnist_shift.py shift_write_mnist) holds image 0 in its 25 shifts (dy, dx) in
    row-major order, then image 1, ...; TensorFlow's shuffle queue keeps `buffer` records and emits a
    uniformly chosen one each time, so a record waits a geometric number of draws (mean `buffer`)
    after it arrives. We emulate the queue by sorting the records by arrival + a geometric wait: the
    same local mixing (a batch draws from ~200 neighbouring images, several shifts of each), in one
    vectorised sort rather than a sequential queue."""
    arrival = torch.arange(records, device=generator.device, dtype=torch.float64)
    uniform = torch.rand(records, generator=generator, device=generator.device, dtype=torch.float64)
    wait = torch.floor(torch.log1p(-uniform) / math.log1p(-1 / buffer))  # Geometric(1/buffer) - 1
    return torch.argsort(arrival + wait, stable=True)
