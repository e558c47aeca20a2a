"""Runs and sweeps stopped from outside, with real processes and real signals: kill -9 in the middle
of a checkpoint write, SIGTERM and SIGKILL to a sweep, Ctrl-C while capslib starts, a disk that fills.
Whatever a stop leaves on disk must resume (or start again) with the same command, and no stopped
run may keep training or keep its folder locked.

Every run here is tiny (64 training images at batch 32, one or two epochs, CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = ["--train-subset", "64", "--test-subset", "50", "--batch-size", "32", "--routing", "1", "--device", "cpu"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def capslib(*argv, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "capslib", *map(str, argv)], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=300, **kwargs)


def one_line(stderr: str) -> str:
    lines = stderr.strip("\n").splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


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
