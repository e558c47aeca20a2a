"""A resumable task for submitit: its state lives in run_dir (what a training run's checkpoint would be).
This is the recipe that was verified on the test cluster (time limit, scancel --signal=USR2, scontrol requeue,
preemption by a higher-priority partition): the state is saved at every step, atomically, and the task
resumes from it; checkpoint() only has to hand submitit the same call back."""
import json, os, pathlib, time

import submitit


def _log(run_dir: pathlib.Path, **kw) -> None:
    kw.update(t=round(time.time(), 2), job=os.environ.get("SLURM_JOB_ID"),
              task=f"{os.environ.get('SLURM_ARRAY_JOB_ID')}_{os.environ.get('SLURM_ARRAY_TASK_ID')}",
              restarts=os.environ.get("SLURM_RESTART_COUNT", "0"))
    with open(run_dir / "events.jsonl", "a") as f:
        f.write(json.dumps(kw) + "\n")


def _step(run_dir: pathlib.Path) -> int:
    f = run_dir / "state.json"
    return json.loads(f.read_text())["step"] if f.exists() else 0


class Steps(submitit.helpers.Checkpointable):
    """Runs `total` steps of `step_s` seconds each, saving run_dir/state.json after every step."""

    def __call__(self, run_dir: str, total: int, step_s: float = 1.0) -> dict:
        d = pathlib.Path(run_dir)
        d.mkdir(parents=True, exist_ok=True)
        step = _step(d)
        _log(d, ev="start", step=step)
        while step < total:
            time.sleep(step_s)                 # one training step
            step += 1
            tmp = d / "state.json.tmp"
            tmp.write_text(json.dumps({"step": step}))
            os.replace(tmp, d / "state.json")  # atomic: a kill never leaves half a checkpoint
        _log(d, ev="done", step=step)
        (d / "DONE").write_text("ok\n")
        return {"run_dir": run_dir, "steps": step}

    def checkpoint(self, run_dir: str, total: int, step_s: float = 1.0) -> submitit.helpers.DelayedSubmission:
        # Runs inside submitit's USR2 handler, i.e. in the middle of whatever step was running: don't save
        # in-memory state here (it may be half-updated); the last saved state is what the next run resumes.
        _log(pathlib.Path(run_dir), ev="checkpoint", step=_step(pathlib.Path(run_dir)))
        return submitit.helpers.DelayedSubmission(self, run_dir, total, step_s)
