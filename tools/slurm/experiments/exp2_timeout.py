"""(a) tasks with a 1-minute limit that need ~150 s: requeued on time limit until done."""
import json, pathlib, sys, time
import submitit
from ckpt_task import Steps

base = pathlib.Path(sys.argv[1])
signal_delay = int(sys.argv[2]) if len(sys.argv) > 2 else 30
total = int(sys.argv[3]) if len(sys.argv) > 3 else 150
ex = submitit.AutoExecutor(folder=base / "submitit" / "%j", cluster="slurm", slurm_max_num_timeout=20)
ex.update_parameters(timeout_min=1, slurm_partition="debug", cpus_per_task=1, slurm_signal_delay_s=signal_delay,
                    slurm_additional_parameters={"requeue": True})
n = int(sys.argv[4]) if len(sys.argv) > 4 else 2
runs = [str(base / f"run{i}") for i in range(n)]
t0 = time.time()
jobs = ex.map_array(Steps(), runs, [total] * len(runs), [1.0] * len(runs))
print("submitted", [j.job_id for j in jobs], flush=True)
for j in jobs:
    print(j.job_id, j.result(), flush=True)
print(f"all done in {time.time() - t0:.1f}s")
