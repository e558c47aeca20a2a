"""Tests of the command line (`capslib ...`, `python -m capslib ...`).

- user mistakes: exit status 2, one line on stderr naming the flag or file, nothing written;
- the seed study's flag spelling trains a run (checkpoints in --ckpt-dir, logs in --logs-dir);
- --resume continues a finished run;
- evaluate / reconstruct / perturb on the trained checkpoint.

The two small runs (64 training images, 50 test images, 1 epoch, CPU) are trained once per module.
Most calls go through `capslib.cli.main(argv)` in-process; two go through `python -m capslib` to
check the real exit status and stderr of the process.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import importlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from capslib.core import data as D
from capslib.study.analysis import load_trained, perturbation_figure_of, reconstruction_figure_of
from capslib.core.checkpoint import load_checkpoint, load_model
from capslib.core.config import TrainConfig
from capslib.core.layout import run_name
from capslib.study.figures import png_bytes
from capslib.core.generated import MultiMNISTSet, materialise

from helpers import cli, one_line

train_module = importlib.import_module("capslib.core.train")  # `capslib.core.train` the attribute is the function
REPO = Path(__file__).resolve().parent.parent
MNIST = REPO / "data" / "mnist"
PARAMETERS_WITH_DECODER, PARAMETERS_WITHOUT_DECODER = 8_215_568, 6_804_224


# ---------------------------------------------------------------------------------------------
# helpers






def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under `folder`: (size, mtime_ns, sha256); changes, additions and removals show."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns,
                                         hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def train_argv(ckpt_dir: Path, logs_dir: Path, reconstruction: bool, *extra: str) -> list[str]:
    """The seed study's spelling (with '='), plus the quick-run flags."""
    return [
        "train", f"--mnist-root-path={MNIST}", "--batch-size=32", "--routing-frequency=1",
        f"--reconstruction-loss={reconstruction}", f"--ckpt-dir={ckpt_dir}", f"--logs-dir={logs_dir}",
        "--train-subset", "64", "--test-subset", "50", "--epochs", "1", "--device", "cpu", *extra]


def pixels(png) -> np.ndarray:
    with Image.open(png) as image:
        return np.asarray(image.convert("RGB"))


def assert_png(path: Path, size: tuple[int, int] | None = None) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # decodes every pixel: a truncated file fails here
        if size is not None:
            assert image.size == size


# ---------------------------------------------------------------------------------------------
# the trained runs (module-scoped)


class Trained:
    def __init__(self, root: Path, name: str, reconstruction: bool):
        self.ckpt, self.logs = root / f"{name}_ckpt", root / f"{name}_logs"
        self.reconstruction = reconstruction
        self.code, self.out, self.err = cli(*train_argv(self.ckpt, self.logs, reconstruction))

    @property
    def info(self) -> dict:
        return json.loads((self.logs / "run.json").read_text())

    @property
    def metrics(self) -> pd.DataFrame:
        return pd.read_csv(self.logs / "metrics.csv")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Trained]:
    root = tmp_path_factory.mktemp("cli_runs")
    return {"recon": Trained(root, "recon", True), "norecon": Trained(root, "norecon", False)}


@pytest.fixture(scope="module")
def recon(runs) -> Trained:
    run = runs["recon"]
    assert run.code == 0, run.err
    return run


@pytest.fixture(scope="module")
def norecon(runs) -> Trained:
    run = runs["norecon"]
    assert run.code == 0, run.err
    return run


@pytest.fixture(scope="module")
def resumed(norecon, tmp_path_factory):
    """A copy of the finished 1-epoch run (without decoder), continued to --epochs 2."""
    root = tmp_path_factory.mktemp("cli_resume")
    ckpt, logs = root / "ckpt", root / "logs"
    ckpt.mkdir()
    shutil.copy2(norecon.ckpt / "last.pt", ckpt / "last.pt")
    shutil.copytree(norecon.logs, logs)
    argv = train_argv(ckpt, logs, False, "--resume")
    argv[argv.index("--epochs") + 1] = "2"
    code, out, err = cli(*argv)
    return code, out, err, ckpt, logs


# ---------------------------------------------------------------------------------------------
# user mistakes: exit 2, one line naming the flag or file, before any work, nothing written

QUICK = ["--train-subset", "64", "--test-subset", "50", "--epochs", "1", "--device", "cpu"]


@pytest.mark.parametrize("argv, named", [
    (["--routing-frequency=0"], "--routing-frequency"),
    (["--routing-frequency=-3"], "--routing-frequency"),
    (["--batch-size=0"], "--batch-size"),
    (["--batch-size=abc"], "--batch-size"),
    (["--reconstruction-loss=maybe"], "--reconstruction-loss"),
    (["--mnist-root-path=/does/not/exist"], "--mnist-root-path"),
    (["--epochs=-1"], "--epochs"),
    (["--lr=0"], "--lr"),
    (["--lr=-0.001"], "--lr"),
    (["--lr=1e38"], "--lr"),  # finite, but Adam's float lr overflows: refused here, not by a traceback
    (["--dataset=cifar10"], "--dataset"),
    (["--model=resnet"], "--model"),
])
def test_train_flag_mistakes_exit_2_and_write_nothing(tmp_path, monkeypatch, argv, named):
    monkeypatch.chdir(tmp_path)  # the default --ckpt-dir is runs/<name> under the working folder
    # the mistake comes last, after valid flags, so that it alone stops the command
    code, out, err = cli("train", *QUICK, *argv)
    assert code == 2
    line = one_line(err)
    assert line.startswith("capslib train: error:")
    assert named in line
    assert out == ""
    assert list(tmp_path.iterdir()) == []


def test_unknown_dataset_message_lists_the_choices(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("train", "--dataset", "svhn", *QUICK)
    assert code == 2
    line = one_line(err)
    assert "'svhn'" in line and "mnist" in line and "fashion-mnist" in line


def test_missing_data_folder_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("train", "--mnist-root-path=/does/not/exist", *QUICK)
    assert code == 2 and "/does/not/exist" in one_line(err)


@pytest.mark.parametrize("command", ["evaluate", "reconstruct", "perturb"])
def test_missing_checkpoint_is_named(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "nope" / "last.pt"
    code, out, err = cli(command, f"--ckpt-path={missing}", "--result-path", tmp_path / "r.png", "--device", "cpu")
    assert code == 2
    line = one_line(err)
    assert "--ckpt-path" in line and str(missing) in line
    assert out == "" and list(tmp_path.iterdir()) == []


# A file that is not a checkpoint: torch's weights-only unpickler fails on it in many ways
# (UnpicklingError, KeyError, IndexError, …); each must end in one line naming the file.
@pytest.mark.parametrize("content", [
    pytest.param(b'{"epoch": 1}\n', id="json"),
    pytest.param(b"PK\x03\x04 not really a zip\n", id="zip-magic"),
    pytest.param(b"this is not a checkpoint\n", id="prose"),
    pytest.param(b"epoch,lr,train_loss\n1,0.001,0.5\n", id="metrics-csv"),
    pytest.param(b"hello\n", id="hello"),
    pytest.param(b"", id="empty"),
])
def test_non_checkpoint_file_is_named(tmp_path, monkeypatch, content):
    monkeypatch.chdir(tmp_path)
    fake = tmp_path / "model.pt"
    fake.write_bytes(content)
    code, out, err = cli("evaluate", f"--ckpt-path={fake}", "--device", "cpu", "--test-subset", "50")
    assert code == 2, err
    line = one_line(err)
    assert line.startswith("capslib evaluate: error:") and str(fake) in line
    assert fake.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_logs_folder_given_as_checkpoint_names_the_missing_file(recon, tmp_path):
    # --ckpt-path may be a run folder (its last.pt): the logs folder holds none
    code, _, err = cli("evaluate", f"--ckpt-path={recon.logs}", "--device", "cpu", "--test-subset", "50")
    assert code == 2
    assert str(recon.logs / "last.pt") in one_line(err)


@pytest.mark.parametrize("command, suffix", [("evaluate", ".json"), ("reconstruct", ".png"), ("perturb", ".png")])
def test_existing_result_path_is_left_untouched(recon, tmp_path, command, suffix):
    result = tmp_path / f"result{suffix}"
    result.write_bytes(b"precious \x00\x01 bytes\n")
    before = snapshot(tmp_path)
    code, out, err = cli(command, f"--ckpt-path={recon.ckpt / 'last.pt'}", f"--result-path={result}",
                         "--device", "cpu", "--test-subset", "50")
    assert code == 2
    line = one_line(err)
    assert "--result-path" in line and str(result) in line and "--overwrite" in line
    assert out == ""
    assert snapshot(tmp_path) == before


def test_required_result_path_is_named(recon):
    code, _, err = cli("reconstruct", f"--ckpt-path={recon.ckpt}", "--device", "cpu")
    assert code == 2 and "--result-path" in one_line(err)


@pytest.fixture
def mnist_copy(tmp_path) -> Path:
    root = tmp_path / "mnist_copy"
    root.mkdir()
    for path in MNIST.glob("*.gz"):
        shutil.copy2(path, root / path.name)
    assert len(list(root.iterdir())) == 4
    return root


@pytest.mark.parametrize("corruption", ["truncated-gzip", "truncated-idx"])
def test_corrupt_idx_file_is_named(mnist_copy, tmp_path, monkeypatch, corruption):
    monkeypatch.chdir(tmp_path)
    victim = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    if corruption == "truncated-gzip":  # a cut-off download
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
        extra = []
    else:  # a well-formed gzip of an IDX file that lost its last 10 labels (MD5 check off)
        victim.write_bytes(gzip.compress(gzip.decompress(victim.read_bytes())[:-10]))
        extra = ["--no-verify"]
    ckpt = tmp_path / "ckpt"
    before = snapshot(tmp_path)
    code, out, err = cli("train", f"--mnist-root-path={mnist_copy}", f"--ckpt-dir={ckpt}", *QUICK, *extra)
    assert code == 2
    line = one_line(err)
    assert str(victim) in line
    if corruption == "truncated-idx":
        assert "10000" in line  # the header's count, against the bytes present
    assert not ckpt.exists()
    assert snapshot(tmp_path) == before


def test_changed_data_file_fails_the_md5_check(mnist_copy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    victim = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(victim.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # a valid IDX file, one label changed
    victim.write_bytes(gzip.compress(bytes(raw)))
    code, _, err = cli("train", f"--mnist-root-path={mnist_copy}", f"--ckpt-dir={tmp_path / 'ckpt'}", *QUICK)
    assert code == 2
    line = one_line(err)
    assert str(victim) in line and "MD5" in line
    assert not (tmp_path / "ckpt").exists()


def test_non_empty_ckpt_dir_without_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "notes.txt").write_text("my notes\n")
    (ckpt / "old.pt").write_bytes(b"\x80\x02 not mine to delete")
    before = snapshot(tmp_path)
    code, out, err = cli("train", f"--mnist-root-path={MNIST}", f"--ckpt-dir={ckpt}", *QUICK)
    assert code == 2
    line = one_line(err)
    assert "--ckpt-dir" in line and str(ckpt) in line
    assert out == ""
    assert snapshot(tmp_path) == before


def test_finished_run_without_resume_is_refused_and_kept(recon):
    before = {"ckpt": snapshot(recon.ckpt), "logs": snapshot(recon.logs)}
    code, out, err = cli(*train_argv(recon.ckpt, recon.logs, True))
    assert code == 2
    line = one_line(err)
    assert "--ckpt-dir" in line and str(recon.ckpt) in line and "--resume" in line
    assert {"ckpt": snapshot(recon.ckpt), "logs": snapshot(recon.logs)} == before


def test_resume_with_a_different_setup_is_refused(norecon):
    before = {"ckpt": snapshot(norecon.ckpt), "logs": snapshot(norecon.logs)}
    code, _, err = cli(*train_argv(norecon.ckpt, norecon.logs, False, "--resume", "--seed", "2"))
    assert code == 2
    line = one_line(err)
    assert "seed" in line and str(norecon.ckpt / "last.pt") in line
    assert {"ckpt": snapshot(norecon.ckpt), "logs": snapshot(norecon.logs)} == before


@pytest.mark.parametrize("argv, named", [
    (["--paths", "nope"], "nope"),
    (["--paths", "fp32,nope"], "nope"),
    (["--batch-sizes", "128,0"], "--batch-sizes"),
    (["--device", "cpu", "--paths", "fp32,graph"], "graph"),
])
def test_bench_mistakes(tmp_path, monkeypatch, argv, named):
    monkeypatch.chdir(tmp_path)  # the default --out-dir is results/ under the working folder
    code, out, err = cli("bench", *argv)
    assert code == 2
    line = one_line(err)
    assert line.startswith("capslib bench: error:") and named in line
    if "--paths" in argv:
        assert "--paths" in line and "fp32" in line  # names the flag and the valid choices
    assert out == "" and list(tmp_path.iterdir()) == []


def test_no_command_is_a_usage_error():
    code, _, err = cli()
    assert code == 2 and one_line(err).startswith("capslib: error:")


# ---------------------------------------------------------------------------------------------
# the real process: exit status and stderr


def python_m_capslib(*argv, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "capslib", *map(str, argv)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_process_exit_status_for_a_flag_mistake(tmp_path):
    done = python_m_capslib("train", "--routing-frequency=0", "--device", "cpu", cwd=tmp_path)
    assert done.returncode == 2
    assert "--routing-frequency" in one_line(done.stderr)
    assert done.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_process_exit_status_for_a_capslib_error(recon, tmp_path):
    result = tmp_path / "taken.json"
    result.write_text("{}\n")
    done = python_m_capslib("evaluate", "--ckpt-path", recon.ckpt, "--result-path", result,
                            "--meta-path", "model.meta", "--device", "cpu", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    # a mistake is one line: the --meta-path note comes only when the command goes ahead
    assert len(lines) == 1
    assert lines[0].startswith("capslib evaluate: error:") and str(result) in lines[0]
    assert result.read_text() == "{}\n"


# ---------------------------------------------------------------------------------------------
# training with the seed study's flags


def test_seed_study_flags_train_a_run(recon):
    assert recon.code == 0, recon.err
    assert sorted(p.name for p in recon.ckpt.iterdir()) == ["best.pt", "last.pt"]
    names = {p.name for p in recon.logs.iterdir()}
    assert {"metrics.csv", "run.json"} <= names
    assert not names & {"last.pt", "best.pt"}  # checkpoints only in --ckpt-dir
    assert "final test error" in recon.out and str(recon.logs) in recon.out


def test_run_json_records_the_flags(recon):
    info = recon.info
    config = info["config"]
    assert info["status"] == "complete"
    assert info["parameters"] == PARAMETERS_WITH_DECODER
    assert (config["routing_iterations"], config["reconstruction"], config["batch_size"]) == (1, True, 32)
    assert (config["train_subset"], config["test_subset"], config["epochs"]) == (64, 50, 1)
    assert Path(config["data_root"]) == MNIST
    assert Path(config["ckpt_dir"]) == recon.ckpt and Path(config["logs_dir"]) == recon.logs
    assert (info["train_images"], info["test_images"]) == (64, 50)
    assert info["summary"]["epochs_done"] == 1
    assert len(info["sessions"]) == 1 and info["sessions"][0]["start_epoch"] == 0


def test_an_explicit_none_is_honoured_end_to_end(tmp_path, monkeypatch):
    """`--recipe official --lr-decay-steps none` trains the per-epoch schedule: run.json records None (it
    used to record the recipe's 2000, dropping the flag) and the run's name shows the variant."""
    monkeypatch.chdir(tmp_path)  # the run goes to runs/<run name>
    code, out, err = cli("train", "--recipe", "official", "--lr-decay-steps", "none", "--routing", "1",
                         "--batch-size", "32", *QUICK)
    assert code == 0, err
    (folder,) = (tmp_path / "runs").iterdir()
    info = json.loads((folder / "run.json").read_text())
    assert folder.name == run_name(TrainConfig.from_dict(info["config"]))
    assert folder.name.startswith("mnist_routing1_recon_official-schedule_")  # and a digest of its sizes
    assert info["config"]["lr_decay_steps"] is None and info["variant"] == "official-schedule"
    assert info["config"]["lr_decay"] == 0.96 and info["config"]["min_lr"] == 1e-6  # the rest of the recipe


def test_metrics_csv_has_one_row_per_epoch(recon):
    metrics = recon.metrics
    assert metrics.epoch.tolist() == [1]
    row = metrics.iloc[0]
    assert row.lr == pytest.approx(1e-3)
    assert round(row.train_accuracy * 64) == pytest.approx(row.train_accuracy * 64)  # 2 full batches of 32
    assert row.test_error == pytest.approx(100 * (1 - row.test_accuracy))
    # accuracy over 50 images is a multiple of 2%
    assert round(row.test_accuracy * 50) == pytest.approx(row.test_accuracy * 50)
    assert recon.info["summary"]["final_test_error"] == pytest.approx(row.test_error)
    assert np.isfinite(row.train_reconstruction_loss) and row.train_reconstruction_loss > 0


def test_checkpoints_hold_the_epoch_and_config(recon):
    last = load_checkpoint(recon.ckpt / "last.pt")
    assert last["epoch"] == 1
    assert last["config"]["routing_iterations"] == 1 and last["config"]["reconstruction"] is True
    assert any(key.startswith("decoder.") for key in last["model"])
    assert load_checkpoint(recon.ckpt)["epoch"] == 1  # a folder means its last.pt


def test_reconstruction_false_builds_no_decoder(norecon):
    info = norecon.info
    assert info["config"]["reconstruction"] is False and info["config"]["routing_iterations"] == 1
    assert info["parameters"] == PARAMETERS_WITHOUT_DECODER
    assert not any(key.startswith("decoder.") for key in load_checkpoint(norecon.ckpt / "last.pt")["model"])
    metrics = norecon.metrics
    assert metrics.train_reconstruction_loss.isna().all() and metrics.test_reconstruction_loss.isna().all()
    assert (metrics.train_loss == metrics.train_margin_loss).all()


def test_resume_continues_to_more_epochs(resumed, norecon):
    code, out, err, ckpt, logs = resumed
    assert code == 0, err
    assert "resuming" in out
    metrics = pd.read_csv(logs / "metrics.csv")
    assert metrics.epoch.tolist() == [1, 2]
    # epoch 1 is the original run's row, restored from the checkpoint's history
    pd.testing.assert_series_equal(metrics.iloc[0], norecon.metrics.iloc[0], check_names=False)
    assert metrics.lr.tolist() == pytest.approx([1e-3, 1e-3 * 0.95])
    assert metrics.wall_seconds.iloc[1] > metrics.wall_seconds.iloc[0]
    info = json.loads((logs / "run.json").read_text())
    assert info["status"] == "complete" and info["summary"]["epochs_done"] == 2
    assert info["config"]["epochs"] == 2
    assert [s["start_epoch"] for s in info["sessions"]] == [0, 1]
    assert load_checkpoint(ckpt / "last.pt")["epoch"] == 2
    # the original run is untouched
    assert norecon.metrics.epoch.tolist() == [1]


def test_resume_of_a_finished_run_trains_nothing(resumed, tmp_path):
    code, _, err, ckpt, logs = resumed
    assert code == 0, err
    ckpt, logs = shutil.copytree(ckpt, tmp_path / "ckpt"), shutil.copytree(logs, tmp_path / "logs")
    before = {"ckpt": snapshot(ckpt), "logs": snapshot(logs)}
    argv = train_argv(ckpt, logs, False, "--resume")
    argv[argv.index("--epochs") + 1] = "2"
    code, out, err = cli(*argv)
    assert code == 0, err
    assert "already trained for 2 epochs" in out
    assert {"ckpt": snapshot(ckpt), "logs": snapshot(logs)} == before  # run.json and metrics.csv too


# ---------------------------------------------------------------------------------------------
# evaluate / reconstruct / perturb on the trained checkpoint


def test_evaluate_writes_json(recon, tmp_path):
    result = tmp_path / "sub" / "x.json"
    code, out, err = cli("evaluate", f"--ckpt-path={recon.ckpt / 'last.pt'}", f"--result-path={result}",
                         "--test-subset", "50", "--device", "cpu")
    assert code == 0, err
    report = json.loads(result.read_text())
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 50
    assert report["test_images"] == 50 and report["epoch"] == 1 and report["dataset"] == "mnist"
    labels = D.read_idx(MNIST / "t10k-labels-idx1-ubyte.gz")[:50]
    np.testing.assert_array_equal(matrix.sum(axis=1), np.bincount(labels, minlength=10))  # rows: true class
    assert report["test_accuracy"] == pytest.approx(np.trace(matrix) / 50)
    assert report["test_error_percent"] == pytest.approx(100 * (1 - report["test_accuracy"]))
    # the same model on the same 50 images as the training run's last evaluation
    assert report["test_accuracy"] == pytest.approx(recon.metrics.test_accuracy.iloc[-1])
    assert "confusion matrix" in out


def test_evaluate_run_folder_without_decoder(norecon):
    # a folder means its last.pt; evaluation needs no decoder; no --result-path: nothing written
    before = snapshot(norecon.ckpt)
    code, out, err = cli("evaluate", f"--ckpt-path={norecon.ckpt}", "--test-subset", "50", "--device", "cpu")
    assert code == 0, err
    assert "test error" in out
    assert snapshot(norecon.ckpt) == before


def test_evaluate_overwrite_replaces_the_result(recon, tmp_path):
    result = tmp_path / "x.json"
    result.write_text("old\n")
    code, _, err = cli("evaluate", f"--ckpt-path={recon.ckpt}", f"--result-path={result}", "--overwrite",
                       "--test-subset", "20", "--device", "cpu")
    assert code == 0, err
    assert np.array(json.loads(result.read_text())["confusion_matrix"]).sum() == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]  # no temporary file left


def test_reconstruct_writes_a_png_and_notes_meta_path(recon, tmp_path):
    result = tmp_path / "reconstructions.png"
    code, out, err = cli("reconstruct", f"--ckpt-path={recon.ckpt / 'best.pt'}", f"--result-path={result}",
                         "--meta-path", "anything.meta", "--test-subset", "50", "--device", "cpu")
    assert code == 0, err
    line = one_line(err)
    assert line.startswith("note:") and "--meta-path" in line
    assert_png(result, (1920, 780))
    assert str(result) in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reconstructions.png"]
    # the figure of that checkpoint on those 50 images (its content: tests/test_figures.py)
    run = load_trained(recon.ckpt / "best.pt", device="cpu", test_subset=50)
    assert np.array_equal(pixels(result), pixels(io.BytesIO(png_bytes(reconstruction_figure_of(run)))))


def test_perturb_writes_a_png(recon, tmp_path):
    # the first 100 MNIST test images hold every class (the first 50 hold no 8: see the next test)
    result = tmp_path / "perturbations.png"
    code, _, err = cli("perturb", f"--ckpt-path={recon.ckpt}", f"--result-path={result}",
                       "--meta-path=graph.meta", "--test-subset", "100", "--device", "cpu")
    assert code == 0, err
    assert "--meta-path" in one_line(err)
    assert_png(result, (1990, 1296))
    run = load_trained(recon.ckpt, device="cpu", test_subset=100)
    assert np.array_equal(pixels(result), pixels(io.BytesIO(png_bytes(perturbation_figure_of(run)))))


def test_perturb_on_a_subset_missing_a_class(recon, tmp_path):
    result = tmp_path / "perturbations.png"
    code, _, err = cli("perturb", f"--ckpt-path={recon.ckpt}", f"--result-path={result}",
                       "--test-subset", "50", "--device", "cpu")
    assert code == 0, err
    assert_png(result)


@pytest.mark.parametrize("command", ["reconstruct", "perturb"])
def test_figures_need_a_decoder(norecon, tmp_path, command):
    result = tmp_path / "figure.png"
    code, out, err = cli(command, f"--ckpt-path={norecon.ckpt}", f"--result-path={result}",
                         "--test-subset", "50", "--device", "cpu")
    assert code == 2
    line = one_line(err)
    assert line.startswith(f"capslib {command}: error:")
    assert "decoder" in line and "--reconstruction-loss" in line
    assert not result.exists() and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# evaluate on the paper's other experiments: the generated test sets that training scored


@pytest.fixture(scope="module")
def generated_runs(tmp_path_factory) -> dict[str, Path]:
    """Run folders (checkpoints and logs together) of two tiny 1-epoch CPU runs: MultiMNIST scored on
    the first 4 test images × 5 pairs, expanded MNIST on the first 20 test images (and their
    affNIST-style versions)."""
    root = tmp_path_factory.mktemp("generated_runs")
    sizes = {"multimnist": {"test_subset": 4, "test_pairs": 5}, "mnist-expanded": {"test_subset": 20}}
    for dataset, fields in sizes.items():
        config = TrainConfig(dataset=dataset, routing_iterations=1, train_subset=40, batch_size=32, epochs=1,
                             device="cpu", speed="fp32", ckpt_dir=str(root / dataset), **fields)  # as evaluate scores
        train_module.train(config, log=lambda *_: None)
    return {dataset: root / dataset for dataset in sizes}


def logged(folder: Path) -> pd.Series:
    """The last evaluation the training run logged."""
    return pd.read_csv(folder / "metrics.csv").iloc[-1]


def test_evaluate_multimnist_reproduces_the_test_error_training_logged(generated_runs, tmp_path):
    folder, result = generated_runs["multimnist"], tmp_path / "eval.json"
    code, out, err = cli("evaluate", f"--ckpt-path={folder}", f"--result-path={result}", "--device", "cpu")
    assert code == 0, err
    report = json.loads(result.read_text())
    assert (report["dataset"], report["test_images"], report["test_pairs"], report["test_examples"]) == (
        "multimnist", 4, 5, 20)
    assert report["test_error_percent"] == pytest.approx(logged(folder).test_error)
    # the same loss to float precision: the same regenerated pairs, both labels of each
    assert report["test_loss"] == pytest.approx(logged(folder).test_loss, rel=1e-6)
    assert report["confusion_matrix"] is None
    assert f"multimnist test error {logged(folder).test_error:.2f}%" in out and "of 20 misclassified" in out
    assert "confusion matrix" in out and "[[" not in out  # one line instead of a matrix


def test_evaluate_multimnist_scores_test_pairs_of_the_first_test_subset_images(generated_runs, tmp_path):
    folder, result = generated_runs["multimnist"], tmp_path / "eval.json"
    code, _, err = cli("evaluate", f"--ckpt-path={folder}", "--test-subset", "6", "--test-pairs", "4",
                       f"--result-path={result}", "--device", "cpu")
    assert code == 0, err
    report = json.loads(result.read_text())
    assert (report["test_images"], report["test_pairs"], report["test_examples"]) == (6, 4, 24)
    # by hand: pair j of the set overlays test image j // 4; correct iff the two longest capsules are its labels
    model, _, _ = load_model(folder)
    images, labels = D.load_split(MNIST, "test", "mnist")
    x, y, digits = materialise(MultiMNISTSet(*D.to_tensors(images[:6], labels[:6]), pairs=4))
    with torch.no_grad():
        output = model(x, y, digits)
    top2 = output.scores.topk(2, dim=1).indices.sort(dim=1).values
    accuracy = (top2 == y.sort(dim=1).values).all(dim=1).double().mean().item()
    assert report["test_accuracy"] == pytest.approx(accuracy)
    assert report["test_loss"] == pytest.approx(output.loss.item(), rel=1e-5)


def test_evaluate_expanded_mnist_scores_the_expanded_and_the_affine_test_sets(generated_runs, tmp_path):
    folder, result = generated_runs["mnist-expanded"], tmp_path / "eval.json"
    code, out, err = cli("evaluate", f"--ckpt-path={folder}", f"--result-path={result}", "--device", "cpu")
    assert code == 0, err
    report, row = json.loads(result.read_text()), logged(folder)
    assert (report["test_examples"], report["affine_examples"]) == (20, 20) and "test_pairs" not in report
    assert report["test_accuracy"] == pytest.approx(row.test_accuracy)
    assert report["test_loss"] == pytest.approx(row.test_loss, rel=1e-6)
    assert report["affine_accuracy"] == pytest.approx(row.affine_accuracy)
    assert np.array(report["confusion_matrix"]).sum() == 20
    assert f"mnist-expanded test error {row.test_error:.2f}%" in out
    assert f"affNIST-style (generated) error {row.affine_error:.2f}%" in out


@pytest.mark.parametrize("run, argv, named", [
    ("multimnist", ["--test-pairs", "60001"], "test_pairs must be an integer in"),
    ("mnist", ["--test-pairs", "5"], "--test-pairs"),
    ("multimnist", ["--test-pairs", "0"], "--test-pairs"),
])
def test_evaluate_test_pairs_mistakes_are_one_line(generated_runs, recon, tmp_path, run, argv, named):
    folder = recon.ckpt if run == "mnist" else generated_runs[run]
    code, out, err = cli("evaluate", f"--ckpt-path={folder}", *argv, "--device", "cpu",
                         "--result-path", tmp_path / "eval.json")
    assert code == 2
    assert named in one_line(err)
    assert out == "" and list(tmp_path.iterdir()) == []


def test_figures_of_a_generated_run_are_one_line(generated_runs, tmp_path):
    code, out, err = cli("reconstruct", f"--ckpt-path={generated_runs['multimnist']}",
                         "--result-path", tmp_path / "r.png", "--device", "cpu")
    assert code == 2
    assert "08_multimnist" in one_line(err) and out == ""


# ---------------------------------------------------------------------------------------------
# run folders and files that cannot be used: one line, exit 2, nothing already written lost


def copy_run(run: Trained, root: Path) -> tuple[Path, Path]:
    """A copy of a trained run's two folders, to damage or continue without touching the original."""
    return shutil.copytree(run.ckpt, root / "ckpt"), shutil.copytree(run.logs, root / "logs")


def test_resume_into_the_logs_of_another_run_is_refused(norecon, recon, tmp_path):
    # norecon's checkpoint, but --logs-dir holds recon's logs: resuming must not write over them
    logs = shutil.copytree(recon.logs, tmp_path / "logs")
    before = {"ckpt": snapshot(norecon.ckpt), "logs": snapshot(logs)}
    code, out, err = cli(*train_argv(norecon.ckpt, logs, False, "--resume"))
    assert code == 2
    line = one_line(err)
    assert "--logs-dir" in line and str(logs) in line and "another run" in line
    assert {"ckpt": snapshot(norecon.ckpt), "logs": snapshot(logs)} == before


@pytest.mark.parametrize("damage", ["run-json-says-running", "no-metrics-csv"])
def test_resume_of_a_run_killed_before_its_final_logs_finishes_them(norecon, tmp_path, damage):
    """Killed after the last epoch's checkpoint, before run.json said complete (or before metrics.csv
    was written): --resume reports the run as trained and completes its logs from the checkpoint."""
    ckpt, logs = copy_run(norecon, tmp_path)
    if damage == "run-json-says-running":
        info = json.loads((logs / "run.json").read_text())
        info["status"] = "running"
        del info["summary"]
        (logs / "run.json").write_text(json.dumps(info))
    else:
        (logs / "metrics.csv").unlink()
    last = (ckpt / "last.pt").read_bytes()
    code, out, err = cli(*train_argv(ckpt, logs, False, "--resume"))
    assert code == 0, err
    assert re.search(r"already trained for 1 epoch$", out, re.M) and "final test error" in out
    assert re.search(r"final test error [0-9.]+% after 1 epoch;", out)  # one epoch, not "1 epochs"
    info = json.loads((logs / "run.json").read_text())
    assert info["status"] == "complete" and info["summary"]["epochs_done"] == 1
    pd.testing.assert_frame_equal(pd.read_csv(logs / "metrics.csv"), norecon.metrics)
    assert (ckpt / "last.pt").read_bytes() == last  # nothing trained


def test_resume_never_cuts_the_logs_of_the_same_run_trained_further(norecon, resumed, tmp_path):
    """--logs-dir B holds the logs of this run trained to epoch 2 (resumed), the checkpoint in --ckpt-dir
    stopped at epoch 1 (norecon): resuming from it used to rewrite B's metrics.csv and run.json from
    epoch 1 on. Refused in one line, nothing touched."""
    ckpt = shutil.copytree(norecon.ckpt, tmp_path / "ckpt")
    logs = shutil.copytree(resumed[4], tmp_path / "logs")
    before = {"ckpt": snapshot(ckpt), "logs": snapshot(logs)}
    argv = train_argv(ckpt, logs, False, "--resume")
    argv[argv.index("--epochs") + 1] = "3"
    code, out, err = cli(*argv)
    assert code == 2
    line = one_line(err)
    assert "--logs-dir" in line and str(logs) in line and "2 epochs" in line and str(ckpt / "last.pt") in line
    assert {"ckpt": snapshot(ckpt), "logs": snapshot(logs)} == before


@pytest.mark.parametrize("metrics", ["its-own", "another-runs"])
def test_a_run_json_replaced_by_garbage(norecon, recon, tmp_path, metrics):
    """run.json overwritten by garbage: with the run's own metrics.csv beside it (the checkpoint's history),
    --resume rebuilds run.json from the checkpoint (it used to be refused for ever, 'choose another
    folder', in the run's own folder); beside another run's metrics.csv, the one line says how to
    recover, and nothing is touched."""
    ckpt, logs = copy_run(norecon, tmp_path)
    (logs / "run.json").write_text("{ not json")
    if metrics == "another-runs":
        shutil.copy2(recon.logs / "metrics.csv", logs / "metrics.csv")
    before = {"ckpt": snapshot(ckpt), "logs": snapshot(logs)}
    code, out, err = cli(*train_argv(ckpt, logs, False, "--resume"))
    if metrics == "its-own":
        assert code == 0, err
        assert "run.json is unreadable" in out and "rebuilt from the checkpoint" in out
        info = json.loads((logs / "run.json").read_text())
        assert info["status"] == "complete" and info["sessions"] == norecon.info["sessions"]
        pd.testing.assert_frame_equal(pd.read_csv(logs / "metrics.csv"), norecon.metrics)
    else:
        assert code == 2
        line = one_line(err)
        assert str(logs) in line and "move both out of the folder and resume again" in line
        assert {"ckpt": snapshot(ckpt), "logs": snapshot(logs)} == before


@pytest.mark.parametrize("cut", ["mid-line", "last-row-lost"])
def test_a_finished_run_whose_metrics_csv_was_cut_gets_it_back_from_its_checkpoint(norecon, tmp_path, cut):
    """metrics.csv of a finished run cut short (a copy interrupted, a full disk elsewhere): --resume used
    to say 'already trained' and keep it, and read back its final error was the previous epoch's. Read
    back now, it is refused by name; --resume (and so a sweep) rewrites it from the checkpoint."""
    from capslib.core.errors import RunFolderError
    from capslib.core.runs import read_run

    ckpt, logs = copy_run(norecon, tmp_path)
    text = (logs / "metrics.csv").read_text()
    lines = text.splitlines(keepends=True)
    (logs / "metrics.csv").write_text(text[:-40] if cut == "mid-line" else "".join(lines[:-1]))
    with pytest.raises(RunFolderError, match="metrics.csv"):
        read_run(logs)
    code, out, err = cli(*train_argv(ckpt, logs, False, "--resume"))
    assert code == 0, err
    assert "already trained" in out and "rewritten" in out
    assert (logs / "metrics.csv").read_text() == text
    assert read_run(logs).history.test_error.iloc[-1] == norecon.metrics.test_error.iloc[-1]


@pytest.mark.parametrize("replacement", ["best.pt", "state_dict"])
def test_resume_from_a_weights_only_last_pt_is_one_line(norecon, tmp_path, replacement):
    """last.pt overwritten by a best.pt (weights, no optimizer) or a plain state_dict: --resume names
    the file and says why, in the real process, without a traceback and without touching the folder."""
    ckpt, logs = copy_run(norecon, tmp_path)
    if replacement == "best.pt":
        shutil.copy2(ckpt / "best.pt", ckpt / "last.pt")
    else:
        torch.save(load_checkpoint(ckpt / "best.pt")["model"], ckpt / "last.pt")
    before = {"ckpt": snapshot(ckpt), "logs": snapshot(logs)}
    argv = train_argv(ckpt, logs, False, "--resume")
    argv[argv.index("--epochs") + 1] = "2"
    done = python_m_capslib(*argv, cwd=tmp_path)
    assert done.returncode != 0
    line = one_line(done.stderr)
    assert line.startswith("capslib train: error:") and str(ckpt / "last.pt") in line
    assert ("optimizer" if replacement == "best.pt" else "not a capslib checkpoint") in line
    assert {"ckpt": snapshot(ckpt), "logs": snapshot(logs)} == before


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
@pytest.mark.parametrize("command", ["evaluate", "reconstruct", "perturb"])
def test_result_path_that_is_a_folder_is_one_line(recon, tmp_path, command, overwrite):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "kept.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    code, out, err = cli(command, f"--ckpt-path={recon.ckpt}", f"--result-path={folder}", *overwrite,
                         "--device", "cpu", "--test-subset", "50")
    assert code == 2
    line = one_line(err)
    assert "--result-path" in line and str(folder) in line and "is a folder" in line
    assert out == "" and snapshot(tmp_path) == before


def test_a_disk_that_fills_during_a_checkpoint_write_is_one_line(norecon, tmp_path, monkeypatch):
    ckpt, logs = copy_run(norecon, tmp_path)
    last = (ckpt / "last.pt").read_bytes()

    def full_disk(obj, file, *args, **kwargs):
        file.write(b"\0" * 4096)  # part of the checkpoint reaches the disk, then it is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    argv = train_argv(ckpt, logs, False, "--resume")
    argv[argv.index("--epochs") + 1] = "2"  # one more epoch, then its checkpoints
    code, _, err = cli(*argv)
    assert code == 2
    line = one_line(err)
    assert os.strerror(errno.ENOSPC) in line
    assert str(ckpt / "best.pt") in line or str(ckpt / "last.pt") in line
    monkeypatch.undo()
    assert (ckpt / "last.pt").read_bytes() == last
    assert load_checkpoint(ckpt)["epoch"] == 1
    assert not [p for folder in (ckpt, logs) for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_read_only_ckpt_dir_is_one_line(tmp_path, monkeypatch):
    # tests may run as root, who writes anywhere: the check is faked, not the permission
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "ckpt"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != ckpt and real_access(path, mode, **kw))
    code, out, err = cli("train", f"--mnist-root-path={MNIST}", f"--ckpt-dir={ckpt}", *QUICK)
    assert code == 2
    line = one_line(err)
    assert "--ckpt-dir" in line and str(ckpt) in line and "not writable" in line
    assert out == "" and list(tmp_path.iterdir()) == []


def test_logs_dir_holding_a_run_with_its_checkpoint_says_how_to_continue_it(recon, tmp_path):
    # recon's checkpoint folder as the --logs-dir of a new run: it does hold a checkpoint
    before = snapshot(recon.ckpt)
    new = tmp_path / "new"
    code, _, err = cli(*train_argv(new, recon.ckpt, True))
    assert code == 2
    line = one_line(err)
    assert "--logs-dir" in line and str(recon.ckpt) in line
    assert "no checkpoint" not in line and "--ckpt-dir" in line and "--resume" in line
    assert snapshot(recon.ckpt) == before and not new.exists()


# ---------------------------------------------------------------------------------------------
# checkpoints that are not capslib's, or damaged: one line naming the file


def test_random_bytes_are_not_a_capslib_checkpoint(tmp_path):
    fake = tmp_path / "model.pt"
    fake.write_bytes(np.random.default_rng(0).bytes(4096))
    code, _, err = cli("evaluate", f"--ckpt-path={fake}", "--device", "cpu", "--test-subset", "50")
    assert code == 2
    line = one_line(err)
    assert str(fake) in line and "not a capslib checkpoint" in line
    assert "weights_only" not in line.replace(" ", "_").lower()  # not torch's advice to load it unsafely


def damaged_checkpoints() -> dict[str, dict]:
    from capslib.core.config import TrainConfig
    from capslib.core.checkpoint import model_for

    config = TrainConfig(routing_iterations=1, reconstruction=False)
    weights = model_for(config).state_dict()
    valid = {"format": 1, "epoch": 1, "config": config.to_dict(), "history": [], "model": weights}
    return {
        "format-only": {"format": 1},
        "weights-of-another-model": {**valid, "model": {"conv1.weight": torch.zeros(2, 2)}},
        "routing-0": {**valid, "config": {**config.to_dict(), "routing_iterations": 0}},
    }


@pytest.mark.parametrize("damage, named", [("format-only", "'epoch'"), ("weights-of-another-model", "do not fit"),
                                           ("routing-0", "routing_iterations")])
def test_damaged_checkpoint_is_one_line_naming_the_file(tmp_path, damage, named):
    fake = tmp_path / "damaged.pt"
    torch.save(damaged_checkpoints()[damage], fake)
    code, out, err = cli("evaluate", f"--ckpt-path={fake}", "--device", "cpu", "--test-subset", "50")
    assert code == 2
    line = one_line(err)
    assert line.startswith("capslib evaluate: error:") and str(fake) in line and named in line
    assert out == ""


# ---------------------------------------------------------------------------------------------
# Ctrl-C and machines without a GPU


def interrupted_cli(*argv) -> tuple[int, str, str]:
    """cli(), failing the test (not the whole session) if KeyboardInterrupt escapes main()."""
    try:
        return cli(*argv)
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped capslib's main()")


def test_ctrl_c_before_the_first_checkpoint_claims_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "load_dataset", interrupt)
    ckpt = tmp_path / "ckpt"
    code, _, err = interrupted_cli("train", f"--mnist-root-path={MNIST}", f"--ckpt-dir={ckpt}", *QUICK)
    assert code == 130
    line = one_line(err)
    assert "interrupted" in line and "kept" not in line and "no checkpoint" in line
    assert not (ckpt / "last.pt").exists()


def test_ctrl_c_of_a_resumed_run_names_the_checkpoint_kept(norecon, tmp_path, monkeypatch):
    ckpt, logs = copy_run(norecon, tmp_path)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "load_dataset", interrupt)
    argv = train_argv(ckpt, logs, False, "--resume")
    argv[argv.index("--epochs") + 1] = "2"
    code, _, err = interrupted_cli(*argv)
    assert code == 130
    line = one_line(err)
    assert str(ckpt / "last.pt") in line and "kept" in line and "--resume" in line


def test_ctrl_c_during_imports_is_one_line(monkeypatch):
    """Ctrl-C while main() imports what the parser needs (capslib.core.predict here) prints no traceback."""

    class Interrupting:
        def find_spec(self, name, path=None, target=None):
            if name == "capslib.core.predict":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "capslib.core.predict")
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    code, out, err = interrupted_cli("evaluate", "--help")
    assert code == 130
    assert one_line(err) == "capslib: interrupted" and out == ""


# python -m capslib in a Python where `missing` cannot be imported (None in sys.modules: what an environment
# without it does, ModuleNotFoundError), as before `make setup`
WITHOUT = "import runpy, sys; sys.modules[sys.argv[1]] = None; sys.argv[1:2] = []; runpy.run_module('capslib', run_name='__main__')"


@pytest.mark.parametrize("missing, argv", [("PIL", ["--help"]), ("PIL", ["predict", "--help"]),
                                           ("torch", ["evaluate", "--ckpt-path", "."])])
def test_a_dependency_not_installed_is_one_line_saying_make_setup(missing, argv):
    ran = subprocess.run([sys.executable, "-c", WITHOUT, missing, *argv], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 1 and ran.stdout == ""
    line = one_line(ran.stderr)
    assert line.startswith(f"capslib: {missing} is not installed") and "`make setup`" in line


def test_bench_on_a_machine_without_cuda_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, out, err = cli("bench", "--steps", "1")
    assert code == 2
    line = one_line(err)
    assert line.startswith("capslib bench: error:") and "needs a CUDA GPU" in line
    assert out == "" and list(tmp_path.iterdir()) == []


def test_a_reader_that_stops_early_ends_the_command_quietly():
    # `capslib sweep --list | head -1`: the pipe closes before capslib writes (it is still importing torch)
    process = subprocess.Popen([sys.executable, "-m", "capslib", "sweep", "official,ablation", "--list"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141  # 128 + SIGPIPE, as a Unix tool killed by it
    assert stderr == ""
