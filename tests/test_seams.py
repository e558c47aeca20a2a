"""The study's extension points, proved by extending it through them alone (docs/extending.md): a toy
routing procedure, a toy IDX dataset of three channels and a toy study, each registered here, trained on
the tiny profile and found in the model, the checkpoint, the run name, `--show-config` and the tables.
Also: every committed run keeps its name, two different setups never share a run folder, and a
checkpoint in the format the code wrote before these seams still loads and computes the same."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from capslib.core.checkpoint import load_model, model_for
from capslib.core.config import RESUMABLE_CHANGES, TrainConfig, resume_conflicts
from capslib.core.datasets import DATASETS, DatasetInfo, register_dataset
from capslib.core.errors import CapslibError
from capslib.core.layout import configuration_label, run_name
from capslib.core.model import squash
from capslib.core.routing import ROUTING_PROCEDURES, register_routing
from capslib.core.runs import read_run
from capslib.core.train import train
from capslib.study.profiles import PROFILES, sized
from capslib.study.studies import STUDIES, Study, protocol, study_runs
from capslib.study.summaries import run_table
from capslib.study.sweep import sweep

from helpers import cli

REPO = Path(__file__).resolve().parent.parent
QUIET = dict(log=lambda *_: None)


# ---------------------------------------------------------------------------------------------
# a toy routing procedure: uniform couplings, no agreement (what routing 1 does, whatever the iterations)


def uniform_routing(u_hat, iterations, detach_early=False, bias=None, return_couplings=False):
    coupling = u_hat.new_full(u_hat.shape[:3], 1 / u_hat.shape[2], dtype=torch.float32)
    s = (coupling.unsqueeze(-1) * u_hat).sum(dim=1)
    v = squash(s if bias is None else s + bias)
    return (v, coupling.expand(iterations, *coupling.shape)) if return_couplings else v


@pytest.fixture
def uniform():
    register_routing("uniform", uniform_routing, "c_ij = 1/10: no routing by agreement")
    yield "uniform"
    del ROUTING_PROCEDURES["uniform"]


def tiny(**fields) -> TrainConfig:
    return sized(TrainConfig(device="cpu", **fields), "tiny")


def test_a_registered_routing_procedure_reaches_the_model_the_checkpoint_and_the_run_name(uniform, tmp_path):
    config = tiny(routing_procedure="uniform", ckpt_dir=str(tmp_path / "run"))
    assert model_for(config).routing is uniform_routing
    run = train(config, **QUIET)
    model, saved, _ = load_model(tmp_path / "run")
    assert saved.routing_procedure == "uniform" and model.routing is uniform_routing
    couplings = model.couplings(torch.rand(2, 1, 28, 28))
    assert torch.allclose(couplings, torch.full_like(couplings, 0.1))
    assert run_name(config).startswith("mnist_uniform-routing3_recon_") and run_name(config) != run_name(tiny())
    assert configuration_label(config) == "uniform routing 3, reconstruction"
    assert run_table([run]).configuration.tolist() == ["uniform routing 3, reconstruction"]
    # the command line takes it as any other choice, and --show-config says where it was set
    code, out, err = cli("train", "--routing-procedure", "uniform", "--show-config")
    assert code == 0, err
    assert "mnist_uniform-routing3_recon_seed1" in out.splitlines()[0]
    assert [line.split() for line in out.splitlines() if "routing_procedure" in line] == [
        ["routing_procedure", "'uniform'", "given"]]


def test_an_unregistered_procedure_is_refused_before_any_work(tmp_path):
    with pytest.raises(CapslibError, match="routing_procedure must be one of dynamic"):
        train(tiny(routing_procedure="em", ckpt_dir=str(tmp_path / "run")), **QUIET)
    assert not (tmp_path / "run").exists()
    code, _, err = cli("train", "--routing-procedure", "em")
    assert code == 2 and "--routing-procedure: expected one of dynamic, got 'em'" in err


# ---------------------------------------------------------------------------------------------
# a toy dataset: four IDX files of 3-channel 28×28 images (an RGB set, never split into digits)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def toy_rgb(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "toy-rgb"
    root.mkdir()
    for split, n in (("train", 64), ("t10k", 20)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, (n, 3, 28, 28))
        images[np.arange(n), labels % 3, 4:24, 4:24] = 255  # each class lights one channel: RGB matters
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    register_dataset(DatasetInfo("toy-rgb", classes=tuple("abcdefghij"), md5={}, channels=3))
    yield root
    del DATASETS["toy-rgb"]


def test_a_registered_idx_dataset_of_three_channels_trains_with_its_channels_as_the_input(toy_rgb, tmp_path):
    config = tiny(dataset="toy-rgb", data_root=str(toy_rgb), ckpt_dir=str(tmp_path / "run"))
    model = model_for(config)
    assert model.conv1.in_channels == 3 and model.decoder.layers[-2].out_features == 3 * 28 * 28
    run = train(config, **QUIET)
    assert run.info["train_images"] == 64 and run.history.test_accuracy.notna().all()
    assert run_name(config).startswith("toy-rgb_routing3_recon_")
    loaded, _, _ = load_model(tmp_path / "run")
    assert loaded.conv1.weight.shape[1] == 3
    with pytest.raises(CapslibError, match="expected uint8 images of 4 dimensions"):  # a grey set is not it
        train(dataclasses.replace(config, data_root=str(REPO / "data" / "mnist"), ckpt_dir=str(tmp_path / "grey")),
              **QUIET)


# ---------------------------------------------------------------------------------------------
# a toy study, declared with the others: its runs, their names, folders and tables


def toy_configs(seeds):
    return [TrainConfig(routing_procedure=procedure, routing_iterations=2, lr=2e-3, seed=seed)
            for seed in seeds for procedure in ("dynamic", "uniform")]


@pytest.fixture
def toy_study(uniform, monkeypatch):
    monkeypatch.setitem(STUDIES, "toy", Study("toy", "dynamic and uniform routing at lr 0.002", toy_configs))
    yield "toy"


def test_a_declared_study_sweeps_its_runs_into_its_folders_and_tables(toy_study, tmp_path, capsys):
    configs = study_runs("toy", [1], tmp_path / "runs", tmp_path / "results", "tiny", device="cpu")
    names = [Path(c.log_dir).name for c in configs]
    # lr 0.002 is the study's protocol: its folder says it, its names need not; the tiny sizes are a digest
    assert protocol("toy")["lr"] == 2e-3
    assert names == [run_name(c, protocol("toy")) for c in configs]
    assert names[0].startswith("mnist_routing2_recon_") and names[1].startswith("mnist_uniform-routing2_recon_")
    assert sweep(configs, log=lambda *_: None) == 0
    table = run_table([read_run(c.log_dir) for c in configs])
    assert table.configuration.tolist() == ["routing 2, reconstruction", "uniform routing 2, reconstruction"]
    code, out, err = cli("sweep", "toy", "--profile", "tiny", "--seeds", "1", "--runs-dir", str(tmp_path / "runs"),
                         "--results-dir", str(tmp_path / "results"), "--show-config")
    assert code == 0, err
    assert [line.split()[:3] for line in out.splitlines() if line.split()[:1] == ["lr"]] == [
        ["lr", "0.002", "study"]] * 2
    assert [line.split()[:3] for line in out.splitlines() if line.split()[:1] == ["batch_size"]] == [
        ["batch_size", "32", "profile"]] * 2


def test_two_runs_of_a_study_in_one_folder_are_refused(monkeypatch, tmp_path):
    monkeypatch.setitem(STUDIES, "twice", Study("twice", "one run declared twice", lambda seeds: [TrainConfig()] * 2))
    with pytest.raises(CapslibError, match="two runs placed in .*mnist_routing3_recon_seed1 .the same run declared"):
        study_runs("twice", [1], tmp_path / "runs", tmp_path / "results")
    # two setups that differ only outside the readable name: the digest keeps them apart, both are placed
    monkeypatch.setitem(STUDIES, "apart", Study("apart", "", lambda seeds: [TrainConfig(), TrainConfig(lr=2e-3)]))
    first, second = study_runs("apart", [1], tmp_path / "runs", tmp_path / "results")
    assert Path(first.log_dir).name == "mnist_routing3_recon_seed1" != Path(second.log_dir).name


# ---------------------------------------------------------------------------------------------
# names: committed runs keep theirs, and different setups never share one


def committed_runs() -> list[Path]:
    return sorted(p.parent for p in (REPO / "results").rglob("run.json"))


def test_every_committed_run_keeps_its_name():
    """results/<study>/<run> (and results/laptop/<study>/<run>): the run's config, read back, names its
    folder within its study. A folder given by hand (results/speed/, --logs-dir) ends with the run name."""
    folders = committed_runs()
    assert len(folders) >= 80
    for folder in folders:
        config = TrainConfig.from_dict(json.loads((folder / "run.json").read_text())["config"])
        study = folder.parent.name
        if study in STUDIES:
            assert run_name(config, protocol(study)) == folder.name, folder
        else:
            assert folder.name.endswith("_" + run_name(config)), folder


# One other value for each field that can change what a run trains or scores.
OTHER_VALUES = {"dataset": "fashion-mnist", "model": "baseline", "routing_iterations": 1, "reconstruction": False,
                "detach_routing": True, "recipe": "official", "loss_scaling": "official", "digit_bias": True,
                "primary_capsules": "slim", "init": "official", "augmentation": "all-shifts", "batch_size": 64,
                "lr": 2e-3, "lr_decay": 0.96, "lr_decay_steps": 2000, "min_lr": 1e-6, "max_shift": 3, "seed": 2,
                "train_subset": 1000, "test_subset": 500, "test_pairs": 100, "validation_size": 10_000,
                "routing_procedure": "uniform"}
RESUMABLE_VALUES = {"epochs": 2, "device": "cpu", "speed": "fp32", "eval_batch_size": 100, "eval_every": 3,
                    "data_root": "data/mnist", "verify_checksums": False}


def test_every_field_is_either_a_setup_choice_or_a_resumable_change():
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert names == set(OTHER_VALUES) | set(RESUMABLE_VALUES) | {"ckpt_dir", "logs_dir"}
    assert set(RESUMABLE_VALUES) | {"ckpt_dir", "logs_dir"} == set(RESUMABLE_CHANGES)


@pytest.mark.parametrize("base", [TrainConfig(), TrainConfig.from_recipe("official"), TrainConfig(model="baseline")],
                         ids=["paper", "official", "baseline"])
def test_different_setups_never_share_a_default_run_folder(uniform, base):
    """One field changed, or two: wherever the setups differ (resume_conflicts), so do the run names
    (runs/<run name> by default); where they do not (a resumable change), the run is the same one."""
    variants = [base] + [dataclasses.replace(base, **{k: v}) for k, v in OTHER_VALUES.items()]
    variants += [dataclasses.replace(base, **{a: OTHER_VALUES[a], b: OTHER_VALUES[b]})
                 for a in OTHER_VALUES for b in OTHER_VALUES if a < b]
    by_name = {}
    for config in variants:
        by_name.setdefault(run_name(config), []).append(config)
    for name, same in by_name.items():  # a shared name only for configs that are one setup
        assert not [resume_conflicts(same[0], other) for other in same[1:] if resume_conflicts(same[0], other)], name
    for name, value in RESUMABLE_VALUES.items():
        assert run_name(dataclasses.replace(base, **{name: value})) == run_name(base)


def test_detach_routing_and_a_profiles_sizes_get_a_folder_of_their_own():
    """The collisions issue 30 found: --detach-routing and the tiny profile were named as the default run."""
    assert run_name(TrainConfig()) == "mnist_routing3_recon_seed1"
    assert run_name(TrainConfig(detach_routing=True)) != run_name(TrainConfig())
    for study in STUDIES:
        full = {c.log_dir: c for c in study_runs(study, [1, 2], "runs", "results")}
        for profile in PROFILES:
            for config in study_runs(study, [1, 2], "runs", "results", profile):
                if config.log_dir in full:  # the same folder only for the same run at another length
                    assert not resume_conflicts(full[config.log_dir], config), (study, profile, config.log_dir)


# ---------------------------------------------------------------------------------------------
# a checkpoint as the code before these seams wrote it


# TrainConfig.to_dict() as 382dbd5 wrote it into checkpoints and run.json: no routing_procedure yet.
OLD_CONFIG = {"dataset": "mnist", "data_root": None, "verify_checksums": True, "model": "capsnet",
              "routing_iterations": 3, "reconstruction": True, "detach_routing": False, "recipe": "paper",
              "loss_scaling": "paper", "digit_bias": False, "primary_capsules": "conv", "init": "default",
              "augmentation": "random-shift", "epochs": 40, "batch_size": 128, "lr": 0.001, "lr_decay": 0.95,
              "lr_decay_steps": None, "min_lr": 0.0, "max_shift": 2, "seed": 1, "train_subset": None,
              "test_subset": None, "test_pairs": 1000, "validation_size": 0, "eval_every": 1, "eval_batch_size": 1000,
              "ckpt_dir": "runs/table1/mnist_routing3_recon_seed1", "logs_dir": None, "device": "auto", "speed": "auto"}
# Its model's state_dict, key by key in 382dbd5's order (MNIST 28×28; MultiMNIST 36×36 differs in W and the decoder).
OLD_KEYS = {"W": [1152, 10, 16, 8], "conv1.weight": [256, 1, 9, 9], "conv1.bias": [256],
            "primary_caps.weight": [256, 256, 9, 9], "primary_caps.bias": [256], "decoder.layers.0.weight": [512, 160],
            "decoder.layers.0.bias": [512], "decoder.layers.2.weight": [1024, 512], "decoder.layers.2.bias": [1024],
            "decoder.layers.4.weight": [784, 1024], "decoder.layers.4.bias": [784]}
MULTIMNIST_KEYS = {**OLD_KEYS, "W": [3200, 10, 16, 8], "decoder.layers.4.weight": [1296, 1024],
                   "decoder.layers.4.bias": [1296]}
# What 382dbd5's model computed with these weights (below) on these inputs: loss with labels, the sum of
# the capsule lengths and of the reconstructions without. MultiMNIST's input was then 3 channels (merged
# image, then each digit); now the digits come as reconstruction targets beside the merged image.
OLD_RESULTS = {"mnist": (0.6084967255592346, 14.764635547995567, 1569.2640869915485),
               "multimnist": (1.7600429058074951, 29.27188605070114, 5183.4290508925915)}


def old_weights(keys: dict) -> dict:
    generator = torch.Generator().manual_seed(0)
    return {k: 0.05 * torch.randn(shape, generator=generator) for k, shape in keys.items()}


@pytest.mark.parametrize("dataset", ["mnist", "multimnist"])
def test_a_checkpoint_written_before_the_seams_loads_and_computes_the_same(tmp_path, dataset):
    config = {**OLD_CONFIG, "dataset": dataset}
    torch.save({"format": 1, "epoch": 1, "config": config, "history": [], "sessions": [],
                "model": old_weights(MULTIMNIST_KEYS if dataset == "multimnist" else OLD_KEYS)}, tmp_path / "best.pt")
    model, loaded, _ = load_model(tmp_path / "best.pt")
    assert loaded.routing_procedure == "dynamic"  # the field added since: its default, the paper's procedure
    size, channels = (28, 1) if dataset == "mnist" else (36, 3)
    x = torch.rand(4, channels, size, size, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([1, 2, 3, 4]) if dataset == "mnist" else torch.tensor([[1, 2], [3, 4], [5, 6], [7, 8]])
    digits = None if channels == 1 else x[:, 1:].unsqueeze(2)
    with torch.no_grad():
        with_labels, without = model(x[:, :1], y, digits), model(x[:, :1])
    loss, lengths, reconstructions = OLD_RESULTS[dataset]
    assert with_labels.loss.item() == pytest.approx(loss, rel=1e-6)
    assert without.scores.double().sum().item() == pytest.approx(lengths, rel=1e-6)
    assert without.reconstruction.double().sum().item() == pytest.approx(reconstructions, rel=1e-6)
