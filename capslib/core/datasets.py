"""The datasets a run can train on, declared once: their files, checksums, classes, channels, labels
per image and frames. Everything else reads these declarations; nothing infers a dataset's kind from
the shape of its tensors.

MNIST and Fashion-MNIST are read from their IDX files (capslib/core/data.py); so is any dataset added
with `register_dataset` (four IDX files in data/<name>, or wherever TrainConfig.data_root says:
docs/extending.md). The paper's two other MNIST experiments are generated on the device from MNIST's
files (capslib/core/generated.py says how each is made, and why):

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
    md5: dict[str, str]  # MD5 of each file's decompressed bytes (none: the files are not checked)
    channels: int = 1    # of each image: the network's input channels (IDX images N×H×W, or N×C×H×W)
    # Labels per example. With k > 1 the decoder reconstructs one image per label, so the dataset supplies
    # k reconstruction targets beside each input (MultiMNIST: each digit alone), never inside its channels.
    targets: int = 1
    # Datasets generated on the device from another's IDX files: how (generated.py: "multimnist",
    # "expanded"), from which, the zero padding around each 28×28 digit and its random shift in training.
    generator: str | None = None
    source: str | None = None
    pad: int = 0
    shift: int | None = None   # None: TrainConfig.max_shift (the paper's 2 px for MNIST)

    @property
    def default_root(self) -> Path:
        return DATA_ROOT / (self.source or self.name)

    @property
    def image_size(self) -> int:
        return IMAGE_SIZE + 2 * self.pad

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Channels, height and width of one input image."""
        return self.channels, self.image_size, self.image_size

    @property
    def reconstruction_shape(self) -> tuple[int, int, int, int] | None:
        """The reconstruction targets of one example, one image per label, where they are not the input
        itself (targets > 1); None where the decoder reconstructs the input."""
        return (self.targets, *self.image_shape) if self.targets > 1 else None


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
    "multimnist": DatasetInfo("multimnist", _MNIST.classes, _MNIST.md5, targets=2, generator="multimnist",
                              source="mnist", pad=4, shift=4),
    "mnist-expanded": DatasetInfo("mnist-expanded", _MNIST.classes, _MNIST.md5, generator="expanded", source="mnist",
                                  pad=6, shift=6),
}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add a dataset (a name taken already is an error: runs record names)."""
    if info.name in DATASETS:
        raise DataError(f"dataset {info.name!r} is registered already")
    if len(info.classes) != NUM_CLASSES:
        raise DataError(f"dataset {info.name!r}: {len(info.classes)} classes; the model has {NUM_CLASSES} digit capsules")
    DATASETS[info.name] = info
    return info


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None
