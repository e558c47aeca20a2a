import sys, time, submitit
from mymod import work
for cluster in ("debug", "local"):
    ex = submitit.AutoExecutor(folder=f"/tmp/sub_{cluster}/%j", cluster=cluster)
    ex.update_parameters(timeout_min=1, slurm_partition="debug", cpus_per_task=1)  # slurm_* ignored elsewhere
    t0 = time.time()
    jobs = ex.map_array(work, [0, 1], [0.5, 0.5])
    print(cluster, [j.result()["i"] for j in jobs], [j.state for j in jobs], f"{time.time() - t0:.1f}s")
