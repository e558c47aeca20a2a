"""Sweeps on Slurm (capslib/study/slurm.py, capslib/study/cluster.py).

Without a cluster: the settings from a file and from flags, every mistake one line before anything is
submitted; what the executor asks sbatch for; a task's stop at an epoch's end on USR2, its requeue
through submitit's handler and the fallback when the epoch does not end in time; the Makefile's
EXECUTOR.

Against a real one-node Slurm (tools/slurm/start.sh, started by the `cluster` fixture for this module and
stopped after it; the tests skip with the reason where Slurm is not installed, and fail instead on CI
(CI=true), whose .ci/run installs it): a tiny study submitted finishes every run, one of its tasks
preempted mid-run (`scancel --signal=USR2`) and requeued, with contiguous metrics and one session per
attempt; a second submission trains nothing; a task at a one-minute time limit is requeued until its run
finishes; a held task is pending, a second sweep waits on it instead of submitting it twice, and once
cancelled its run is submitted anew; a setting sbatch refuses is one line and submits nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capslib.core.config import TrainConfig
from capslib.core.runs import read_run
from capslib.core.train import train
from capslib.study import slurm
from capslib.study.cluster import SlurmSettings, settings_from
from capslib.study.studies import study_runs

from helpers import cli, one_line

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / "tools" / "slurm"


# ---------------------------------------------------------------------------------------------
# helpers






def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def sweep_argv(tmp_path: Path, study: str, *argv: str) -> list[str]:
    """A tiny sweep on Slurm, one CPU per task, into tmp_path/runs and tmp_path/results."""
    return [sys.executable, "-m", "capslib", "sweep", study, "--profile", "tiny", "--device", "cpu",
            "--executor", "slurm", "--slurm-cpus", "1", "--runs-dir", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "results"), *argv]


def start_sweep(tmp_path: Path, study: str, *argv: str) -> subprocess.Popen:
    return subprocess.Popen(sweep_argv(tmp_path, study, *argv), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def finish(process: subprocess.Popen, timeout: float) -> str:
    try:
        return process.communicate(timeout=timeout)[0]
    finally:
        if process.poll() is None:
            process.kill()


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what} after {timeout} s")


def records(tmp_path: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "runs" / "slurm").glob("*/submission.json"))]


def states(tmp_path: Path, study: str, seeds: list[int], **given) -> dict[str, tuple[str, str]]:
    """`--status` in-process: each run's (state, scheduler), by run name."""
    configs = study_runs(study, seeds, tmp_path / "runs", tmp_path / "results", "tiny", device="cpu", **given)
    lines = []
    slurm.status(configs, tmp_path / "runs", log=lines.append)
    return _parse_status(lines)


def _parse_status(lines: list[str]) -> dict[str, tuple[str, str]]:
    """The table `status` prints, by column position (the state may be two words: not started)."""
    header = lines[0]
    starts = [header.index(name) for name in ("run", "state", "epochs", "attempts", "job", "scheduler")]
    parsed = {}
    for line in lines[1:-1]:
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
        parsed[cells[0].split("/")[1]] = (cells[1], cells[5])
    return parsed


def task_log(record: dict, task: dict, suffix: str = "out") -> str:
    """What a task wrote (stdout or stderr), across its attempts."""
    folder = next(p.parent for p in (Path(task["ckpt_dir"]).parents[1] / "slurm").glob("*/submission.json")
                  if json.loads(p.read_text())["job"] == record["job"])
    return (folder / task["job"] / f"{task['job']}_0_log.{suffix}").read_text()


def stops(log: str) -> list[int]:
    """The epochs after which the run stopped, asked to by USR2, in order."""
    return [int(line.split("asked to stop after epoch ")[1].split(":")[0]) for line in log.splitlines()
            if "asked to stop after epoch " in line]


def check_attempts(run, log: str, epochs: int) -> int:
    """A run requeued until it finished: complete, one metrics row per epoch (no gap, no repeat), at most
    one session per attempt of its task (Slurm's restart count; an attempt requeued before it began to
    train has none), the first from epoch 0 and each attempt that stopped followed by one resuming there
    (no epoch trained twice). Returns the number of sessions."""
    assert run.info["status"] == "complete"
    assert list(run.history.epoch) == list(range(1, epochs + 1))
    sessions = run.info["sessions"]
    restarts, starts = [s["slurm_restarts"] for s in sessions], [s["start_epoch"] for s in sessions]
    assert restarts == sorted(set(restarts)) and len({s["slurm_job"] for s in sessions}) == 1
    assert starts[0] == 0 and starts == sorted(starts) and set(stops(log)) <= set(starts[1:])
    return len(sessions)


# ---------------------------------------------------------------------------------------------
# without a cluster: settings, parameters, the stop


def test_settings_come_from_the_file_then_the_flags(tmp_path):
    file = tmp_path / "cluster.toml"
    file.write_text('partition = "gpu"\naccount = "lab"\ntime = 240\ngpu_type = "a100"\n'
                    'sbatch = ["--constraint=a100", "#SBATCH --mail-type=FAIL"]\n')
    settings = settings_from(file, {"time": 30, "qos": "short", "sbatch": ("--exclusive",)})
    assert (settings.partition, settings.account, settings.qos, settings.time) == ("gpu", "lab", "short", 30)
    assert settings.sbatch == ("--constraint=a100", "#SBATCH --mail-type=FAIL", "--exclusive")
    parameters = slurm.executor_parameters(settings, gpus=1, job_name="capslib-table1")
    assert parameters["gres"] == "gpu:a100:1" and parameters["time"] == 30 and parameters["qos"] == "short"
    assert parameters["additional_parameters"] == {"requeue": True, "constraint": "a100", "mail-type": "FAIL",
                                                   "exclusive": True}
    assert parameters["wckey"] is None and parameters["signal_delay_s"] == 120
    assert settings_from(None, {}) == SlurmSettings()


def test_gres_is_asked_for_only_with_gpus_and_by_default_only_for_gpu_runs():
    defaults = SlurmSettings()
    assert "gres" not in slurm.executor_parameters(defaults, gpus=0, job_name="x")
    assert slurm.executor_parameters(defaults, gpus=1, job_name="x")["gres"] == "gpu:1"
    on_cpu, on_gpu = TrainConfig(device="cpu"), TrainConfig()
    assert slurm.gpus_per_run(defaults, [on_cpu, on_cpu]) == 0
    assert slurm.gpus_per_run(defaults, [on_cpu, on_gpu]) == 1
    assert slurm.gpus_per_run(SlurmSettings(gpus=0), [on_gpu]) == 0


def bad_file(tmp_path: Path, text: str) -> Path:
    file = tmp_path / "cluster.toml"
    file.write_text(text)
    return file


@pytest.mark.parametrize("argv, named", [
    (["--slurm-time", "0"], "--slurm-time"),
    (["--slurm-gpus", "2"], "--slurm-gpus"),
    (["--slurm-cpus", "four"], "--slurm-cpus"),
    (["--slurm-sbatch=--time=5"], "--slurm-time"),          # a setting of its own
    (["--slurm-sbatch=--output=x.log"], "--output"),        # capslib's own: the task logs
    (["--slurm-sbatch=-C a100"], "long form"),
    (["--slurm-sbatch=--ntasks=2"], "one process"),         # two processes would train the same run
    (["--slurm-time", "1"], "--slurm-signal-delay"),        # 120 s of warning in a 1-minute limit
    (["--slurm-config", "{tmp}/missing.toml"], "missing.toml"),
    (["--slurm-config", "{file:partition = gpu}"], "cluster.toml"),        # not TOML: the value unquoted
    (["--slurm-config", "{file:partion = 'gpu'}"], "'partion'"),
    (["--slurm-config", "{file:time = '4h'}"], "time must be an integer"),
    (["--slurm-config", "{file:sbatch = '--constraint=a100'}"], "sbatch must be a list"),
    (["--slurm-config", "{file:sbatch = ['--gres=gpu:2']}"], "gpus"),
    (["--jobs", "2"], "--slurm-max-running"),
    (["--time-limit", "30"], "--slurm-time"),
    (["--runs-per-gpu", "2"], "--slurm-gpus"),
])
def test_a_bad_slurm_setting_is_one_line_before_anything_is_submitted(tmp_path, monkeypatch, argv, named):
    monkeypatch.chdir(tmp_path)
    argv = [str(bad_file(tmp_path, a[6:-1])) if a.startswith("{file:") else a.format(tmp=tmp_path) for a in argv]
    code, out, err = cli("sweep", "table1", "--profile", "tiny", "--executor", "slurm", *argv)
    assert code == 2 and out == ""
    line = one_line(err)
    assert line.startswith("capslib sweep: error:") and named in line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def test_slurm_settings_without_the_slurm_executor_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("sweep", "table1", "--profile", "tiny", "--slurm-partition", "gpu")
    assert code == 2 and "--slurm-partition is a setting of --executor slurm" in one_line(err)


def test_without_slurm_commands_the_executor_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, squeue, ...
    code, _, err = cli("sweep", "table1", "--profile", "tiny", "--device", "cpu", "--executor", "slurm")
    assert code == 2 and "sbatch not found" in one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_waiting_on_tasks_submitted_before_names_each_in_its_scancel(tmp_path, monkeypatch):
    """A second copy of a sweep waits on the tasks the first submitted (1_0 and 1_1): the scancel it names
    must cancel both, not the first alone. Slurm itself is stood in for: this is what the sweep says."""
    configs = study_runs("precision", [1, 2], tmp_path / "runs", tmp_path / "results", "tiny", device="cpu")
    record = tmp_path / "runs" / slurm.SLURM_FOLDER / "20261207-000000" / slurm.RECORD
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"tasks": [{"log_dir": os.path.abspath(c.log_dir), "job": f"1_{i}"}
                                            for i, c in enumerate(configs)]}))
    monkeypatch.setattr(slurm, "check_commands", lambda: None)
    monkeypatch.setattr(slurm, "job_states", lambda jobs: {job: slurm.JobState("PENDING", "Priority", 0) for job in jobs})
    monkeypatch.setattr(slurm, "submit", lambda *args: pytest.fail("the tasks already submitted were submitted again"))
    monkeypatch.setattr(slurm, "wait", lambda tasks, log: [(t.name, False, "stood in for") for t in tasks])
    said = []
    slurm.sweep_on_slurm(configs, tmp_path / "runs", SlurmSettings(), "capslib-precision", "STATUS", log=said.append)
    assert "0 of 2 runs already finished; 2 in tasks already submitted (1): waiting on them" in said
    assert "each run's state: STATUS; `scancel 1_0 1_1` cancels (the runs keep their checkpoints)" in said


def test_ctrl_c_waits_until_an_accepted_submission_is_recorded():
    """Between sbatch accepting an array and its record, an interruption would leave tasks that the next
    sweep does not know of, and submits again."""
    done = []
    with pytest.raises(KeyboardInterrupt):
        with slurm._uninterrupted():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            done.append("recorded")
    assert done == ["recorded"]


@pytest.fixture
def submitit_handler():
    """What submitit installs for USR2 in a task (checkpoint, scontrol requeue, exit), faked: it records
    each call and exits as submitit's does."""
    calls = []

    def handler(signum, frame):
        calls.append(signum)
        raise SystemExit(-1)

    previous = signal.signal(signal.SIGUSR2, handler)
    yield calls
    signal.signal(signal.SIGUSR2, previous)


def test_usr2_asks_for_a_stop_and_submitit_requeues_only_when_told(submitit_handler):
    with slurm.StopOnSignal(within=60) as stop:
        assert not stop.requested()
        os.kill(os.getpid(), signal.SIGUSR2)
        assert stop.requested() and submitit_handler == []  # held back: the epoch in progress ends first
        with pytest.raises(SystemExit):
            stop.requeue()
    assert submitit_handler == [signal.SIGUSR2]
    assert signal.getsignal(signal.SIGUSR2).__name__ == "handler"  # submitit's handler is back


def test_an_epoch_that_does_not_end_in_time_is_requeued_anyway(submitit_handler):
    with pytest.raises(SystemExit):
        with slurm.StopOnSignal(within=0.2):
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(30)  # an epoch that would outlast the warning: the alarm interrupts it
    assert submitit_handler == [signal.SIGUSR2]


def test_a_task_told_to_stop_saves_its_epoch_is_requeued_once_and_its_next_call_finishes(
        tmp_path, submitit_handler, monkeypatch):
    """A Slurm task's call in-process: USR2 at its start stops the run after epoch 1, submitit's handler
    requeues it once; the same call again (what the requeued task runs) resumes and finishes the run."""
    monkeypatch.setenv("CAPSLIB_COMMAND", "capslib sweep (test)")
    config = TrainConfig(train_subset=64, test_subset=20, batch_size=32, epochs=3, routing_iterations=1,
                         device="cpu", ckpt_dir=str(tmp_path / "run"))
    task = slurm.TrainTask("capslib sweep (test)", stop_within=600)
    real = slurm.train_one

    def warned(config, **kwargs):  # the signal arrives as the task starts
        os.kill(os.getpid(), signal.SIGUSR2)
        return real(config, **kwargs)

    monkeypatch.setattr(slurm, "train_one", warned)
    with pytest.raises(SystemExit):
        task(config.to_dict())
    assert submitit_handler == [signal.SIGUSR2]
    stopped = read_run(tmp_path / "run")
    assert stopped.info["status"] == "stopped" and list(stopped.history.epoch) == [1]
    monkeypatch.setattr(slurm, "train_one", real)
    name, finished, _ = task(config.to_dict())
    assert (name, finished) == ("run", True) and submitit_handler == [signal.SIGUSR2]
    run = read_run(tmp_path / "run")
    assert list(run.history.epoch) == [1, 2, 3] and [s["start_epoch"] for s in run.info["sessions"]] == [0, 1]
    assert run.info["sessions"][0]["command"] == "capslib sweep (test)"


def test_make_sends_every_sweep_to_slurm_with_executor_slurm(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    done = subprocess.run(["make", "-n", "PROFILE=tiny", f"STUDY_DIR={tmp_path}", "EXECUTOR=slurm",
                           "SLURM_CONFIG=cluster.toml", "reproduce"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    sweeps = [line for line in done.stdout.splitlines() if "capslib sweep " in line]
    assert sweeps and all("--executor slurm --slurm-config cluster.toml" in line and "--jobs" not in line
                          and line.endswith("/.done") for line in sweeps)
    refused = subprocess.run(["make", "-n", "EXECUTOR=pbs", "table1"], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode != 0 and "EXECUTOR must be local or slurm" in refused.stderr


# ---------------------------------------------------------------------------------------------
# against a real Slurm


def slurm_missing() -> str | None:
    for program in ("slurmctld", "slurmd", "munged", "sbatch", "srun", "squeue", "scontrol"):
        if shutil.which(program) is None and not (Path("/usr/sbin") / program).exists():
            return f"{program} not found (tools/slurm/install.sh installs Slurm)"
    if os.geteuid() != 0:
        return "the test cluster's daemons run as root"
    return None


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node Slurm of our own (2 CPUs as the machine has, fake GPUs, fast requeues), on free ports
    so that it runs beside any other; stopped, its jobs killed, when the module's tests are done."""
    reason = slurm_missing()
    if reason:
        if os.environ.get("CI"):  # .ci/run installs Slurm: there its absence is a failure
            pytest.fail(f"on CI, but {reason}")
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm")
    ctld, slurmd = free_ports(2)
    env = {**os.environ, "SLURM_TEST_CTLD_PORT": str(ctld), "SLURM_TEST_SLURMD_PORT": str(slurmd)}
    started = subprocess.run([TOOLS / "start.sh", state], env=env, capture_output=True, text=True, timeout=180)
    if started.returncode != 0:
        pytest.fail(f"tools/slurm/start.sh failed:\n{started.stdout}{started.stderr}")
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(state / "slurm.conf")
    try:
        yield state
    finally:
        subprocess.run([TOOLS / "stop.sh", state], capture_output=True, timeout=120)
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before


def epoch_seconds(tmp_path: Path) -> float:
    """Seconds per epoch of the tiny `precision` run on this machine now, the fastest of three (one thread,
    as a task with one CPU trains): what sizes the time-limited run below."""
    config = study_runs("precision", [9], tmp_path / "runs", tmp_path / "results", "tiny", device="cpu",
                        epochs=4)[0]
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        walls = list(train(config, log=lambda *_: None).history.wall_seconds)
    finally:
        torch.set_num_threads(threads)
    return min(later - earlier for earlier, later in zip(walls, walls[1:]))


# seconds of training at the fastest speed measured: more than the ≤ 30 s from a task's start to its first
# USR2 (see the test), with a margin for tasks that train faster than the measurement
TIME_LIMITED_SECONDS = 40


@pytest.fixture(scope="module")
def time_limited(cluster, tmp_path_factory):
    """A one-run sweep whose tasks have a one-minute time limit, started first (it takes a minute or more)
    and checked by the last test: (its folder, its epochs, its sweep process)."""
    tmp_path = tmp_path_factory.mktemp("time-limited")
    epochs = max(10, math.ceil(TIME_LIMITED_SECONDS / epoch_seconds(tmp_path / "calibration")))
    process = start_sweep(tmp_path, "precision", "--seeds", "1", "--epochs", str(epochs), "--slurm-time", "1",
                          "--slurm-signal-delay", "30")
    yield tmp_path, epochs, process
    if process.poll() is None:
        process.kill()


EPOCHS = 5


@pytest.mark.slurm
def test_a_study_finishes_on_slurm_through_a_preemption_and_a_second_submission_trains_nothing(
        cluster, time_limited, tmp_path):
    process = start_sweep(tmp_path, "precision", "--seeds", "1,2", "--epochs", str(EPOCHS))
    try:
        (record,) = wait_until(lambda: records(tmp_path), 120, "the submission record")
        preempted, other = record["tasks"]
        assert [preempted["job"], other["job"]] == [f"{record['job']}_0", f"{record['job']}_1"]  # one array
        # once its first epoch is evaluated and checkpointed, and its task is running, preempt it
        wait_until((Path(preempted["log_dir"]) / "metrics.csv").is_file, 300, "the first epoch of the run")
        assert states(tmp_path, "precision", [1, 2], epochs=EPOCHS)[preempted["run"]] == ("running", "RUNNING")
        subprocess.run(["scancel", "--signal=USR2", preempted["job"]], check=True, timeout=30)
        out = finish(process, 600)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, out
    assert "submitted 2 runs as Slurm job" in out and "2 of 2 runs finished" in out
    assert f"{preempted['job']}  {preempted['run']}: RUNNING (requeued 1×)" in out
    log = task_log(record, preempted)  # the run's lines and submitit's INFO lines
    assert check_attempts(read_run(preempted["log_dir"]), log, EPOCHS) == 2
    assert log.count("Requeued job") == 1 and "this job is preempted" in task_log(record, preempted, "err")
    assert check_attempts(read_run(other["log_dir"]), task_log(record, other), EPOCHS) == 1
    # the job array as submitted: one CPU and no GPU per task, requeueable, warned before its time limit
    script = next((tmp_path / "runs" / "slurm").glob(f"*/{record['job']}/{record['job']}_submission.sh")).read_text()
    for line in ("--array=0-1%2", "--cpus-per-task=1", "--requeue", "--signal=USR2@120", "--time=120",
                 "--job-name=capslib-precision"):
        assert f"#SBATCH {line}\n" in script
    assert "--gres" not in script and "--wckey" not in script

    status = subprocess.run(sweep_argv(tmp_path, "precision", "--seeds", "1,2", "--epochs", str(EPOCHS), "--status"),
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert status.returncode == 0, status.stderr
    table = _parse_status(status.stdout.splitlines())
    assert table[preempted["run"]] == ("complete", "COMPLETED (requeued 1×)")
    assert table[other["run"]] == ("complete", "COMPLETED")

    results = snapshot(tmp_path / "results")
    again = subprocess.run(sweep_argv(tmp_path, "precision", "--seeds", "1,2", "--epochs", str(EPOCHS)),
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 of 2 runs already finished: nothing to submit" in again.stdout and "2 of 2 runs finished" in again.stdout
    assert len(records(tmp_path)) == 1 and snapshot(tmp_path / "results") == results


@pytest.mark.slurm
def test_a_pending_task_is_waited_on_not_submitted_twice_and_once_cancelled_its_run_is_submitted_anew(
        cluster, tmp_path):
    held = ("--seeds", "3", "--slurm-sbatch=--hold")  # held: pending until released, it trains nothing
    first = start_sweep(tmp_path, "precision", *held)
    second = None
    try:
        (record,) = wait_until(lambda: records(tmp_path), 120, "the submission record")
        (task,) = record["tasks"]
        assert states(tmp_path, "precision", [3])[task["run"]] == ("pending", "PENDING (JobHeldUser)")
        second = start_sweep(tmp_path, "precision", *held)
        wait_until(lambda: second.stdout.readline().startswith("0 of 1 runs already finished; 1 in tasks already "
                                                               f"submitted ({record['job']}): waiting on them"),
                   120, "the second sweep to wait on the first one's task")
        subprocess.run(["scancel", record["job"]], check=True, timeout=30)
        outputs = [finish(first, 120), finish(second, 120)]
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
    assert first.returncode == second.returncode == 1
    for out in outputs:
        assert f"NOT DONE  {task['run']}: task {task['job']} ended CANCELLED without a result" in out
        assert "the same sweep again resumes it" in out
    assert len(records(tmp_path)) == 1  # the second sweep submitted nothing
    assert states(tmp_path, "precision", [3])[task["run"]] == ("not started", "CANCELLED")
    again = start_sweep(tmp_path, "precision", *held)
    try:
        assert len(wait_until(lambda: records(tmp_path)[1:], 120, "a second submission")) == 1
    finally:
        subprocess.run(["scancel", records(tmp_path)[-1]["job"]], timeout=30)
        finish(again, 120)


@pytest.mark.slurm
def test_a_setting_sbatch_refuses_is_one_line_and_submits_nothing(cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    jobs = subprocess.run(["squeue", "--noheader", "--states=all", "--format=%i"], capture_output=True, text=True,
                          check=True).stdout
    code, out, err = cli("sweep", "precision", "--profile", "tiny", "--device", "cpu", "--seeds", "4",
                         "--executor", "slurm", "--slurm-partition", "nonesuch")
    assert code == 2 and out == ""
    line = one_line(err)
    assert "sbatch refused the job array, so nothing was submitted" in line and "invalid partition" in line.lower()
    assert list(tmp_path.iterdir()) == []
    assert subprocess.run(["squeue", "--noheader", "--states=all", "--format=%i"], capture_output=True, text=True,
                          check=True).stdout == jobs


@pytest.mark.slurm
def test_a_task_at_its_time_limit_is_requeued_until_its_run_finishes(cluster, time_limited):
    """A one-minute limit and 30 s of warning: Slurm warns a task at its first time-limit check with at
    most 60 s left, so at most 30 s after it started (slurmctld checks every 30 s), and a run of ~40 s
    of training needs two attempts or more; each stops after its epoch in progress, within the 20 s the
    task allows, and the next one resumes from there."""
    tmp_path, epochs, process = time_limited
    out = finish(process, 600)
    assert process.returncode == 0, out
    (record,) = records(tmp_path)
    (task,) = record["tasks"]
    log = task_log(record, task)
    attempts = check_attempts(read_run(task["log_dir"]), log, epochs)
    assert attempts >= 2, out
    requeues = log.count("Requeued job")
    assert requeues >= attempts - 1 and task_log(record, task, "err").count("this job is timed-out") == requeues
    assert [s["slurm_restarts"] for s in read_run(task["log_dir"]).info["sessions"]][-1] == requeues
    script = next((tmp_path / "runs" / "slurm").glob(f"*/{record['job']}/{record['job']}_submission.sh")).read_text()
    assert "#SBATCH --time=1\n" in script and "#SBATCH --signal=USR2@30\n" in script
