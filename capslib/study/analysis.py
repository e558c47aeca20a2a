"""What the figures show, computed: a trained run loaded with its test set (evaluation,
reconstructions, perturbations, routing), and the data's statistics.

What the `evaluate`, `reconstruct` and `perturb` commands and notebooks 01 and 03-05 call;
`score_checkpoint` scores any run, MultiMNIST and expanded MNIST on their generated test sets.
Inference here runs in float32 (the reference precision) whatever path the run was trained with.
The `*_figure_of` functions compute, then hand the numbers to figures.py, which only draws.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.checkpoint import load_model
from ..core.config import TrainConfig
from ..core.data import Dataset, load_split, to_tensors
from ..core.datasets import IMAGE_SIZE, dataset_info
from ..core.errors import CapslibError
from ..core.evaluate import Evaluation, evaluate, evaluate_set, predict
from ..core.generated import materialise, split_sets
from ..core.layout import configuration_label, run_name
from ..core.model import CapsNet
from ..core.speed import resolve_device
from .figures import perturbation_figure, reconstruction_figure, routing_figure

# The paper's Fig. 4: each dimension of a class capsule moved by −0.25 … +0.25 in steps of 0.05 (0 in the middle)
PERTURBATION_DELTAS = np.round(np.arange(-0.25, 0.2501, 0.05), 2)


@dataclass
class TrainedRun:
    model: nn.Module
    config: TrainConfig
    epoch: int
    classes: tuple[str, ...]
    test_images: torch.Tensor  # N×1×28×28 in [0, 1], on the model's device
    test_labels: torch.Tensor

    @property
    def name(self) -> str:
        """The run's name: its folder's, where it was trained (placed by core/layout.py)."""
        return Path(self.config.log_dir).name if self.config.ckpt_dir or self.config.logs_dir else run_name(self.config)

    @property
    def label(self) -> str:
        return configuration_label(self.config)

    @cached_property
    def evaluation(self) -> Evaluation:
        return evaluate(self.model, self.test_images, self.test_labels)

    @cached_property
    def outputs(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Scores, capsules and reconstructions (from the predicted class) of every test image."""
        return predict(self.model, self.test_images)

    @property
    def predictions(self) -> np.ndarray:
        return self.outputs[0].argmax(dim=1).cpu().numpy()

    @property
    def labels(self) -> np.ndarray:
        return self.test_labels.cpu().numpy()

    def require_decoder(self) -> None:
        if getattr(self.model, "decoder", None) is None:
            raise CapslibError(f"this {self.config.model} run ({self.config.ckpt_dir}) has no reconstruction "
                               "decoder: train with --reconstruction-loss=True to draw reconstructions")

    def require_routing(self) -> None:
        if not hasattr(self.model, "couplings"):
            raise CapslibError(f"this {self.config.model} run ({self.config.ckpt_dir}) has no routing: "
                               "only a CapsNet has coupling coefficients")


def run_test_images(config: TrainConfig, data_root: Path | str | None = None, test_subset: int | None = None,
                    verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The test images a run is scored on (uint8 N×28×28, int64 labels): the first `test_subset` (default:
    the run's own test_subset) of its dataset's test split; for a generated dataset, of its source's."""
    info = dataset_info(config.dataset)
    images, labels = load_split(Path(data_root or config.data_root or info.default_root), "test", config.dataset, verify)
    subset = test_subset or config.test_subset
    return images[:subset], labels[:subset]


def load_trained(ckpt_path: Path | str, data_root: Path | str | None = None, device: str = "auto",
                 test_subset: int | None = None, verify: bool = True) -> TrainedRun:
    """A checkpoint (file, or run folder → its last.pt) and the test split of its dataset."""
    device = resolve_device(device)
    model, config, checkpoint = load_model(ckpt_path, device)
    info = dataset_info(config.dataset)
    if info.generator is not None:
        raise CapslibError(f"{ckpt_path}: a {config.dataset} run: notebooks 08_multimnist and 09_affine draw its "
                           "figures, and capslib evaluate scores it")
    images, labels = to_tensors(*run_test_images(config, data_root, test_subset, verify), device)
    return TrainedRun(model, config, checkpoint["epoch"], info.classes, images, labels)


@dataclass
class ScoredCheckpoint:
    config: TrainConfig                # as trained, but with the test_pairs scored
    epoch: int
    test_images: int                   # test images scored (MultiMNIST: each in config.test_pairs pairs)
    results: dict[str, Evaluation]     # "test", and "affine" (the affNIST-style set) for expanded MNIST
    device: torch.device


def score_checkpoint(ckpt_path: Path | str, data_root: Path | str | None = None, device: str = "auto",
                     test_subset: int | None = None, test_pairs: int | None = None,
                     verify: bool = True) -> ScoredCheckpoint:
    """A checkpoint scored on the test sets its training scored (generated.split_sets), in float32: for
    MultiMNIST the same hashed pairs (`test_pairs` per test image; default the run's own) under the
    top-2 rule, for expanded MNIST its shifted test set and the affNIST-style set."""
    device = resolve_device(device)
    model, config, checkpoint = load_model(ckpt_path, device)
    if test_pairs is not None:
        if dataset_info(config.dataset).targets == 1:
            raise CapslibError(f"--test-pairs: {ckpt_path} is a {config.dataset} run; only MultiMNIST has test pairs")
        config = dataclasses.replace(config, test_pairs=test_pairs).validate()
    images, labels = to_tensors(*run_test_images(config, data_root, test_subset, verify), device)
    sets = split_sets(config, "test", images, labels)
    results = {name: evaluate_set(model, examples, config.eval_batch_size) for name, examples in sets.items()}
    return ScoredCheckpoint(config, checkpoint["epoch"], len(labels), results, device)


# ---------------------------------------------------------------------------------------------
# Reconstructions, perturbations, routing


def reconstruction_examples(labels: np.ndarray, predictions: np.ndarray, per_group: int = 16
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the first `per_group` correctly and misclassified test images."""
    correct = np.flatnonzero(predictions == labels)[:per_group]
    wrong = np.flatnonzero(predictions != labels)[:per_group]
    return correct, wrong


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
    return model.decode(capsules, classes).float().cpu().numpy().reshape(dims, len(deltas), IMAGE_SIZE, IMAGE_SIZE)


def coupling_entropy(couplings: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of each primary capsule's couplings to the parents (the last axis):
    log2(10) ≈ 3.32 when they are uniform, 0 when one parent takes them all."""
    return -(couplings * torch.log2(couplings.clamp_min(1e-30))).sum(dim=-1)


def routing_summary(couplings: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """From couplings (iterations × images × primary capsules × classes, as CapsNet.couplings returns
    them): how far each class's mean coupling lies from the uniform 1/classes, in percentage points
    (iterations × images × classes), and the mean entropy of the couplings in bits (iterations × images)."""
    couplings = couplings.detach().double().cpu()
    change = 100 * (couplings.mean(dim=2).numpy() - 1 / couplings.shape[-1])
    return change, coupling_entropy(couplings).mean(dim=2).numpy()


def reconstruction_figure_of(run: TrainedRun, per_row: int = 8):
    run.require_decoder()
    _, _, reconstructions = run.outputs
    return reconstruction_figure(run.test_images, reconstructions, run.labels, run.predictions, run.classes, per_row)


def reconstruction_errors(run: TrainedRun) -> pd.DataFrame:
    """Per test image: label, prediction, and the sum of squared errors of its reconstruction
    (float64, so that rounded values print as they are)."""
    run.require_decoder()
    _, _, reconstructions = run.outputs
    sse = ((reconstructions - run.test_images.flatten(1)) ** 2).sum(dim=1).double().cpu().numpy()
    return pd.DataFrame({"label": run.labels, "prediction": run.predictions, "sse": sse,
                         "correct": run.labels == run.predictions})


def reconstruction_error_table(errors: pd.DataFrame, by: str, classes: tuple[str, ...] = ()) -> pd.DataFrame:
    """The reconstruction SSE of `errors` per outcome (by="correct": correctly classified or
    misclassified) or per true class (by="label"): number of images, mean, median, max."""
    groups = errors.groupby(by).sse
    table = groups.agg(["size", "mean", "median", "max"]).round(2).reset_index()
    if by == "correct":
        table[by] = table[by].map({True: "correctly classified", False: "misclassified"})
        table = table.iloc[::-1]  # correct first
    else:
        table[by] = [classes[i] for i in table[by]] if classes else table[by]
    table.columns = ["outcome" if by == "correct" else "true class", "images", "mean SSE", "median SSE", "max SSE"]
    return table.reset_index(drop=True)


def perturbation_figure_of(run: TrainedRun):
    run.require_decoder()
    _, capsules, _ = run.outputs
    chosen = perturbation_examples(run.labels, run.predictions)
    panels = [perturb_capsule(run.model, capsules[i, c], c) for c, i in chosen.items()]
    titles = [f"{run.classes[c]} (test image {i})" for c, i in chosen.items()]
    return perturbation_figure(panels, titles, PERTURBATION_DELTAS)


def routing_examples(run: TrainedRun, count: int = 4) -> np.ndarray:
    """Test images whose routing to show: the first correctly classified ones and the first
    misclassified one (if any), `count` in all."""
    correct, wrong = reconstruction_examples(run.labels, run.predictions, count)
    chosen = list(correct[:count - min(1, len(wrong))]) + list(wrong[:1])
    return np.array(chosen[:count], dtype=int)


@torch.inference_mode()
def routing_figure_of(run: TrainedRun, count: int = 4):
    run.require_routing()
    chosen = routing_examples(run, count)
    change, entropy = routing_summary(run.model.couplings(run.test_images[chosen]))
    return routing_figure(run.test_images[chosen], change, entropy, run.labels[chosen], run.predictions[chosen],
                          run.classes)


@torch.inference_mode()
def mean_coupling_entropy(run: TrainedRun, batch_size: int = 500) -> np.ndarray:
    """Per routing iteration, the entropy (bits) of the couplings c_i, averaged over the primary
    capsules and the test images: log2(10) where routing leaves them uniform."""
    run.require_routing()
    total = 0.0
    for start in range(0, len(run.test_images), batch_size):
        couplings = run.model.couplings(run.test_images[start:start + batch_size])
        total = total + coupling_entropy(couplings).double().sum(dim=(1, 2))
    return (total / (len(run.test_images) * couplings.shape[2])).cpu().numpy()


@torch.inference_mode()
def multimnist_figure_of(ckpt_path: Path | str, device: str = "auto", scanned: int = 1000, per_group: int = 6):
    """The paper's Fig. 5 for a MultiMNIST CapsNet checkpoint, from one test pair of each of the first
    `scanned` test digits: a row of correctly classified pairs and one of misclassified pairs, each reconstructed from the
    two longest capsules (R = P), then correct pairs reconstructed from one label and the longest capsule
    of a class that is not present (the paper's * columns)."""
    from .figures import multimnist_figure

    device = resolve_device(device)
    model, config, _ = load_model(ckpt_path, device)
    if config.dataset != "multimnist" or getattr(model, "decoder", None) is None:
        raise CapslibError(f"{ckpt_path}: not a MultiMNIST CapsNet with a decoder ({config.dataset}, {config.model})")
    images, labels = to_tensors(*run_test_images(config, verify=config.verify_checksums), device)
    test_set = split_sets(config, "test", images, labels)["test"]
    # the first pair of each of the first `scanned` test digits: the set's first pairs all overlay one digit
    first_pairs = torch.arange(min(scanned, len(images)), device=images.device) * test_set.pairs
    x, y, _ = test_set.at(first_pairs)
    outputs = [model(x[i:i + 500]) for i in range(0, len(x), 500)]
    capsules = torch.cat([o.capsules for o in outputs])
    scores = capsules.norm(dim=-1)
    predicted = scores.topk(2, dim=1).indices
    correct = (predicted.sort(1).values == y.sort(1).values).all(1)
    chosen_correct = correct.nonzero().flatten()[:per_group]
    chosen_wrong = (~correct).nonzero().flatten()[:per_group]
    absent = scores.scatter(1, y, -1.0).argmax(dim=1)            # the longest capsule of a class not present
    forced = torch.stack([y[:, 0], absent], dim=1)
    picks = [(chosen_correct, predicted), (chosen_wrong, predicted), (chosen_correct, forced)]
    index = torch.cat([i for i, _ in picks])
    reconstructed = torch.cat([r[i] for i, r in picks])
    recon = model.decode(capsules[index], reconstructed)
    return multimnist_figure(x[index, 0].cpu(), recon.cpu(), y[index].tolist(), predicted[index].tolist(),
                             reconstructed.tolist(), per_row=per_group)


def affine_samples_figure(count: int = 12, data_root: Path | str | None = None):
    """The first `count` MNIST test images in the expanded test set (top row) and the affNIST-style
    generated set (bottom row), 40×40 each."""
    from .figures import image_rows_figure
    from ..core.generated import AffineSet, ShiftedSet

    info = dataset_info("mnist-expanded")
    images, labels = load_split(Path(data_root or info.default_root), "test", "mnist")
    x, y = to_tensors(images[:count], labels[:count])
    return image_rows_figure({"expanded MNIST": materialise(ShiftedSet(x, y, info.pad))[0],
                              "affNIST-style (generated)": materialise(AffineSet(x, y))[0]})


# ---------------------------------------------------------------------------------------------
# The data


def class_balance(data: Dataset) -> pd.DataFrame:
    """Images per class in each split."""
    return pd.DataFrame({
        "class": data.classes,
        "train": np.bincount(data.train_labels, minlength=len(data.classes)),
        "test": np.bincount(data.test_labels, minlength=len(data.classes)),
    })


def pixel_statistics(data: Dataset) -> pd.DataFrame:
    """Mean and standard deviation of the pixels (scaled to [0, 1]) and the share of zeros, per split."""
    rows = []
    for split, images in (("train", data.train_images), ("test", data.test_images)):
        x = images.astype(np.float64) / 255
        rows.append({"split": split, "images": len(images), "mean": x.mean(), "std": x.std(),
                     "zero_fraction": float((images == 0).mean())})
    return pd.DataFrame(rows)
