"""Training a set of runs (studies.py declares them): N at a time, each in its own process; every
run resumes where it stopped, so a sweep cut off by a time limit continues when started again, and a
finished run is never trained twice. On a GPU machine each run claims a GPU that no other run holds
(core/gpus.py), so N = the number of GPUs fills the machine.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from ..core.config import TrainConfig, resume_conflicts
from ..core.errors import CapslibError, raise_on_sigterm
from ..core.runs import Run, read_run, summary_line


# A run started with less time than this before the deadline would spend it compiling, not training.
MIN_SECONDS_TO_START = 90
ORPHAN_POLL_SECONDS = 0.5  # how often a pool worker checks that its sweep is still there


def sweep(configs: list[TrainConfig], jobs: int = 1, log=print, deadline: float | None = None) -> int:
    """Train (or resume) every config, `jobs` at a time, each in its own process; 0 if all finished.

    With a `deadline` (time.time()), running runs stop at their first evaluation after it (saving a
    checkpoint) and runs not yet started are left for the next sweep."""
    # Runs that their logs say are finished are decided here, from the logs alone: rerunning a finished
    # sweep starts no process and loads no torch (a process per run cost seconds each).
    finished = [finished_run(config) for config in configs]
    tasks = [(config.to_dict(), deadline) for config, run in zip(configs, finished) if run is None]
    if jobs == 1 or len(tasks) <= 1:
        trained = [_train_one(task) for task in tasks]
    else:
        # spawn, not fork: CUDA cannot be used in a forked child; one run per process, so that each
        # releases its GPU (memory and lock) when it ends. Stopping the sweep stops its runs: on Ctrl-C
        # or SIGTERM (a KeyboardInterrupt here, see cli.main) leaving the block terminates the pool,
        # whose SIGTERM each run records; a sweep killed outright leaves its runs to stop themselves.
        _start_quiet_resource_tracker()
        with multiprocessing.get_context("spawn").Pool(min(jobs, len(tasks)), initializer=_worker_started,
                                                       initargs=(os.getpid(),), maxtasksperchild=1) as pool:
            trained = pool.map(_train_in_worker, tasks, chunksize=1)
    trained = iter(trained)
    return report_runs([next(trained) if run is None else (Path(config.log_dir).name, True,
                                                           summary_line(run.info["summary"]))
                        for config, run in zip(configs, finished)], log)


def _start_quiet_resource_tracker() -> None:
    """multiprocessing's resource tracker, started now with its stderr on /dev/null. The pool's semaphores are
    registered with it; a sweep killed outright (kill -9) cannot unregister them, so the tracker, seeing its
    sweep gone, removes them (its job) and warned "resource_tracker: There appear to be N leaked semaphore
    objects" on the terminal, after the user had killed the sweep on purpose. The tracker is a process of its
    own that inherits stderr as it starts: fd 2 is /dev/null for that moment only (the pool is not started yet,
    and no other thread of the sweep writes)."""
    from multiprocessing import resource_tracker

    sys.stderr.flush()
    saved, quiet = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(quiet, 2)
        resource_tracker.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(quiet)


def report_runs(results: list[tuple[str, bool, str]], log=print) -> int:
    """One line per run (done or NOT DONE, and why) and the count; 0 if every run finished."""
    for name, ok, message in results:
        log(f"{'done' if ok else 'NOT DONE'}  {name}: {message}")
    finished = sum(ok for _, ok, _ in results)
    log(f"{finished} of {len(results)} runs finished")
    return 0 if finished == len(results) else 1


def _worker_started(sweep_pid: int) -> None:
    """In each pool worker, first. Ctrl-C reaches every process of the terminal's foreground group: the
    sweep alone handles it (it stops its workers as on SIGTERM). A worker whose sweep has gone (kill -9,
    which nothing can handle) must not train on for ever, orphaned, holding its run folder's lock: it
    stops its own run as SIGTERM would."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_stop_when_orphaned, args=(sweep_pid,), name="watch-sweep", daemon=True).start()


def _stop_when_orphaned(sweep_pid: int) -> None:
    while os.getppid() == sweep_pid:  # an orphan is adopted by init (or a subreaper)
        time.sleep(ORPHAN_POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)


def _train_in_worker(task: tuple[dict, float | None]) -> tuple[str, bool, str]:
    """_train_one in a pool worker, where SIGTERM stops the run as Ctrl-C stops `capslib train`; the run
    records it (run.json: interrupted), then the worker ends without a traceback. Before and after its
    task a worker has no run to stop: SIGTERM (the pool's, when the sweep ends) ends it at once."""
    previous = raise_on_sigterm()
    try:
        return _train_one(task)
    except KeyboardInterrupt:
        sys.exit(128 + signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _train_one(task: tuple[dict, float | None]) -> tuple[str, bool, str]:
    values, deadline = task
    return train_one(TrainConfig.from_dict(values), deadline)


def train_one(config: TrainConfig, deadline: float | None = None,
              stop: Callable[[], bool] | None = None) -> tuple[str, bool, str]:
    """Train or resume one run of a sweep, or find it finished: (name, finished, one line). What a
    sweep does with each run, here or in a Slurm task (slurm.py); `stop` as core.train.train takes it."""
    from ..core.train import train

    name = Path(config.log_dir).name
    try:
        finished = finished_run(config)  # sweep() has decided this already; a Slurm task has not
        if finished is not None:
            return name, True, summary_line(finished.info["summary"])
        if deadline is not None and time.time() > deadline - MIN_SECONDS_TO_START:
            return name, False, "not started: too close to the time limit"
        run = train(config, resume=True, log=lambda line: print(f"[{name}] {line}", flush=True), deadline=deadline,
                    stop=stop)
        if run.info["status"] != "complete":
            return name, False, f"{run.info['status']}: {summary_line(run.info['summary'])}"
        return name, True, summary_line(run.info["summary"])
    except CapslibError as err:
        return name, False, str(err)
    except Exception:  # a bug in one run must not lose the others' results
        return name, False, traceback.format_exc(limit=-3).strip().replace("\n", " | ")


def finished_run(config: TrainConfig) -> Run | None:
    """The run's logs, if they say that it completed this config: its status is complete, after as
    many epochs, and its setup is the one asked for (config.resume_conflicts). Such a run is done,
    whether or not its checkpoint is here: logs come back from a GPU machine without the ~100 MB
    checkpoints, and a finished run is never trained twice."""
    try:
        run = read_run(config.log_dir)
    except CapslibError:
        return None
    done = (run.info.get("status") == "complete" and run.info.get("summary", {}).get("epochs_done") == config.epochs
            and not resume_conflicts(run.config, config))
    return run if done else None
