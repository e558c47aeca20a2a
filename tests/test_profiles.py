"""What the notebooks do first (capslib.study.notebook, capslib.study.profiles): find the clone they run in,
size a run by profile, find a trained model or train a short one. No notebook is executed here
(tests/test_notebooks.py does that); the one training run is the tiny profile's."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from capslib.study import notebook
from capslib.core.config import TrainConfig
from capslib.core.errors import CapslibError, RunFolderError
from capslib.core.layout import run_name
from capslib.study.profiles import GENERATED_PROFILES, PROFILES, describe, resolve_profile, sized
from capslib.study.studies import protocol, study_runs

REPO = Path(__file__).resolve().parent.parent


def test_auto_is_full_on_cuda_and_quick_elsewhere():
    assert resolve_profile("auto", cuda=True) == "full"
    assert resolve_profile("auto", cuda=False) == "quick"
    assert resolve_profile("tiny", cuda=True) == "tiny"
    with pytest.raises(CapslibError, match="profile must be one of auto, full, laptop, quick, tiny, got 'huge'"):
        resolve_profile("huge", cuda=False)


def test_the_full_profile_keeps_the_studys_sizes():
    config = TrainConfig(epochs=770, validation_size=10_000)
    assert sized(config, "full") == config
    assert describe(TrainConfig()) == "40 epochs of all training images at batch 128, all test images"
    assert describe(sized(TrainConfig(), "laptop")) == "2 epochs of all training images at batch 128, all test images"
    quick = sized(TrainConfig(), "quick")
    assert describe(quick) == "2 epochs of 1,000 training images at batch 32, 500 test images"


def test_a_small_profile_keeps_the_studys_split_at_its_own_scale():
    # one protocol per profile: 02_train, a notebook's short run and a sweep size a run the same way
    assert sized(TrainConfig(validation_size=10_000), "quick").validation_size == 1000 // 6
    assert sized(TrainConfig(validation_size=10_000), "tiny").validation_size == 64 // 6
    assert sized(TrainConfig(), "quick").validation_size == 0
    assert sized(TrainConfig(validation_size=10_000, epochs=9), "tiny", keep=("epochs",)).epochs == 9
    multimnist = sized(TrainConfig(dataset="multimnist"), "tiny")
    assert (multimnist.train_subset, multimnist.test_pairs) == (GENERATED_PROFILES["tiny"].train_subset, 2)


def test_find_root_walks_up_from_any_folder_of_the_clone(tmp_path):
    assert notebook.find_root(REPO / "notebooks") == REPO
    assert notebook.find_root(REPO / "capslib") == REPO
    assert notebook.find_root(tmp_path) is None


def test_start_works_from_the_clone_root(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO / "notebooks")
    assert notebook.start("scratch/results") == Path("scratch/results")
    assert Path.cwd() == REPO
    monkeypatch.chdir(tmp_path)  # outside any clone: stays where it is
    notebook.start("out")
    assert Path.cwd() == tmp_path


def test_run_config_takes_the_profile_sizes_unless_given(capsys):
    config = notebook.run_config("tiny", "table1", "r", "s", dataset="fashion-mnist", routing_iterations=1, device="cpu")
    tiny = PROFILES["tiny"]
    assert (config.epochs, config.batch_size, config.train_subset, config.test_subset) == (
        tiny.epochs, tiny.batch_size, tiny.train_subset, tiny.test_subset)
    name = run_name(sized(TrainConfig(dataset="fashion-mnist", routing_iterations=1), "tiny"), protocol("table1"))
    assert config.ckpt_dir == os.path.join("r", "table1", name)
    assert config.logs_dir == os.path.join("s", "table1", name)
    # where a sweep of table1 at the tiny profile puts the same run
    (swept,) = [c for c in study_runs("table1", [1], "r", "s", "tiny", device="cpu") if c.dataset == "fashion-mnist"]
    assert notebook.run_config("tiny", "table1", "r", "s", dataset="fashion-mnist", device="cpu").log_dir == swept.log_dir
    said = capsys.readouterr().out
    assert "profile **tiny**" in said and "1 epoch of 64 training images" in said
    config = notebook.run_config("quick", device="cpu", epochs=5, train_subset=300)
    assert (config.epochs, config.batch_size, config.train_subset, config.test_subset) == (5, 32, 300, 500)
    assert "with epochs = 5, train_subset = 300" in capsys.readouterr().out


def test_run_config_warns_that_the_full_profile_is_for_a_gpu(capsys):
    notebook.run_config("full", device="cpu")
    assert "meant for a GPU" in capsys.readouterr().out
    notebook.run_config("auto", device="cpu")
    said = capsys.readouterr().out
    assert "profile **quick** (auto: no CUDA GPU)" in said and "meant for a GPU" not in said


def test_run_config_validates_before_anything_is_written(tmp_path):
    with pytest.raises(CapslibError, match=r"routing_iterations must be an integer in \[1, 10\]"):
        notebook.run_config("tiny", "table1", tmp_path / "runs", tmp_path / "results", routing_iterations=0, device="cpu")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def trained_here(tmp_path_factory):
    """trained_run in an empty folder: trains the tiny run of the configuration, then finds it."""
    root = tmp_path_factory.mktemp("trained_run")
    runs_dir, results_dir = root / "runs", root / "results"
    routing1 = dict(dataset="mnist", routing_iterations=1, reconstruction=False)
    first = notebook.trained_run("table1", runs_dir, results_dir, "tiny", "cpu", **routing1)
    second = notebook.trained_run("table1", runs_dir, results_dir, "tiny", "cpu", **routing1)
    return root, first, second


def test_trained_run_trains_a_short_run_when_none_is_logged(trained_here):
    root, first, _ = trained_here
    tiny = sized(TrainConfig(routing_iterations=1, reconstruction=False), "tiny")
    assert first.name == run_name(tiny, protocol("table1")) and first.epoch == PROFILES["tiny"].epochs
    info = json.loads((root / "results" / "table1" / first.name / "run.json").read_text())
    assert info["status"] == "complete" and info["config"]["train_subset"] == PROFILES["tiny"].train_subset
    assert (root / "runs" / "table1" / first.name / "last.pt").is_file()


def test_trained_run_then_finds_the_run_instead_of_training_again(trained_here):
    root, first, second = trained_here
    assert second.name == first.name
    assert torch.equal(second.model.W, first.model.W)


def test_a_logged_run_without_its_checkpoint_is_named(trained_here, tmp_path):
    root, first, _ = trained_here
    # the logs are there (as in a fresh clone's results/table1) but the checkpoints are not
    with pytest.raises(RunFolderError, match=r"its checkpoint .*last.pt is missing"):
        notebook.trained_run("table1", tmp_path / "no_runs", root / "results", "tiny", "cpu", dataset="mnist",
                             routing_iterations=1, reconstruction=False)
    assert not (tmp_path / "no_runs").exists()


def test_a_cpu_notebook_left_at_auto_shows_the_laptop_run(trained_here, monkeypatch, capsys):
    """Nothing logged where the notebook looks, but a run of the configuration in the laptop folders
    (`make laptop`) with its checkpoint: on a CPU at profile auto that model is shown, nothing trained.
    An explicit profile is the user's choice: the laptop run is not taken then."""
    root, first, _ = trained_here
    monkeypatch.setattr(notebook, "LAPTOP_RUNS", root / "runs")
    monkeypatch.setattr(notebook, "LAPTOP_RESULTS", root / "results")
    empty = root / "elsewhere"
    routing1 = dict(dataset="mnist", routing_iterations=1, reconstruction=False)
    shown = notebook.trained_run("table1", empty / "runs", empty / "results", "auto", "cpu", **routing1)
    assert torch.equal(shown.model.W, first.model.W) and "make laptop" in capsys.readouterr().out
    assert not empty.exists()
    notebook.trained_run("table1", empty / "runs", empty / "results", "tiny", "cpu", **routing1)
    assert (empty / "runs" / "table1" / first.name / "last.pt").is_file()  # trained at the size asked for
    monkeypatch.setattr(notebook, "LAPTOP_RESULTS", root / "no_laptop_logs")
    with pytest.raises(CapslibError, match="routing_iterations must be"):  # stops before training anything
        notebook.trained_run("table1", empty / "runs", empty / "results", "auto", "cpu", dataset="mnist",
                             routing_iterations=0, reconstruction=False)
    said = capsys.readouterr().out
    assert "capslib sweep table1 --profile laptop --only mnist_routing0_norecon_seed1 --seeds 1" in said


def make_laptop() -> list[str]:
    """The commands `make laptop` runs (make -n), each as one line."""
    environ = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    made = subprocess.run(["make", "--no-print-directory", "-n", "laptop"], cwd=REPO, capture_output=True,
                          text=True, check=True, env=environ).stdout
    return [" ".join(line.split()) for line in made.replace("\\\n", " ").splitlines()]


def test_make_laptop_is_the_command_the_notebooks_name():
    command = notebook.laptop_command("table1", dataset="mnist", model="capsnet", routing_iterations=3,
                                      reconstruction=True)
    (sweep,) = [line for line in make_laptop() if " -m capslib sweep " in line]
    assert sweep.endswith(command.removeprefix("capslib "))


def test_make_laptop_in_a_fresh_clone_trains_the_users_own_model_where_the_notebooks_look(tmp_path, monkeypatch):
    """A fresh clone holds the committed record of the laptop run (results/laptop: logs, no checkpoint).
    The sweep `make laptop` runs must not find that run done (it would train nothing) nor write into it:
    it trains the user's run, into folders git ignores, where the notebooks look, and says where."""
    import shlex
    from capslib.cli import build_parser, given_fields
    from capslib.core.runs import read_run
    from capslib.study.studies import study_layers
    from capslib.study.sweep import finished_run

    commands = make_laptop()
    (sweep,) = [line for line in commands if " -m capslib sweep " in line]
    args = build_parser().parse_args(shlex.split(sweep.split(" -m capslib ", 1)[1]))
    clone = tmp_path / "clone"
    (clone / "results").mkdir(parents=True)
    (clone / "results" / "laptop").symlink_to(REPO / "results" / "laptop")  # what a fresh clone has
    monkeypatch.chdir(clone)
    runs = study_layers(args.study, [int(s) for s in args.seeds.split(",")], Path(args.runs_dir),
                        Path(args.results_dir), args.profile, **given_fields(args))
    (config,) = [layers[-1][1] for _, layers in runs if Path(layers[-1][1].log_dir).name in args.only]
    assert read_run(REPO / "results" / "laptop" / "table1" / Path(config.log_dir).name).info["status"] == "complete"
    assert finished_run(config) is None  # so the sweep trains it
    logs, checkpoints = Path(config.log_dir), Path(config.ckpt_dir)
    assert logs.parent == notebook.LAPTOP_RESULTS / "table1" and checkpoints.parent == notebook.LAPTOP_RUNS / "table1"
    assert not logs.is_relative_to("results") and not checkpoints.is_relative_to("results")
    if (REPO / ".git").exists():  # a checkout (tools/mutation.py tests a copy that is none)
        for folder in (logs, checkpoints):  # nothing the user's run writes is committed, or could be
            ignored = subprocess.run(["git", "check-ignore", "-q", str(folder / "run.json")], cwd=REPO)
            assert ignored.returncode == 0, f"{folder} is not ignored by git"
    said = commands[-1]
    assert str(checkpoints / "last.pt") in said and str(logs) in said and "03, 04 and 10" in said
