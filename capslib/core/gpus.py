"""One GPU per training run, on a machine with one or many.

A run that asks for `auto` or `cuda` (no index) on a CUDA machine takes the first visible GPU that
no other run holds, and holds it until its process ends: a lock file per GPU, locked with flock,
which the kernel releases however the process ends (exit, exception, kill -9). When every GPU is
held, the run waits for one: runs never share a GPU by accident (a long run fills an H100: three
MultiMNIST CapsNets sharing one trained about as fast together as one alone; docs/speed.md). Where sharing pays (short runs, whose start-up, graph capture
and scoring leave the GPU idle), CAPSLIB_RUNS_PER_GPU=K (`capslib sweep --runs-per-gpu K`, the
Makefile's RUNS_PER_GPU) gives each GPU K slots, each its own lock, filled GPU by GPU before any GPU
takes a second run. An explicit `cuda:K` is used as asked, and marked as held (its first slot) when it
is free so that automatic runs go elsewhere.

So `make -j4` (or several shells, or several notebooks) on a 4-GPU machine spreads the runs over
the four GPUs. Locks are per user, in $CAPSLIB_GPU_LOCKS or <tmp>/capslib-gpus-<uid>, named by each
GPU's UUID, so processes with different CUDA_VISIBLE_DEVICES agree on which physical GPU is held.

Under Slurm the scheduler hands out the GPUs: a job step given GPUs (SLURM_STEP_GPUS, or
SLURM_JOB_GPUS in a batch script) sees only those (Slurm sets CUDA_VISIBLE_DEVICES to them) and takes
the first, with no lock. A lock could only fight the scheduler there: a run of ours outside Slurm, or
a lock folder shared across jobs, would make a job wait for a GPU that the scheduler gave it. A Slurm
job without GPUs keeps the locks (its runs share the node's GPUs with other runs of this user).

`python -m capslib.gpus` prints the number of visible GPUs (the Makefile's default -j).
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
import time
from pathlib import Path

import torch

from .errors import CapslibError
from .speed import resolve_device

POLL_SECONDS = 2.0
RUNS_PER_GPU = "CAPSLIB_RUNS_PER_GPU"  # runs that may share one GPU (default 1)
_held: list = []  # the lock files this process holds, open for its lifetime


def lock_dir() -> Path:
    return Path(os.environ.get("CAPSLIB_GPU_LOCKS") or Path(tempfile.gettempdir()) / f"capslib-gpus-{os.getuid()}")


def runs_per_gpu(environ=os.environ) -> int:
    value = environ.get(RUNS_PER_GPU) or "1"  # unset or empty: no sharing
    if not value.isdigit() or int(value) < 1:
        raise CapslibError(f"{RUNS_PER_GPU}={value!r}: must be a whole number of runs, at least 1")
    return int(value)


def slot_name(gpu_id: str, slot: int) -> str:
    """The lock of a GPU's slot: the first keeps the name a GPU's one lock always had."""
    return gpu_id if slot == 1 else f"{gpu_id}.{slot}"


def visible_gpu_ids() -> list[str]:
    """A stable name for each visible GPU (its UUID where torch reports one)."""
    ids = []
    for index in range(torch.cuda.device_count()):
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        ids.append(f"GPU-{uuid}" if uuid else f"index{index}")
    return ids


def try_claim(gpu_id: str, folder: Path) -> bool:
    """Take the lock of `gpu_id` if no other process holds it; keep it until this process ends. A lock
    folder or file that cannot be used is a CapslibError naming it."""
    lock = folder / f"{gpu_id}.lock"
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a+")
    except OSError as err:
        where = folder if err.filename is None or Path(err.filename) != lock else lock
        raise CapslibError(f"GPU locks: cannot use {where} ({err.strerror}); set CAPSLIB_GPU_LOCKS to a folder "
                           "you can write in") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return False
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")  # who holds it, for a person looking at the folder
    handle.flush()
    _held.append(handle)
    return True


def scheduler_gpus(environ=os.environ) -> str | None:
    """The GPUs Slurm gave this process's job step, as Slurm lists them ('0', '2,3'); None outside a
    Slurm job, or in one given no GPUs."""
    if "SLURM_JOB_ID" not in environ:
        return None
    return environ.get("SLURM_STEP_GPUS") or environ.get("SLURM_JOB_GPUS") or None


def claim_gpu(gpu_ids: list[str], folder: Path | None = None, log=print, poll_seconds: float = POLL_SECONDS,
              environ=os.environ) -> int:
    """The index (into `gpu_ids`) of the first GPU with a slot this process could lock (runs_per_gpu()
    slots each; every GPU's first slot before any GPU's second), waiting while all are held; in a Slurm
    job given GPUs, the first visible one (one of them), unlocked."""
    given = scheduler_gpus(environ)
    if given is not None:
        log(f"GPU {given} given by Slurm to job {environ['SLURM_JOB_ID']}: using it without a lock")
        return 0
    folder, slots = folder or lock_dir(), runs_per_gpu(environ)
    waiting = False
    while True:
        for slot in range(1, slots + 1):
            for index, gpu_id in enumerate(gpu_ids):
                if try_claim(slot_name(gpu_id, slot), folder):
                    return index
        if not waiting:
            each = f", {slots} runs each" if slots > 1 else ""
            log(f"all {len(gpu_ids)} GPUs are held by other runs{each} (locks in {folder}); waiting for one")
            waiting = True
        time.sleep(poll_seconds)


def claim_device(device: str, log=print) -> torch.device:
    """The device a run trains on: `auto`/`cuda` claims a free GPU; anything else is used as asked."""
    resolved = resolve_device(device)
    if resolved.type != "cuda":
        return resolved
    ids = visible_gpu_ids()
    if resolved.index is not None:  # an explicit cuda:K wins, held or not
        if resolved.index >= len(ids):
            raise CapslibError(f"--device {device}: this machine has {len(ids)} visible GPU(s)")
        try_claim(ids[resolved.index], lock_dir())
        return resolved
    index = claim_gpu(ids, log=log)
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


if __name__ == "__main__":
    print(torch.cuda.device_count() if torch.cuda.is_available() else 0)
