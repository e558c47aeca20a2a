"""Task states without accounting: submitit's (sacct) vs the squeue watcher; a cancelled task; executor.batch()."""
import pathlib, subprocess, sys, time
import submitit
import squeue_watcher
from mymod import work

base = pathlib.Path(sys.argv[1])
if sys.argv[2] == "squeue":
    squeue_watcher.use_squeue(delay_s=5)
ex = submitit.AutoExecutor(folder=base / "%j", cluster="slurm")
ex.update_parameters(timeout_min=5, slurm_partition="debug")
with ex.batch():          # one array: one task per submit() in the block
    jobs = [ex.submit(work, i, s) for i, s in enumerate([2.0, 30.0, 4.0])]
print("submitted", [j.job_id for j in jobs], flush=True)
t0 = time.time()
seen = None
while time.time() - t0 < 60:
    st = [(j.job_id, j.state, j.done()) for j in jobs]
    if st != seen:
        print(f"{time.time() - t0:5.1f}s", st, flush=True)
        seen = st
    if time.time() - t0 > 6 and not getattr(jobs[1], "_cancelled_here", False):
        subprocess.run(["scancel", jobs[1].job_id]); jobs[1]._cancelled_here = True
        print(f"{time.time() - t0:5.1f}s scancel {jobs[1].job_id}", flush=True)
    if all(d for _, _, d in st):
        break
    time.sleep(1)
for j in jobs:
    try:
        print(j.job_id, "result:", str(j.result())[:80])
    except Exception as e:
        print(j.job_id, type(e).__name__, str(e).splitlines()[0][:200])
