"""Runs and sweeps stopped from outside, with real processes and real signals: kill -9 in the middle
of a checkpoint write, SIGTERM and SIGKILL to a sweep, Ctrl-C while capslib starts, a disk that fills.
Whatever a stop leaves on disk must resume (or start again) with the same command, and no stopped
run may keep training or keep its folder locked.

Every run here is tiny (64 training images at batch 32, one or two epochs, CPU)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from capslib.core.runs import open_run_folder
from capslib.study.studies import study_runs

from helpers import one_line

REPO = Path(__file__).resolve().parent.parent
TINY = ["--train-subset", "64", "--test-subset", "50", "--batch-size", "32", "--routing", "1", "--device", "cpu"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def capslib(*argv, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "capslib", *map(str, argv)], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=300, **kwargs)




# `capslib ARGV`, killed by a real SIGKILL while it writes its first last.pt: the temporary file
# holds part of the checkpoint, best.pt (written just before) is whole.
KILLED_WRITING_LAST = textwrap.dedent("""
    import os, signal, sys
    from capslib.core import checkpoint
    real_save = checkpoint.atomic_save

    def save(obj, path):
        if path.name == "last.pt":
            with checkpoint.atomic_path(path) as tmp:
                tmp.write_bytes(b"part of a checkpoint")
                os.kill(os.getpid(), signal.SIGKILL)
        real_save(obj, path)

    checkpoint.atomic_save = save
    from capslib.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_killed_while_writing_the_first_last_pt_resumes(tmp_path):
    run, epochs = tmp_path / "run", 2
    argv = ["train", *TINY, "--epochs", epochs, "--ckpt-dir", run]
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITING_LAST, *map(str, argv)], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (run / "best.pt").is_file() and not (run / "last.pt").exists()
    resumed = capslib(*argv, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "starting it again" in resumed.stdout
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "complete" and info["summary"]["epochs_done"] == epochs
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


# Python that stalls while capslib.cli loads (an import finder prints "importing" and sleeps when
# capslib.study.studies is asked for), then starts capslib as ENTRY says: a real Ctrl-C lands there.
SLOW_IMPORT = textwrap.dedent("""
    import sys, time

    class Slow:
        def find_spec(self, name, path=None, target=None):
            if name == "capslib.study.studies":
                print("importing", flush=True)
                time.sleep(60)
            return None

    sys.meta_path.insert(0, Slow())
""")


def console_script() -> str:
    """What pip writes for the `capslib` command, from pyproject.toml's entry point."""
    import tomllib

    module, function = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["capslib"].split(":")
    return f"import re, sys\nfrom {module} import {function}\nsys.exit({function}())\n"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib")
@pytest.mark.parametrize("entry", ["python -m capslib", "capslib"])
def test_ctrl_c_while_capslib_loads_is_one_line(tmp_path, entry):
    """Ctrl-C in the first fraction of a second, while capslib.cli loads, before main() runs: it used to
    print a KeyboardInterrupt traceback of 20-40 lines."""
    start = 'import runpy; runpy.run_module("capslib", run_name="__main__")' if entry != "capslib" else console_script()
    process = subprocess.Popen([sys.executable, "-c", SLOW_IMPORT + start, "train", "--help"], cwd=tmp_path, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert process.stdout.readline() == "importing\n"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130 and out == ""
    assert one_line(err) == "capslib: interrupted"


def test_sigterm_stops_capslib_train_as_ctrl_c_does(tmp_path):
    """SIGTERM (kill, scancel) to a training run: one line naming the checkpoint to resume from, exit
    status 143, and run.json says 'interrupted' (it used to say 'running' for ever)."""
    run = tmp_path / "run"
    train = subprocess.Popen([sys.executable, "-m", "capslib", "train", *TINY, "--epochs", "1000", "--ckpt-dir", str(run)],
                             cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (run / "last.pt").is_file(), 240, "the run wrote no checkpoint")
        train.send_signal(signal.SIGTERM)
        _, stderr = train.communicate(timeout=60)
    finally:
        train.kill()
    assert train.returncode == 128 + signal.SIGTERM
    line = one_line(stderr)
    assert "terminated (SIGTERM)" in line and str(run / "last.pt") in line and "--resume" in line
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"


# ---------------------------------------------------------------------------------------------
# a sweep of two runs at a time, stopped


# table1's two routing 1 runs at the tiny profile
SWEPT = tuple(Path(c.log_dir).name for c in study_runs("table1", [1], "runs", "results", "tiny")
              if c.model == "capsnet" and c.routing_iterations == 1)


def sweep_argv(root: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "capslib", "sweep", "table1", "--profile", "tiny", "--seeds", "1", "--jobs", "2",
            "--device", "cpu", "--epochs", str(epochs), "--only", SWEPT[0], "--only", SWEPT[1],
            "--runs-dir", str(root / "runs"), "--results-dir", str(root / "results")]


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                pass  # gone meanwhile
    return found


def alive(pid: int) -> bool:
    """Running (a zombie that its new parent has not reaped yet has stopped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} after {seconds} s"
        time.sleep(0.2)


# A SIGTERM whose handler runs inside a finalizer (torch._dynamo's, while the first epoch compiles)
FINALIZER_STOPPED = textwrap.dedent("""
    import os, signal, sys, time
    from capslib.core.errors import Terminated, raise_on_sigterm

    raise_on_sigterm()

    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the signal arrives while the finalizer runs ...
            for _ in range(100_000):  # ... and its handler runs between these bytecodes
                pass

    try:
        Finalized()  # dropped at once: its __del__ runs here
        for _ in range(500):
            time.sleep(0.01)  # the stop must still come, here, outside the finalizer
        print("not stopped")
    except Terminated:
        print("stopped")
""")


def test_a_sigterm_that_lands_in_a_finalizer_stops_the_process_without_a_traceback():
    """Python prints "Exception ignored in ... Traceback" for an exception in a finalizer, and goes on as if
    never stopped: `make laptop` stopped in its first epoch printed such a block from torch._dynamo."""
    ran = subprocess.run([sys.executable, "-c", FINALIZER_STOPPED], env=ENV, capture_output=True, text=True, timeout=60)
    assert ran.stdout == "stopped\n" and ran.stderr == "", ran.stderr


def test_a_pool_worker_turns_sigterm_into_a_stop_only_while_its_run_trains(monkeypatch):
    """When a sweep ends, its pool terminates the workers, some still exiting after their run (torch's
    exit handlers): a SIGTERM that still raised Terminated there printed a traceback at the end of every
    sweep. The worker's handler is its task's alone."""
    from capslib.study import sweep

    during = []
    monkeypatch.setattr(sweep, "_train_one", lambda task: during.append(signal.getsignal(signal.SIGTERM)) or task)
    before = signal.getsignal(signal.SIGTERM)
    try:
        assert sweep._train_in_worker("task") == "task"
        assert during[0] is not before  # while the run trains, SIGTERM stops it (test_a_stopped_sweep_... below)
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from Linux's /proc")
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_stopped_sweep_stops_its_runs_and_a_rerun_continues_them(tmp_path, stop):
    """`capslib sweep --jobs 2` stopped by SIGTERM (kill, scancel) or SIGKILL while both its runs train:
    the pool's workers and the resource tracker end too (they used to be adopted by init and train on,
    holding their folders' locks), and each run's run.json says 'interrupted'. After SIGTERM the sweep
    says so in one line and, run again, continues both runs from their checkpoints; after SIGKILL (the
    same on disk) the run folders are free."""
    sweep = subprocess.Popen(sweep_argv(tmp_path, epochs=1000), cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    workers = []
    try:
        lasts = [tmp_path / "runs" / "table1" / name / "last.pt" for name in SWEPT]
        wait_until(lambda: all(last.is_file() for last in lasts), 240, "the runs wrote no checkpoint")
        workers = children(sweep.pid)
        assert len(workers) == 3  # two workers and multiprocessing's resource tracker
        sweep.send_signal(stop)
        _, stderr = sweep.communicate(timeout=60)
        wait_until(lambda: not any(map(alive, workers)), 60, "the sweep's processes still run")
    finally:
        sweep.kill()
        for pid in filter(alive, workers):  # nothing of this test outlives it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    logs = [tmp_path / "results" / "table1" / name for name in SWEPT]
    assert [json.loads((log / "run.json").read_text())["status"] for log in logs] == ["interrupted"] * 2
    # the resource tracker, seeing its sweep gone, cleans up the pool's semaphores without a word
    assert "resource_tracker" not in stderr and "leaked semaphore" not in stderr, stderr
    if stop == signal.SIGKILL:  # what remains is as after SIGTERM (below): the run folders are free
        for name, log in zip(SWEPT, logs):
            with open_run_folder(tmp_path / "runs" / "table1" / name, log, resume=True) as checkpoint:
                assert checkpoint.name == "last.pt"
        return
    assert sweep.returncode == 128 + signal.SIGTERM
    assert "run the same command again" in one_line(stderr)
    trained = max(int((log / "metrics.csv").read_text().splitlines()[-1].split(",")[0]) for log in logs)
    rerun = subprocess.run(sweep_argv(tmp_path, epochs=trained + 1), cwd=tmp_path, env=ENV, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0 and "2 of 2 runs finished" in rerun.stdout, rerun.stdout + rerun.stderr
    assert "Traceback" not in rerun.stderr  # the pool's SIGTERM to workers ending after their run is quiet
    for log in logs:
        info = json.loads((log / "run.json").read_text())
        assert info["status"] == "complete" and info["summary"]["epochs_done"] == trained + 1
        assert [s["start_epoch"] for s in info["sessions"]][0] == 0 and len(info["sessions"]) == 2


# ---------------------------------------------------------------------------------------------
# a disk that fills


def test_a_disk_that_fills_during_a_checkpoint_write_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    """A real failed write: the resumed run's file-size limit (RLIMIT_FSIZE, 1 MB) lets its logs through
    but not its next checkpoint, as a full disk would. torch.save then raised a RuntimeError of its own
    ("unexpected pos"), a traceback; now one line names the checkpoint and the error."""
    from capslib.core.checkpoint import load_checkpoint
    from capslib.core.config import TrainConfig
    from capslib.core.train import train

    run = tmp_path / "run"
    train(TrainConfig(train_subset=64, test_subset=50, batch_size=32, routing_iterations=1, epochs=1, device="cpu",
                      ckpt_dir=str(run)), log=lambda *_: None)
    last = (run / "last.pt").read_bytes()

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    full = capslib("train", *TINY, "--epochs", 2, "--ckpt-dir", run, "--resume", cwd=tmp_path, preexec_fn=small_files)
    assert full.returncode == 2
    line = one_line(full.stderr)
    assert os.strerror(errno.EFBIG) in line and ("best.pt" in line or "last.pt" in line)
    assert (run / "last.pt").read_bytes() == last and load_checkpoint(run)["epoch"] == 1
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed" and os.strerror(errno.EFBIG) in info["error"]
