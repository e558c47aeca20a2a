"""A plain (not checkpointable) function past its 1-minute limit: what submitit reports."""
import pathlib, sys, time
import submitit
from mymod import work

ex = submitit.AutoExecutor(folder=pathlib.Path(sys.argv[1]) / "%j", cluster="slurm")
ex.update_parameters(timeout_min=1, slurm_partition="debug", slurm_signal_delay_s=5)
job = ex.submit(work, 0, 150.0)
t0 = time.time()
print("submitted", job.job_id, flush=True)
try:
    print(job.result())
except Exception as e:
    print(f"{time.time() - t0:.1f}s {type(e).__name__}: {str(e)[:600]}")
