"""The datasets a run can train on, declared once: their files, checksums, classes and frames.

MNIST and Fashion-MNIST are read from their IDX files (capslib/core/data.py). The paper's two other
MNIST experiments are generated on the device from MNIST's files (capslib/core/generated.py says
how each is made, and why):

    multimnist      section 6: a digit over a digit of another class, each shifted up to 4 px in a
                    36×36 frame (pad 4); two labels per image
    mnist-expanded  section 5.2: MNIST padded to 40×40 and shifted up to 6 px (the official README's
                    --shift=6 --pad=6), scored also on an affNIST-style affine test set

Plain data, no torch: a run's description (config.py) checks its dataset here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

DATA_ROOT = Path(__file__).resolve().parents[2] / "data"  # the repository's data/
IMAGE_SIZE = 28    # every source image is 28×28 grey
NUM_CLASSES = 10

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: tuple[str, ...]
    md5: dict[str, str]  # MD5 of each file's decompressed bytes
    # Datasets generated from another's IDX files on the device: the source, the zero padding around
    # each 28×28 digit, its random shift in training and the digits per image.
    source: str | None = None
    pad: int = 0
    shift: int | None = None   # None: TrainConfig.max_shift (the paper's 2 px for MNIST)
    targets: int = 1

    @property
    def default_root(self) -> Path:
        return DATA_ROOT / (self.source or self.name)

    @property
    def image_size(self) -> int:
        return IMAGE_SIZE + 2 * self.pad


_MNIST = DatasetInfo(
    name="mnist",
    classes=tuple(str(d) for d in range(10)),
    md5={
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
)
DATASETS = {
    "mnist": _MNIST,
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        md5={
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
    ),
    "multimnist": DatasetInfo("multimnist", _MNIST.classes, _MNIST.md5, source="mnist", pad=4, shift=4, targets=2),
    "mnist-expanded": DatasetInfo("mnist-expanded", _MNIST.classes, _MNIST.md5, source="mnist", pad=6, shift=6),
}


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None
