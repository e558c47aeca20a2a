"""Where a result came from: command, commit, device, versions, the pinned environment, date."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
import platform
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]  # the repository this capslib is in
LOCKS = REPO / "requirements"  # cpu.lock, cuda.lock: the pinned environments (make setup, tools/lock.py)


def git_commit() -> str:
    """HEAD of the repository (suffixed '-dirty' when tracked files differ from it).

    CAPSLIB_COMMIT overrides it, for copies of the tree that travel without .git (the GPU machine)."""
    if os.environ.get("CAPSLIB_COMMIT"):
        return os.environ["CAPSLIB_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"1x {torch.cuda.get_device_name(device)}"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def software() -> str:
    cuda = f", CUDA {torch.version.cuda}" if torch.version.cuda else ""
    return f"torch {torch.__version__}{cuda}, Python {platform.python_version()}"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_versions() -> dict[str, str]:
    """name (normalized as PEP 503 does) -> version of every distribution this Python can import."""
    versions: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            versions.setdefault(_normalize(name), dist.version)  # the first on sys.path is the one imported
    return versions


def lock_pins(text: str) -> dict[str, str]:
    """name -> version of each `name==version` requirement of a lock file (pip's requirements format)."""
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", text, re.M)
    return {_normalize(name): version for name, version in pins}


def lock_status(locks: Path = LOCKS, installed: dict[str, str] | None = None, listed: int = 5) -> str:
    """Which pinned environment this is: the lock file (of requirements/*.lock) whose pins the installed
    versions agree with best, the first 12 hex digits of its sha256, then 'matches' when every package it
    pins is installed at exactly the pinned version (a local label such as +cpu included), else 'differs:'
    and the packages that are not (their installed version, or 'missing', and the locked one).

    It is read off what is installed, not off how it was installed: a lock's name never stands for an
    environment that only resembles it. Packages installed beside the lock's are not compared; installed
    files are not hashed again (pip checked them against the lock's hashes when make setup installed them)."""
    files = sorted(locks.glob("*.lock")) if locks.is_dir() else []
    if not files:
        return f"no lock file (no {locks.name}/*.lock beside capslib)"
    installed = installed_versions() if installed is None else installed
    ranked = []
    for path in files:
        text = path.read_bytes()
        pins = lock_pins(text.decode())
        differs = [(name, installed.get(name), version) for name, version in sorted(pins.items())
                   if installed.get(name) != version]
        # fewest differences first; between as many, the lock whose versions differ least but for a local
        # label (torch 2.11.0+cu130 installed is nearer 2.11.0 than 2.13.0+cpu); then by name
        public = sum((have or "").split("+")[0] != want.split("+")[0] for _, have, want in differs)
        ranked.append((len(differs), public, path.name, path, hashlib.sha256(text).hexdigest()[:12], differs))
    *_, path, digest, differs = min(ranked)
    status = f"{path.name} sha256:{digest}"
    if not differs:
        return f"{status} matches"
    shown = ", ".join(f"{name} {have or 'missing'} (locked {want})" for name, have, want in differs[:listed])
    more = f" and {len(differs) - listed} more" if len(differs) > listed else ""
    return f"{status} differs: {shown}{more}"


@functools.lru_cache(maxsize=1)
def environment_lock() -> str:
    """lock_status() of this process's environment, read once (about 0.1 s; what is installed does not
    change under a running study)."""
    return lock_status()


def command() -> str:
    """The command that started this process. Make and papermill set CAPSLIB_COMMAND, since inside
    a notebook kernel sys.argv names the kernel, not the study's command."""
    if os.environ.get("CAPSLIB_COMMAND"):
        return os.environ["CAPSLIB_COMMAND"]
    program = Path(sys.argv[0]).name
    program = "python -m capslib" if program == "__main__.py" else shlex.quote(program)
    return " ".join([program, shlex.join(sys.argv[1:])]).strip()


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def provenance(device: torch.device | str = "cpu") -> dict:
    device = torch.device(device)
    where = {"gpu": str(device)} if device.type == "cuda" else {}  # which of a machine's GPUs
    return {"command": command(), "commit": git_commit(), "device": device_name(device), **where,
            "software": software(), "lock": environment_lock(), "date": now()}
