"""Where a result came from: command, commit, device, versions, date."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]  # the repository this capslib is in


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
            "software": software(), "date": now()}
