"""Training a set of runs (studies.py declares them): N at a time, each in its own process; every
run resumes where it stopped, so a sweep cut off by a time limit continues when started again, and a
finished run is never trained twice. On a GPU machine each run claims a GPU that no other run holds
(core/gpus.py), so N = the number of GPUs fills the machine.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from pathlib import Path
from typing import Callable

from ..core.config import TrainConfig, resume_conflicts
from ..core.errors import CapslibError
from ..core.runs import Run, read_run, summary_line


# A run started with less time than this before the deadline would spend it compiling, not training.
MIN_SECONDS_TO_START = 90


def sweep(configs: list[TrainConfig], jobs: int = 1, log=print, deadline: float | None = None) -> int:
    """Train (or resume) every config, `jobs` at a time, each in its own process; 0 if all finished.

    With a `deadline` (time.time()), running runs stop at their first evaluation after it (saving a
    checkpoint) and runs not yet started are left for the next sweep."""
    tasks = [(config.to_dict(), deadline) for config in configs]
    if jobs == 1:
        results = [_train_one(task) for task in tasks]
    else:
        # spawn, not fork: CUDA cannot be used in a forked child; one run per process, so that each
        # releases its GPU (memory and lock) when it ends.
        with multiprocessing.get_context("spawn").Pool(jobs, maxtasksperchild=1) as pool:
            results = pool.map(_train_one, tasks, chunksize=1)
    return report(results, log)


def report(results: list[tuple[str, bool, str]], log=print) -> int:
    """One line per run (done or NOT DONE, and why) and the count; 0 if every run finished."""
    for name, ok, message in results:
        log(f"{'done' if ok else 'NOT DONE'}  {name}: {message}")
    finished = sum(ok for _, ok, _ in results)
    log(f"{finished} of {len(results)} runs finished")
    return 0 if finished == len(results) else 1


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
        finished = finished_run(config)
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
