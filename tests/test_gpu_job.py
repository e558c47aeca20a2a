"""tools/gpu: runs side by side in a time-limited job, on the CPU at the tiny profile."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from capslib.study.studies import study_runs

REPO = Path(__file__).resolve().parents[1]
RUNS = [Path(c.log_dir).name for c in study_runs("multimnist", [1], "runs", "results", "tiny")]  # as --profile tiny names them


def side_by_side(workdir: Path, seconds: int, *runs: str, commit: str = "0123456789ab") -> subprocess.CompletedProcess:
    env = {**os.environ, "SWEEP_OPTIONS": "--profile tiny --device cpu", "CAPSLIB_COMMIT": commit,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", str(REPO / "tools/gpu/side_by_side.sh"), str(seconds), "out", "multimnist", *runs],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=600)


def archived_runs(workdir: Path) -> dict[str, dict]:
    with tarfile.open(workdir / "out" / "logs.tgz") as archive:
        return {Path(m.name).parent.name: json.load(archive.extractfile(m))
                for m in archive.getmembers() if m.name.endswith("/run.json")}


def test_runs_side_by_side_finish_whole_and_come_back_in_one_archive(tmp_path):
    done = side_by_side(tmp_path, 300, *RUNS)
    assert done.returncode == 0, done.stderr
    infos = archived_runs(tmp_path)
    assert sorted(infos) == sorted(RUNS) and {i["status"] for i in infos.values()} == {"complete"}
    # each run records the command that trained it, and has its own output
    assert all("--only " in i["sessions"][-1]["command"] for i in infos.values())
    assert {i["sessions"][-1]["commit"] for i in infos.values()} == {"0123456789ab"}  # the tree's, not .git's
    assert all((tmp_path / "out" / f"{run}.log").read_text().strip() for run in RUNS)


def test_runs_still_training_at_the_limit_are_stopped_and_none_is_archived_as_complete(tmp_path):
    done = side_by_side(tmp_path, 0, RUNS[0])
    assert "time limit" in done.stdout
    assert (tmp_path / "out" / "logs.tgz").is_file() or not (tmp_path / "results").exists()
    if (tmp_path / "out" / "logs.tgz").is_file():
        assert all(i["status"] != "complete" for i in archived_runs(tmp_path).values())


def test_a_job_without_the_commit_of_its_tree_starts_nothing(tmp_path):
    done = side_by_side(tmp_path, 300, RUNS[0], commit="")
    assert done.returncode == 2 and "CAPSLIB_COMMIT" in done.stderr and not (tmp_path / "out").exists()
