"""capslib: a reproducible PyTorch study of "Dynamic Routing Between Capsules" (Sabour, Frosst,
Hinton, NeurIPS 2017).

    data.py        IDX files, validation, dataset registry, on-device shifts
    generated.py   MultiMNIST, expanded MNIST and the affNIST-style set, generated on the device
    model.py       CapsNet (squash, dynamic routing, decoder) and the baseline CNNs; the top-2 rule
    losses.py      margin loss, reconstruction loss
    config.py      TrainConfig, the one place a run is described
    speed.py       speed paths: fp32 reference … bf16 + torch.compile + CUDA graph
    train.py       the training loop, logging and checkpointing every epoch
    checkpoint.py  atomic, weights-only checkpoints
    runs.py        run folders: metrics.csv, run.json, reading runs back
    evaluate.py    test error, predictions, confusion matrix
    analysis.py    a trained run with its test set: reconstructions, perturbations
    figures.py     the study's figures
    tables.py      result tables beside the paper's Table 1
    profiles.py    run sizes by purpose: full (the study), quick (CPU), tiny (tests)
    notebook.py    what each notebook does first: find its clone, size runs, find or train a model
    reports.py     `make report`: the HTML reports, then the executed notebooks without their figures
    predict.py     classify your own images (converted to MNIST's format)
    lab.py         `make lab`: saving a notebook keeps the committed metadata
    bench.py       `capslib bench`
    cli.py         the command line
"""

from .config import TrainConfig
from .errors import CapslibError
from . import analysis, data, figures, generated, notebook, profiles, runs, studies, tables
from .provenance import REPO
from .model import BaselineCNN, CapsNet, count_parameters, dynamic_routing, squash
from .train import train

__version__ = "0.1.0"
__all__ = ["REPO", "TrainConfig", "CapslibError", "BaselineCNN", "CapsNet", "count_parameters", "dynamic_routing",
           "squash", "train"]
