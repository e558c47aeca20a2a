"""One job array of N tasks through submitit, with the parameters a cluster user sets."""
import json, pathlib, sys, time
import submitit
from mymod import work

folder = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/sub1")
gpus = int(sys.argv[2]) if len(sys.argv) > 2 else 0
ex = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
params = dict(timeout_min=5, slurm_partition="debug", slurm_account="capsacct", slurm_qos="normal",
              cpus_per_task=1, mem_gb=1, name="capsnet-sweep",
              slurm_additional_parameters={"comment": "from-submitit"},
              slurm_setup=["export MY_SETUP_VAR=set-in-setup", "echo setup ran on $(hostname)"])
if gpus:  # pass gres only when asked: None/absent means no --gres line at all
    params["slurm_gres"] = f"gpu:{gpus}"
ex.update_parameters(**params)
t0 = time.time()
jobs = ex.map_array(work, [0, 1, 2], [1.0, 1.0, 1.0])
print("submitted", [j.job_id for j in jobs], f"{time.time() - t0:.2f}s")
print("states right after submit:", [j.state for j in jobs])
res = [j.result() for j in jobs]
print(f"all done in {time.time() - t0:.1f}s")
print(json.dumps(res, indent=1))
print("states:", [j.state for j in jobs], "done:", [j.done() for j in jobs])
