"""One GPU per run (capslib/gpus.py) and one process per run folder (capslib/runs.py), with real
processes: the locks are flocks, so only separate processes can show that they exclude each other.
The GPUs are faked (a list of names), so this runs on any CPU machine."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from capslib.core.config import TrainConfig
from capslib.core import gpus
from capslib.core.errors import CapslibError, RunFolderError
from capslib.core.gpus import claim_gpu, scheduler_gpus
from capslib.core.runs import open_run_folder

REPO = Path(__file__).resolve().parent.parent

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from capslib.core.gpus import claim_gpu, scheduler_gpus
    index = claim_gpu(sys.argv[2].split(","), Path(sys.argv[1]), log=lambda line: print("waiting", flush=True),
                      poll_seconds=0.05)
    print(f"claimed {index}", flush=True)
    time.sleep(float(sys.argv[3]))
""")


@pytest.fixture(autouse=True)
def outside_slurm(monkeypatch):
    """These tests are about the locks: run inside a Slurm job given GPUs (a test run on a cluster
    node), claim_gpu would rightly skip them."""
    for name in [n for n in os.environ if n.startswith("SLURM_")]:
        monkeypatch.delenv(name)


def start_holder(lock_dir: Path, gpus: list[str], hold_seconds: float = 60, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_dir), ",".join(gpus), str(hold_seconds)],
                            cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), **env})


def first_line(process: subprocess.Popen) -> str:
    return process.stdout.readline().strip()


def test_two_processes_never_hold_the_same_gpu(tmp_path):
    gpus = ["GPU-a", "GPU-b"]
    first, second = start_holder(tmp_path, gpus), start_holder(tmp_path, gpus)
    try:
        claimed = {first_line(first), first_line(second)}
        assert claimed == {"claimed 0", "claimed 1"}
    finally:
        first.kill(), second.kill()


def test_more_runs_than_gpus_wait_and_a_killed_run_frees_its_gpu(tmp_path):
    holder = start_holder(tmp_path, ["GPU-a"])
    assert first_line(holder) == "claimed 0"
    waiter = start_holder(tmp_path, ["GPU-a"])
    try:
        assert first_line(waiter) == "waiting"  # all GPUs held: it waits instead of sharing
        holder.send_signal(signal.SIGKILL)  # the kernel releases a dead process's lock
        holder.wait()
        assert first_line(waiter) == "claimed 0"
    finally:
        holder.kill(), waiter.kill()


def test_a_process_claims_the_first_free_gpu(tmp_path):
    holder = start_holder(tmp_path, ["GPU-a"])
    try:
        assert first_line(holder) == "claimed 0"
        assert claim_gpu(["GPU-a", "GPU-b", "GPU-c"], tmp_path, poll_seconds=0.05) == 1
    finally:
        holder.kill()


def test_under_slurm_the_gpu_the_scheduler_gave_is_used_without_waiting_for_a_lock(tmp_path):
    """A Slurm job step given a GPU sees only it (CUDA_VISIBLE_DEVICES) and takes it, even when a lock of
    ours says it is held (a run outside Slurm, or another job's lock in a shared folder): the lock must
    not make a job wait for the GPU the scheduler gave it."""
    holder = start_holder(tmp_path, ["GPU-a"])
    try:
        assert first_line(holder) == "claimed 0"
        lines = []
        slurm = {"SLURM_JOB_ID": "17", "SLURM_STEP_GPUS": "3", "CUDA_VISIBLE_DEVICES": "3"}
        assert claim_gpu(["GPU-a"], tmp_path, log=lines.append, poll_seconds=0.05, environ=slurm) == 0
        assert lines == ["GPU 3 given by Slurm to job 17: using it without a lock"]
        # a Slurm job given no GPU shares the node's GPUs with this user's other runs: the locks still apply
        waiting = start_holder(tmp_path, ["GPU-a"], SLURM_JOB_ID="18")
        try:
            assert first_line(waiting) == "waiting"
        finally:
            waiting.kill()
    finally:
        holder.kill()


def test_the_gpus_slurm_gave_are_read_from_its_variables():
    assert scheduler_gpus({}) is None                                     # not in Slurm
    assert scheduler_gpus({"SLURM_JOB_ID": "5"}) is None                  # in Slurm, no GPU asked for
    assert scheduler_gpus({"SLURM_JOB_ID": "5", "SLURM_JOB_GPUS": "1"}) == "1"  # the batch script
    assert scheduler_gpus({"SLURM_JOB_ID": "5", "SLURM_JOB_GPUS": "1,2", "SLURM_STEP_GPUS": "2"}) == "2"  # a step
    assert scheduler_gpus({"SLURM_STEP_GPUS": "0"}) is None               # a stray variable outside a job


@pytest.mark.parametrize("damage", ["locks-folder-is-a-file", "lock-is-a-folder", "read-only-locks-folder"])
def test_a_lock_folder_or_file_that_cannot_be_used_is_one_line(tmp_path, monkeypatch, damage):
    """CAPSLIB_GPU_LOCKS naming a file, a lock that is a folder, a folder where locks cannot be written:
    each was a traceback (FileExistsError, IsADirectoryError, PermissionError); now a CapslibError (one
    line on the command line) naming the path and the variable, with nothing changed."""
    locks = tmp_path / "locks"
    if damage == "locks-folder-is-a-file":
        locks.write_text("not a folder")
        named = locks
    elif damage == "lock-is-a-folder":
        (locks / "GPU-a.lock").mkdir(parents=True)
        named = locks / "GPU-a.lock"
    else:
        locks.mkdir(mode=0o500)
        named = locks / "GPU-a.lock"
        if os.geteuid() == 0:  # root writes anywhere: the refusal is faked, not the permission
            def read_only(path, *args, **kwargs):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            monkeypatch.setattr(gpus, "open", read_only, raising=False)
    monkeypatch.setenv("CAPSLIB_GPU_LOCKS", str(locks))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(CapslibError) as refused:
        claim_gpu(["GPU-a"], poll_seconds=0.05)
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and f"cannot use {named} (" in message and "CAPSLIB_GPU_LOCKS" in message
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


LOCKER = textwrap.dedent("""
    import sys, time
    from capslib.core.runs import open_run_folder
    with open_run_folder(sys.argv[1], sys.argv[1], resume=True):
        print("locked", flush=True)
        time.sleep(60)
""")


def test_a_run_folder_in_use_is_refused_and_freed_when_its_process_dies(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", LOCKER, str(folder)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert first_line(holder) == "locked"
        with pytest.raises(RunFolderError, match="in use by another training process"):
            with open_run_folder(folder, folder, resume=True):
                pass
        holder.kill()
        holder.wait()
        with open_run_folder(folder, folder, resume=True) as checkpoint:
            assert checkpoint is None  # empty folder: a fresh start
    finally:
        holder.kill()


def test_two_trainings_started_together_into_one_folder_one_is_refused(tmp_path):
    """Two real `capslib train` processes into one --ckpt-dir: one trains, the other exits 2 at once
    with one line, and the folder holds exactly one run."""
    folder = tmp_path / "run"
    argv = [sys.executable, "-m", "capslib", "train", "--train-subset", "256", "--test-subset", "50",
            "--batch-size", "64", "--epochs", "2", "--routing", "1", "--device", "cpu", "--ckpt-dir", str(folder)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in processes]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "in use by another training process" in refused and len(refused.strip().splitlines()) == 1
    assert (folder / "last.pt").is_file() and (folder / "metrics.csv").is_file()


def test_stale_temporary_files_of_a_killed_write_do_not_block_a_resume(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")  # what a kill mid-write leaves
    with open_run_folder(folder, folder, resume=True) as checkpoint:
        assert checkpoint is None
    assert not any(folder.iterdir())


def test_a_read_only_or_file_run_folder_is_one_line(tmp_path):
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        with open_run_folder(file, file, resume=False):
            pass
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        with pytest.raises(RunFolderError, match="not writable"):
            with open_run_folder(locked, locked, resume=False):
                pass


def test_sweep_time_limit_stops_runs_with_a_checkpoint_and_resumes(tmp_path):
    from capslib.study.sweep import sweep

    config = TrainConfig(train_subset=256, test_subset=50, batch_size=64, epochs=3, routing_iterations=1,
                         device="cpu", ckpt_dir=str(tmp_path / "run"))
    assert sweep([config], deadline=time.time() - 1, log=lambda *_: None) == 1  # too late to start
    assert not (tmp_path / "run").exists()
    from capslib.core.train import train

    stopped = train(config, log=lambda *_: None, deadline=time.time())  # stops after its first evaluation
    assert stopped.info["status"] == "stopped" and list(stopped.history.epoch) == [1]
    assert sweep([config], log=lambda *_: None) == 0
    resumed = TrainConfig.from_dict(config.to_dict())
    from capslib.core.runs import read_run

    run = read_run(resumed.log_dir)
    assert run.info["status"] == "complete" and list(run.history.epoch) == [1, 2, 3]
    assert [s["start_epoch"] for s in run.info["sessions"]] == [0, 1]


def test_runs_per_gpu_fills_every_gpu_once_before_any_gpu_takes_a_second_run(tmp_path):
    """CAPSLIB_RUNS_PER_GPU=2 (sweep --runs-per-gpu 2): two slots a GPU, each its own lock; the runs
    spread over the GPUs first, and a fifth run waits."""
    gpus, shared = ["GPU-a", "GPU-b"], {"CAPSLIB_RUNS_PER_GPU": "2"}
    holders = []
    try:
        for expected in ("claimed 0", "claimed 1", "claimed 0", "claimed 1", "waiting"):
            holders.append(start_holder(tmp_path, gpus, **shared))
            assert first_line(holders[-1]) == expected
        # a run that allows no sharing finds every first slot held, and waits too
        holders.append(start_holder(tmp_path, gpus))
        assert first_line(holders[-1]) == "waiting"
    finally:
        for holder in holders:
            holder.kill()


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_a_runs_per_gpu_that_is_not_a_whole_number_is_one_line_naming_the_variable(tmp_path, value):
    with pytest.raises(CapslibError) as refused:
        claim_gpu(["GPU-a"], tmp_path, poll_seconds=0.05, environ={"CAPSLIB_RUNS_PER_GPU": value})
    assert "CAPSLIB_RUNS_PER_GPU" in str(refused.value) and len(str(refused.value).splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing locked


def test_sweep_runs_per_gpu_reaches_every_run_it_starts(tmp_path, monkeypatch):
    """`capslib sweep --runs-per-gpu K` sets the slots that each run's claim reads, here and in the workers
    it spawns (they inherit the environment); 0 is refused as a flag."""
    from helpers import cli

    seen = []
    monkeypatch.setattr("capslib.study.sweep.sweep", lambda configs, jobs, **_: seen.append(
        (jobs, gpus.runs_per_gpu())) or 0)
    monkeypatch.setenv("CAPSLIB_RUNS_PER_GPU", "1")  # so that what the sweep sets is undone after the test
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("sweep", "table1", "--profile", "tiny", "--device", "cpu", "--jobs", "4", "--runs-per-gpu", "2")
    assert code == 0, err
    assert seen == [(4, 2)]
    code, _, err = cli("sweep", "table1", "--profile", "tiny", "--runs-per-gpu", "0")
    assert code == 2 and "--runs-per-gpu" in err
