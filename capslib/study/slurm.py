"""A study's runs on a Slurm cluster: one job array, one run per task, through submitit.

    capslib sweep STUDY --executor slurm --slurm-config cluster.toml     (make STUDY EXECUTOR=slurm SLURM_CONFIG=...)
    capslib sweep STUDY --status                                         each run's state

The sweep submits the study's unfinished runs as one job array, each task training one run by
sweep.train_one, the code a local sweep runs, into the same run folders; then it waits until every task
has ended and reports each run as a local sweep does (exit status 0 only if every run finished).

Why submitit (facebookincubator/submitit) and not sbatch from a template of our own: submitit writes the
array's sbatch script from named settings, hands each task its call, and on Slurm's USR2 (sent
`signal_delay` seconds before a time limit, and at a preemption) requeues the task under the same job
id after asking it for a checkpoint; that signal-and-requeue path would otherwise be ours to write and
test. What it lacks here is added below: the tasks' states from squeue (submitit asks sacct, which
needs Slurm's accounting database; without one, waiting on a cancelled task never ends), `--requeue`
(not its default), and a stop after the epoch in progress before the requeue (StopOnSignal), where
submitit alone would exit wherever the signal lands and lose the work since the last checkpoint.

What happens to a run (tools/slurm/NOTES.md has the measured behaviour):
  - time limit: USR2 comes between signal_delay and signal_delay + 30 s before it (slurmctld checks
    limits every 30 s). The run saves a checkpoint after the epoch in progress, the task is requeued
    and resumes from it: no epoch is trained twice, each attempt adds one session to run.json (with its
    Slurm job and restart count), metrics.csv keeps one row per evaluation.
  - preemption: the same where the cluster sends the job its signal first
    (SlurmctldParameters=preempt_send_user_signal); `scancel --signal=USR2 JOB_TASK` does it by hand.
    Otherwise Slurm requeues the task itself and the run resumes from its last checkpoint.
  - `scancel JOB`, a node failure, an error: not requeued. The sweep reports the run NOT DONE; the same
    sweep again submits it anew, and it resumes from its checkpoint.
  - a run whose logs say it is complete is never submitted; a run whose recorded task is still pending
    or running is not submitted again: the sweep waits on that task instead.

Files: <runs dir>/slurm/<submitted at>/ holds one submission: submission.json (the array's job id and
the run of each task), submitit's sbatch script and pickles, and per task <job>_<task>/ with its output,
<job>_<task>_0_log.out and .err, appended across attempts. The runs dir must be on storage that the
submitting machine and every node share: a requeued task may resume on another node.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.config import TrainConfig
from ..core.errors import CapslibError
from ..core.files import atomic_write_text
from ..core.runs import read_run, run_info, summary_line
from .cluster import SlurmSettings, sbatch_options
from .sweep import finished_run, report_runs, train_one

SLURM_FOLDER = "slurm"  # <runs dir>/slurm/: one folder per submission
RECORD = "submission.json"
COMMANDS = ("sbatch", "squeue", "scontrol", "srun")  # srun: submitit starts each task with it


def gpus_per_run(settings: SlurmSettings, configs: list[TrainConfig]) -> int:
    """The GPUs each task asks for: as set, else one unless every run trains on the CPU."""
    if settings.gpus is not None:
        return settings.gpus
    return 0 if all(c.device == "cpu" for c in configs) else 1


def executor_parameters(settings: SlurmSettings, gpus: int, job_name: str) -> dict:
    """submitit SlurmExecutor parameters (its names for sbatch's options) for these settings."""
    # The task imports capslib to unpickle its call: put the submitter's copy first on its path, so that
    # it trains with the code that was submitted (sbatch passes the rest of the environment as it is).
    package_root = Path(__file__).resolve().parents[2]
    parameters = {
        "job_name": job_name, "time": settings.time, "signal_delay_s": settings.signal_delay,
        "wckey": None,  # submitit writes --wckey=submitit by default; a cluster that checks wckeys refuses it
        "setup": [f"export PYTHONPATH={shlex.quote(str(package_root))}${{PYTHONPATH:+:$PYTHONPATH}}"],
        # --requeue: a task may be requeued (clusters with JobRequeue=0 refuse scontrol requeue otherwise)
        "additional_parameters": {"requeue": True, **sbatch_options(settings.sbatch)},
    }
    optional = {"partition": settings.partition, "account": settings.account, "qos": settings.qos,
                "cpus_per_task": settings.cpus, "array_parallelism": settings.max_running,
                "mem": f"{settings.mem}G" if settings.mem is not None else None,
                # no --gres line for CPU runs: a partition without GPUs need not know the resource
                "gres": (f"gpu:{settings.gpu_type}:{gpus}" if settings.gpu_type else f"gpu:{gpus}") if gpus else None}
    parameters.update({k: v for k, v in optional.items() if v is not None})
    return parameters


# ---------------------------------------------------------------------------------------------------
# the task: one run, stopped at an epoch's end by Slurm's warning


class StopOnSignal:
    """Within the block, submitit's USR2 handler (checkpoint, requeue, exit) is held back: the signal
    only asks the run to stop after the epoch in progress (`requested`), and `requeue()` then hands the
    task to submitit. Should the epoch not end within `within` seconds (a long evaluation, a slow
    start), an alarm hands it over anyway, as submitit would have at once: the run then resumes from its
    last checkpoint, and the task is requeued before Slurm's kill, which would not requeue it."""

    def __init__(self, within: float):
        self.within = within
        self.signal = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))  # submitit's
        self.asked = False

    def __enter__(self) -> "StopOnSignal":
        self.submitit = signal.getsignal(self.signal)
        self.alarm = signal.signal(signal.SIGALRM, lambda *_: self.requeue())
        signal.signal(self.signal, self._ask)
        return self

    def __exit__(self, *exc) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.alarm)
        signal.signal(self.signal, self.submitit)

    def _ask(self, signum, frame) -> None:
        if not self.asked:
            self.asked = True
            signal.setitimer(signal.ITIMER_REAL, self.within)

    def requested(self) -> bool:
        return self.asked

    def requeue(self) -> None:
        """submitit's handler: checkpoint() gives it this task's call again, it runs `scontrol requeue`
        and exits (SystemExit); with no requeue left it raises, and the task ends with that error."""
        signal.setitimer(signal.ITIMER_REAL, 0)
        if callable(self.submitit):
            self.submitit(self.signal, None)


def stop_within(signal_delay: float) -> float:
    """Seconds from Slurm's warning to the requeue, at the latest. The warning comes at least signal_delay
    seconds before the time limit, where Slurm kills the task without requeueing it: hand it to submitit
    10 s before that (a checkpoint and `scontrol requeue` take a second or two), or after half the delay
    when that is short. (A preemption's grace time is the cluster's: past it, Slurm requeues the task
    itself, and the run resumes from its last checkpoint.)"""
    return max(signal_delay - 10, signal_delay / 2)


class TrainTask:
    """The call of each task: train, resume or find finished one run (sweep.train_one).

    submitit requeues a call whose callable has a `checkpoint` method (what submitit.helpers.Checkpointable
    provides), calling it for the call to run next: here the same one, which resumes the run from its
    folder. Written out rather than inherited, so that building the command line does not import
    submitit. Pickled by reference: the task imports capslib (executor_parameters puts it on the path)."""

    def __init__(self, command: str, stop_within: float):
        self.command = command          # the sweep's command, for the sessions' provenance
        self.stop_within = stop_within  # seconds from USR2 to the requeue, at the latest

    def __call__(self, values: dict) -> tuple[str, bool, str]:
        os.environ["CAPSLIB_COMMAND"] = self.command  # not submitit's runner: core/provenance.py
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus:  # without cgroups, torch would start a thread per core of the node
            import torch
            torch.set_num_threads(int(cpus))
        with StopOnSignal(self.stop_within) as stop:
            name, finished, message = train_one(TrainConfig.from_dict(values), stop=stop.requested)
            if stop.requested() and not finished:
                stop.requeue()
        return name, finished, message

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission
        return DelayedSubmission(self, *args, **kwargs)


# ---------------------------------------------------------------------------------------------------
# jobs: submitted, recorded, watched


class SchedulerError(CapslibError):
    """squeue or sbatch could not be used."""


# squeue's states of a job that has ended (every other state is on its way: PENDING, RUNNING, COMPLETING,
# CONFIGURING, SIGNALING, SUSPENDED, REQUEUED, REQUEUE_HOLD, ...). A requeue goes RUNNING → COMPLETING or
# SIGNALING → PENDING (reason BeginTime) → RUNNING, never through an ended state.
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
         "OUT_OF_MEMORY"}
ACTIVE = {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT"}


@dataclass(frozen=True)
class JobState:
    state: str     # squeue's word: PENDING, RUNNING, COMPLETED, ...
    reason: str    # why it is pending (Resources, Priority, BeginTime after a requeue, JobHeldUser, ...)
    restarts: int  # times Slurm has requeued it

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def __str__(self) -> str:
        notes = [self.reason] if self.state == "PENDING" and self.reason not in ("", "None") else []
        notes += [f"requeued {self.restarts}×"] if self.restarts else []
        return self.state + (f" ({', '.join(notes)})" if notes else "")


def job_states(jobs: list[str]) -> dict[str, JobState]:
    """squeue's view of jobs ('17_3' for an array task, '17' for a job of one run): the ended ones too,
    for as long as Slurm remembers them (MinJobAge, 5 minutes by default). A job it no longer knows is
    left out."""
    if not jobs:
        return {}
    arrays = sorted({job.split("_")[0] for job in jobs})
    try:
        done = subprocess.run(["squeue", "--noheader", "--states=all", "--array", "--jobs", ",".join(arrays),
                               "--Format=JobArrayID:|,State:|,Reason:|,RestartCnt:"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SchedulerError(f"squeue failed: {err}") from None
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:  # every job asked about is forgotten
            return {}
        raise SchedulerError(f"squeue failed: {' '.join(done.stderr.split())}")
    states = {}
    for line in done.stdout.splitlines():
        parts = [part.strip() for part in line.split("|")]
        if len(parts) >= 4:
            states[parts[0]] = JobState(parts[1], parts[2], int(parts[3]) if parts[3].isdigit() else 0)
    return {job: states[job] for job in jobs if job in states}


@dataclass(frozen=True)
class Task:
    """The task of a submitted array that trains one run."""
    config: TrainConfig
    job: str     # '17_3', or '17' when the submission held one run
    folder: Path  # its submission's folder

    @property
    def name(self) -> str:
        return Path(self.config.log_dir).name

    def paths(self):
        from submitit.core.utils import JobPaths
        return JobPaths(self.folder / "%j", job_id=self.job)

    def result(self) -> tuple | None:
        """What its last attempt returned: ('success', (name, finished, message)) or ('error', traceback);
        None while it runs, or when it was killed."""
        from submitit.core.utils import pickle_load
        path = self.paths().result_pickle
        try:
            return pickle_load(path) if path.is_file() else None
        except Exception:  # a half-written or foreign pickle says nothing more than a missing one
            return None


def _key(config: TrainConfig) -> str:
    return os.path.abspath(config.log_dir)


def recorded_tasks(configs: list[TrainConfig], runs_dir: Path) -> dict[str, Task]:
    """The latest task submitted for each of these runs (by _key), from the submission records."""
    latest = {}
    for record in sorted((Path(runs_dir) / SLURM_FOLDER).glob(f"*/{RECORD}")):  # oldest first: names start with the time
        try:
            entries = json.loads(record.read_text())["tasks"]
            latest.update({entry["log_dir"]: (entry["job"], record.parent) for entry in entries})
        except (OSError, ValueError, KeyError, TypeError):
            raise CapslibError(f"{record}: not a submission record of capslib; move it out of {record.parent.parent}") \
                from None
    return {_key(c): Task(c, *latest[_key(c)]) for c in configs if _key(c) in latest}


@contextlib.contextmanager
def _submitting(root: Path):
    """One submitter at a time per runs dir (an flock on <runs dir>/slurm, released however the process
    ends): a second sweep of the same runs waits, then sees the first one's tasks and submits nothing
    twice."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def check_commands() -> None:
    missing = [name for name in COMMANDS if shutil.which(name) is None]
    if missing:
        raise CapslibError(f"--executor slurm: {missing[0]} not found; submit from a machine of the Slurm cluster "
                           "(a login node), where sbatch, squeue, scontrol and srun are on the PATH")


def submit(configs: list[TrainConfig], runs_dir: Path, settings: SlurmSettings, gpus: int,
           job_name: str) -> list[Task]:
    """Submit one job array, a task per run, and record it; nothing is left behind if sbatch refuses it."""
    import submitit
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    from ..core.provenance import command as this_command  # imports torch: only when submitting

    command = this_command()

    root = Path(runs_dir) / SLURM_FOLDER
    # named by the time, oldest first; not by the job id alone, which starts again at 1 on a fresh cluster
    folder = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    folder.mkdir()
    executor = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=settings.max_requeues)
    executor.update_parameters(**executor_parameters(settings, gpus, job_name))
    complaint = io.StringIO()
    with _uninterrupted():  # once sbatch has accepted the array, it is recorded
        try:
            with contextlib.redirect_stderr(complaint):  # submitit prints sbatch's refusal itself
                jobs = executor.map_array(TrainTask(command, stop_within(settings.signal_delay)),
                                          [c.to_dict() for c in configs])
        except (FailedJobError, FailedSubmissionError, OSError) as err:
            shutil.rmtree(folder, ignore_errors=True)
            said = [line.removeprefix("sbatch: error: ").strip() for line in str(err).splitlines() if line.strip()]
            raise SchedulerError(f"sbatch refused the job array, so nothing was submitted: "
                                 f"{'; '.join(dict.fromkeys(said)) or type(err).__name__}") from None
        tasks = [Task(config, job.job_id, folder) for config, job in zip(configs, jobs)]
        record = {"job": tasks[0].job.split("_")[0], "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "command": command, "settings": dataclasses.asdict(settings), "gpus_per_run": gpus,
                  "tasks": [{"job": t.job, "run": t.name, "log_dir": _key(t.config),
                             "ckpt_dir": os.path.abspath(t.config.ckpt_dir)} for t in tasks]}
        atomic_write_text(folder / RECORD, json.dumps(record, indent=2) + "\n")
    return tasks


@contextlib.contextmanager
def _uninterrupted():
    """Ctrl-C, a hang-up or a kill by make held back until the block ends: tasks that sbatch accepted but
    no record names would be submitted again by the next sweep, and train their runs twice."""
    caught = []
    before = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
              for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        for signum in caught[:1]:  # now, as it would have been
            handler = before[signum]
            if callable(handler):
                # called here, not raised as a signal: its handler would run at the next bytecode, which may be
                # a finalizer's (a garbage collection), where its KeyboardInterrupt could not leave
                handler(signum, None)
            else:
                signal.raise_signal(signum)  # SIG_DFL (the process ends) or SIG_IGN (nothing), as it would have


def say(line: str) -> None:
    print(line, flush=True)  # each change of state as it happens, also into a pipe or a make log


def sweep_on_slurm(configs: list[TrainConfig], runs_dir: Path, settings: SlurmSettings, job_name: str,
                   status_command: str, log=say) -> int:
    """Submit the unfinished runs that no pending or running task trains (one array), wait until every
    task has ended, report each run as a local sweep does; 0 if every run finished."""
    check_commands()
    gpus = gpus_per_run(settings, configs)
    root = Path(runs_dir) / SLURM_FOLDER
    made = [p for p in (Path(runs_dir), root) if not p.exists()]
    try:
        with _submitting(root):
            unfinished = [c for c in configs if finished_run(c) is None]
            recorded = recorded_tasks(unfinished, runs_dir)
            states = job_states([t.job for t in recorded.values()])
            waiting = [t for t in recorded.values() if t.job in states and not states[t.job].ended]
            busy = {_key(t.config) for t in waiting}
            to_submit = [c for c in unfinished if _key(c) not in busy]
            new = submit(to_submit, runs_dir, settings, gpus, job_name) if to_submit else []
    except CapslibError:
        for path in reversed(made):  # refused before anything was submitted: leave no trace
            with contextlib.suppress(OSError):
                path.rmdir()
        raise
    finished = len(configs) - len(unfinished)
    log(f"{finished} of {len(configs)} runs already finished" + (f"; {len(waiting)} in tasks already submitted ("
        f"{', '.join(sorted({t.job.split('_')[0] for t in waiting}))}): waiting on them" if waiting else "")
        + ("" if waiting or new else ": nothing to submit"))
    if new:
        log(f"submitted {len(new)} run{'s' * (len(new) > 1)} as Slurm job {new[0].job.split('_')[0]} "
            f"({len(new)} task{'s' * (len(new) > 1)}, files in {new[0].folder})")
    if waiting or new:
        log(f"each run's state: {status_command}; `{cancel_command(waiting, new)}` cancels (the runs keep their "
            "checkpoints)")
    try:
        ended = {_key(t.config): result for t, result in zip(waiting + new, wait(waiting + new, log))}
    except KeyboardInterrupt:
        log("stopped waiting; the tasks go on. The same sweep again waits on them (it submits nothing twice); "
            f"state: {status_command}")
        return 130
    return report_runs([ended.get(_key(c)) or finished_line(c) for c in configs], log)


def cancel_command(waiting: list, new: list) -> str:
    """The scancel that cancels every task this sweep waits on: each task submitted before by its id (that
    array job may hold tasks of runs this sweep does not wait on), and the array it submitted by its job id."""
    return "scancel " + " ".join([t.job for t in waiting] + ([new[0].job.split("_")[0]] if new else []))


def finished_line(config: TrainConfig) -> tuple[str, bool, str]:
    return Path(config.log_dir).name, True, summary_line(finished_run(config).info["summary"])


def poll_seconds(elapsed: float) -> float:
    """How long to wait between two squeue calls: 2 s at first (a short sweep ends soon after its last
    task), 30 s after a quarter of an hour (a long one does not load slurmctld)."""
    return min(30.0, 2.0 + elapsed / 30)


def wait(tasks: list[Task], log=say) -> list[tuple[str, bool, str]]:
    """Wait until every task has ended (squeue says so, or no longer knows it), logging each change of
    state; then each run's result, from its folder and what its task returned."""
    shown, started, states = {}, time.monotonic(), {}
    while tasks:
        try:
            states = job_states([t.job for t in tasks])
        except SchedulerError as err:  # slurmctld busy or restarting: ask again
            log(f"{err}; asking again")
        else:
            for task in tasks:
                said = str(states.get(task.job, "no longer known to squeue"))
                if shown.get(task.job) != said:
                    log(f"{task.job}  {task.name}: {said}")
                    shown[task.job] = said
            if all(task.job not in states or states[task.job].ended for task in tasks):
                break
        time.sleep(poll_seconds(time.monotonic() - started))
    return [outcome(task, states.get(task.job)) for task in tasks]


def outcome(task: Task, state: JobState | None) -> tuple[str, bool, str]:
    """(name, finished, one line) of a task that has ended."""
    run = finished_run(task.config)
    if run is not None:
        return task.name, True, summary_line(run.info["summary"])
    result = task.result()
    if result is not None and result[0] == "success":
        said = result[1][2]
    elif result is not None:  # the task itself failed: the last line of its traceback says why
        said = str(result[1]).strip().splitlines()[-1]
    else:
        said = f"task {task.job} ended {state.state if state else '(no longer known to squeue)'} without a result"
    return task.name, False, f"{said} (log: {task.paths().stderr}); the same sweep again resumes it"


# ---------------------------------------------------------------------------------------------------
# status


def run_state(config: TrainConfig, task: Task | None, state: JobState | None) -> tuple[str, str, int]:
    """(state, epochs done of the run's epochs, attempts) of a run, from its folder and its task.

    complete     its logs say it completed this config
    running      its task runs (or, without a Slurm task, its run.json says running: a local sweep)
    pending      its task waits for the scheduler (to start, or to start again after a requeue)
    stopped      left with a checkpoint (a time limit, a stop): the same sweep again resumes it
    interrupted  its run.json says running but its task has ended: killed; the same sweep again resumes it
    failed       its task ended with an error (or the run diverged)
    not started  no run folder yet
    """
    info = run_info(config.log_dir)
    try:
        epochs = int(read_run(config.log_dir).history.epoch.max())
    except (CapslibError, ValueError):  # no metrics.csv yet, or no row in it
        epochs = 0
    attempts = len(info.get("sessions", [])) if info else 0
    progress = f"{epochs}/{config.epochs}"
    if finished_run(config) is not None:
        return "complete", progress, attempts
    if state is not None and not state.ended:
        return ("running" if state.state in ACTIVE else "pending"), progress, attempts
    result = task.result() if task is not None else None
    if (result is not None and (result[0] == "error" or not result[1][1])) or \
            (state is not None and state.state in ("FAILED", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL")) or \
            (info or {}).get("status") == "diverged":
        return "failed", progress, attempts
    if info is None:
        return "not started", progress, attempts
    if info.get("status") == "running":
        return ("interrupted" if task is not None else "running"), progress, attempts
    return "stopped", progress, attempts


def status(configs: list[TrainConfig], runs_dir: Path, log=print) -> int:
    """Print a table of each run's state, epochs, attempts, Slurm task and the scheduler's word on it."""
    tasks = recorded_tasks(configs, runs_dir)
    states, note = {}, ""
    try:
        states = job_states([t.job for t in tasks.values()])
    except SchedulerError as err:  # e.g. no squeue on this machine: the run folders still say much
        note = f" ({err}: the scheduler's states are not shown)"
    rows = [("run", "state", "epochs", "attempts", "job", "scheduler")]
    counts: dict[str, int] = {}
    for config in configs:
        task = tasks.get(_key(config))
        state = states.get(task.job) if task else None
        word, epochs, attempts = run_state(config, task, state)
        counts[word] = counts.get(word, 0) + 1
        scheduler = str(state) if state else ("-" if task is None else "not known to squeue")
        folder = Path(config.log_dir)
        rows.append((f"{folder.parent.name}/{folder.name}", word, epochs, str(attempts), task.job if task else "-",
                     scheduler))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        log("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    log(f"{len(configs)} runs: " + ", ".join(f"{n} {word}" for word, n in counts.items()) + note)
    return 0
