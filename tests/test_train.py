"""The training loop on CPU: learning, resuming, run folders, divergence, checkpoints, config."""

import importlib
import json

import pandas as pd
import pytest
import torch

from capslib.core import checkpoint
from capslib.core.config import TrainConfig
from capslib.core.errors import CapslibError, RunFolderError, TrainingDiverged
from capslib.core.runs import read_run
from capslib.core.train import learning_rate, train

QUIET = {"log": lambda *_: None}
train_module = importlib.import_module("capslib.core.train")  # `capslib.core.train` the attribute is the function


def small(tmp_path, name="run", **overrides):
    """A run small enough for the CPU: 128 training and 50 test images, routing 1."""
    values = dict(train_subset=128, test_subset=50, batch_size=64, epochs=2, routing_iterations=1,
                  device="cpu", ckpt_dir=str(tmp_path / name))
    return TrainConfig(**{**values, **overrides})


def parameters(folder):
    return checkpoint.load_checkpoint(folder)["model"]


def test_a_short_training_run_learns(tmp_path):
    run = train(small(tmp_path, train_subset=640, test_subset=300, batch_size=32), **QUIET)
    accuracy = list(run.history.test_accuracy)
    assert accuracy[-1] > 0.5, accuracy              # chance is 0.1
    assert accuracy[-1] > accuracy[0] + 0.1, accuracy
    assert run.info["status"] == "complete" and run.info["summary"]["epochs_done"] == 2


def test_resume_continues_the_same_trajectory(tmp_path):
    whole = train(small(tmp_path, "whole"), **QUIET)
    train(small(tmp_path, "split", epochs=1), **QUIET)
    split = train(small(tmp_path, "split"), resume=True, **QUIET)
    for key, value in parameters(tmp_path / "whole").items():
        assert torch.equal(value, parameters(tmp_path / "split")[key]), key
    columns = ["epoch", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy"]
    assert whole.history[columns].equals(split.history[columns])
    assert [s["start_epoch"] for s in split.info["sessions"]] == [0, 1]


def test_a_finished_run_is_not_trained_again(tmp_path):
    config = small(tmp_path, epochs=1)
    train(config, **QUIET)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    run = train(config, resume=True, **QUIET)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    assert len(run.history) == 1


def test_a_non_empty_folder_is_never_overwritten(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(RunFolderError, match="is not empty"):
        train(small(tmp_path), **QUIET)
    with pytest.raises(RunFolderError, match="is not empty"):
        train(small(tmp_path), resume=True, **QUIET)  # nothing to resume either
    assert (folder / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def best_pt_alone(tmp_path, evaluations: int, **overrides):
    """A folder holding a best.pt (untrained weights, `evaluations` rows of history) and no last.pt."""
    config = small(tmp_path, **overrides)
    folder = tmp_path / "run"
    folder.mkdir()
    rows = [{"epoch": e + 1, "test_accuracy": 0.1} for e in range(evaluations)]
    checkpoint.save_checkpoint(folder / "best.pt", checkpoint.model_for(config), None, evaluations, config, rows)
    return folder, (folder / "best.pt").read_bytes()


@pytest.mark.parametrize("evaluations, overrides, named", [(2, {}, "a run trained to epoch 2"),
                                                           (1, {"routing_iterations": 3}, "another run")])
def test_a_best_pt_that_is_not_this_runs_first_evaluation_is_never_overwritten(tmp_path, evaluations, overrides,
                                                                                named):
    """best.pt without last.pt is a run cut off while writing its first last.pt (which then starts
    again): but not when it holds more than one evaluation, or the weights of another setup."""
    folder, before = best_pt_alone(tmp_path, evaluations, **overrides)
    with pytest.raises(RunFolderError, match=f"holds the best.pt of {named}.* move best.pt away"):
        train(small(tmp_path), resume=True, **QUIET)
    assert (folder / "best.pt").read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["best.pt"]


def test_the_start_of_a_run_cut_off_says_resume_starts_it_again(tmp_path):
    folder, before = best_pt_alone(tmp_path, 1)
    with pytest.raises(RunFolderError, match="cut off before its first checkpoint: pass --resume"):
        train(small(tmp_path), **QUIET)
    assert (folder / "best.pt").read_bytes() == before


def test_a_finished_run_needs_resume_to_continue(tmp_path):
    train(small(tmp_path, epochs=1), **QUIET)
    with pytest.raises(RunFolderError, match="--resume"):
        train(small(tmp_path, epochs=2), **QUIET)


def test_resume_refuses_a_different_setup(tmp_path):
    train(small(tmp_path, epochs=1), **QUIET)
    with pytest.raises(RunFolderError, match="routing_iterations: saved 1, requested 3"):
        train(small(tmp_path, routing_iterations=3), resume=True, **QUIET)


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_epoch_examples = train_module.epoch_examples

    def poisoned(config, images, labels, epoch):
        examples = real_epoch_examples(config, images, labels, epoch)
        return examples._replace(images=examples.images * float("nan")) if epoch == 1 else examples

    monkeypatch.setattr(train_module, "epoch_examples", poisoned)
    with pytest.raises(TrainingDiverged, match="epoch 2: loss is nan"):
        train(small(tmp_path, epochs=3), **QUIET)
    assert checkpoint.load_checkpoint(tmp_path / "run")["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in parameters(tmp_path / "run").values())
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "diverged"
    assert list(read_run(tmp_path / "run").history.epoch) == [1]


@pytest.mark.parametrize("error, status", [(RuntimeError("CUDA out of memory"), "failed"),
                                           (KeyboardInterrupt(), "interrupted")], ids=["error", "ctrl-c"])
def test_whatever_ends_a_run_early_is_recorded_in_run_json(tmp_path, monkeypatch, error, status):
    """An exception escaping the training loop (a bug, an out-of-memory error, Ctrl-C) leaves run.json
    saying how the run ended, never 'running'; the checkpoint of epoch 1 is kept, and resuming finishes
    the run."""
    real_epoch_examples = train_module.epoch_examples

    def failing(config, images, labels, epoch):
        if epoch == 1:
            raise error
        return real_epoch_examples(config, images, labels, epoch)

    monkeypatch.setattr(train_module, "epoch_examples", failing)
    with pytest.raises(type(error)):
        train(small(tmp_path), **QUIET)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == status
    assert info.get("error") == ("RuntimeError: CUDA out of memory" if status == "failed" else None)
    assert checkpoint.load_checkpoint(tmp_path / "run")["epoch"] == 1
    monkeypatch.undo()
    resumed = train(small(tmp_path), resume=True, **QUIET)
    assert resumed.info["status"] == "complete" and list(resumed.history.epoch) == [1, 2]
    assert "error" not in resumed.info


def test_logs_and_checkpoints_can_live_apart(tmp_path):
    config = small(tmp_path, "ckpt", epochs=1, logs_dir=str(tmp_path / "logs"))
    train(config, **QUIET)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["best.pt", "last.pt"]
    logs = {p.name for p in (tmp_path / "logs").iterdir()}
    assert {"metrics.csv", "run.json"} <= logs and any(n.startswith("events.out.tfevents") for n in logs)


def test_checkpoint_round_trip_gives_the_same_model(tmp_path):
    train(small(tmp_path, epochs=1), **QUIET)
    model, config, saved = checkpoint.load_model(tmp_path / "run" / "best.pt")
    assert config.routing_iterations == 1 and saved["epoch"] == 1
    images = torch.rand(4, 1, 28, 28)
    again, _, _ = checkpoint.load_model(tmp_path / "run")
    assert torch.equal(model(images).scores, again(images).scores)


def test_unreadable_checkpoints_are_refused_by_name(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(RunFolderError, match="junk.pt"):
        checkpoint.load_checkpoint(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(RunFolderError, match="not a capslib checkpoint"):
        checkpoint.load_checkpoint(foreign)
    with pytest.raises(RunFolderError, match="no such checkpoint"):
        checkpoint.load_checkpoint(tmp_path / "missing.pt")


def test_learning_rate_follows_the_seed_study_schedule():
    config = TrainConfig()
    assert [learning_rate(config, e) for e in (0, 1, 10)] == pytest.approx([1e-3, 9.5e-4, 1e-3 * 0.95 ** 10])


@pytest.mark.parametrize("field, value, message", [
    ("routing_iterations", 0, r"routing_iterations must be an integer in \[1, 10\], got 0"),
    ("batch_size", 0, "batch_size must be an integer ≥ 1, got 0"),
    ("epochs", True, "epochs must be an integer ≥ 1, got True"),
    ("dataset", "cifar", "dataset must be one of mnist, fashion-mnist"),
    ("model", "resnet", "model must be one of capsnet, baseline"),
    ("speed", "warp", "speed must be one of auto, fp32"),
    ("lr", -1.0, r"lr must be a finite number in \(0, 1\], got -1.0"),
    ("lr", float("inf"), r"lr must be a finite number in \(0, 1\], got inf"),
    ("lr", 1e38, r"lr must be a finite number in \(0, 1\]"),
    ("routing_iterations", 10**12, r"routing_iterations must be an integer in \[1, 10\]"),
    ("recipe", "tf", "recipe must be one of paper, official"),
    ("augmentation", "flip", "augmentation must be one of random-shift, all-shifts"),
    ("validation_size", -1, "validation_size must be an integer ≥ 0"),
    ("min_lr", 1.0, r"min_lr must be at most lr \(0.001\)"),
    ("eval_every", 0, "eval_every must be an integer ≥ 1"),
    ("lr_decay", 1.5, r"lr_decay must be a finite number in \(0, 1\]"),
    ("lr_decay", 0.0, r"lr_decay must be a finite number in \(0, 1\]"),
    ("reconstruction", "maybe", "reconstruction must be True or False"),
    ("train_subset", 0, "train_subset must be an integer ≥ 1 or None"),
    ("test_pairs", 60_001, r"test_pairs must be an integer in \[1, 60000\]"),
    ("seed", -1, r"seed must be an integer in \[0, 4294967295\]"),
])
def test_config_validation_names_the_field(field, value, message):
    with pytest.raises(CapslibError, match=message):
        TrainConfig(**{field: value}).validate()


def test_batch_larger_than_the_training_set_is_refused(tmp_path):
    with pytest.raises(CapslibError, match="exceeds the 32 training images"):
        train(small(tmp_path, train_subset=32, batch_size=64), **QUIET)


def test_lost_logs_are_rebuilt_from_the_checkpoint_with_their_sessions(tmp_path):
    """A run folder whose run.json and metrics.csv were deleted (a re-synced working copy, a careless
    clean-up) gets them back from last.pt when resumed, provenance included."""
    config = small(tmp_path, epochs=1)
    first = train(config, **QUIET)
    (tmp_path / "run" / "run.json").unlink()
    (tmp_path / "run" / "metrics.csv").unlink()
    again = train(config, resume=True, **QUIET)
    assert again.info["status"] == "complete"
    assert again.info["sessions"] == first.info["sessions"]
    assert again.history.equals(first.history)


def test_a_stop_request_ends_the_run_after_the_epoch_in_progress_and_it_resumes_as_if_never_stopped(tmp_path):
    """What a Slurm task does on USR2 (capslib/study/slurm.py): the run saves a checkpoint after the epoch
    in progress, between two evaluations or at one, and a run resumed from there follows the trajectory
    of one never stopped, with one metrics row per evaluation and one session per process."""
    def split(**kwargs):
        return train(small(tmp_path, "split", epochs=4, eval_every=2), **kwargs, **QUIET)

    whole = train(small(tmp_path, "whole", epochs=4, eval_every=2), **QUIET)
    between = split(stop=lambda: True)                # asked during epoch 1, before the first evaluation
    assert between.info["status"] == "stopped" and between.history.empty
    assert checkpoint.load_checkpoint(tmp_path / "split")["epoch"] == 1
    at = split(resume=True, stop=lambda: True)        # epoch 2 ends with an evaluation
    assert at.info["status"] == "stopped" and list(at.history.epoch) == [2]
    resumed = split(resume=True)
    assert resumed.info["status"] == "complete"
    for key, value in parameters(tmp_path / "whole").items():
        assert torch.equal(value, parameters(tmp_path / "split")[key]), key
    columns = ["epoch", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy"]
    assert whole.history[columns].equals(resumed.history[columns])
    assert [s["start_epoch"] for s in resumed.info["sessions"]] == [0, 1, 2]


def test_a_run_records_which_test_images_it_got_wrong_at_its_last_and_selected_evaluations(tmp_path):
    from capslib.core.data import load_dataset, to_tensors
    from capslib.core.evaluate import evaluate
    from capslib.core.runs import MISS_COLUMNS, read_misses

    config = small(tmp_path, epochs=3, validation_size=32, train_subset=160, speed="fp32")  # scored again in fp32
    run = train(config, **QUIET)
    misses = read_misses(run.folder)
    assert list(misses.columns) == MISS_COLUMNS and set(misses.set) == {"test"}
    last = misses[misses.evaluation == "last"]
    assert (last.epoch == 3).all() and len(last) == round(run.history.test_error.iloc[-1] * 50 / 100)
    selected = misses[misses.evaluation == "selected"]
    chosen = run.info["summary"]["selected_epoch"]
    assert (selected.epoch == chosen).all()
    assert len(selected) == round(run.history.set_index("epoch").test_error[chosen] * 50 / 100)
    # the recorded misses are the model's: the final weights, scored again, miss the same images the same way
    data = load_dataset("mnist", test_subset=50)
    model = checkpoint.model_for(config)
    model.load_state_dict(checkpoint.load_checkpoint(tmp_path / "run" / "last.pt")["model"])
    again = evaluate(model, *to_tensors(data.test_images, data.test_labels))
    assert list(last["index"]) == list(again.misclassified)
    assert list(last.predicted.astype(int)) == list(again.predictions[again.misclassified])
    assert list(last.label.astype(int)) == list(data.test_labels[again.misclassified])


def test_a_resumed_run_keeps_the_misses_of_the_evaluation_it_selected_before(tmp_path):
    from capslib.core.runs import read_misses

    values = dict(epochs=3, validation_size=32, train_subset=160)
    whole = read_misses(train(small(tmp_path, "whole", **values), **QUIET).folder)
    train(small(tmp_path, "split", **{**values, "epochs": 2}), **QUIET)
    split = read_misses(train(small(tmp_path, "split", **values), resume=True, **QUIET).folder)
    pd.testing.assert_frame_equal(whole, split)


def test_a_misses_file_that_is_not_one_is_refused_by_name(tmp_path):
    from capslib.core.runs import read_misses

    (tmp_path / "misses.csv.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(RunFolderError, match="misses.csv.gz"):
        read_misses(tmp_path)
    assert read_misses(tmp_path / "elsewhere") is None
