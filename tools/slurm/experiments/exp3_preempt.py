"""(b)/(c): submit 1 Checkpointable task (10 min limit, `total` s of work), act on it after `after` s, then
wait for its DONE file (or give up after `wait_s`) and print what happened.
actions: usr2 (scancel --signal=USR2 ID), requeue (scontrol requeue ID), cancel (scancel ID),
         urgent (sbatch -p urgent a job that needs every CPU: Slurm preempts the task), none"""
import json, pathlib, subprocess, sys, time
import submitit
from ckpt_task import Steps

base, action = pathlib.Path(sys.argv[1]), sys.argv[2]
total, after, wait_s = int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
ex = submitit.AutoExecutor(folder=base / "submitit" / "%j", cluster="slurm", slurm_max_num_timeout=20)
ex.update_parameters(timeout_min=10, slurm_partition="debug", cpus_per_task=1,
                     slurm_additional_parameters={"requeue": True})
run = base / "run0"
job = ex.map_array(Steps(), [str(run)], [total], [1.0])[0]
t0 = time.time()
print("submitted", job.job_id, flush=True)
while not (run / "events.jsonl").exists():
    time.sleep(0.2)
time.sleep(after)
cmd = {"usr2": ["scancel", "--signal=USR2", job.job_id], "requeue": ["scontrol", "requeue", job.job_id],
       "cancel": ["scancel", job.job_id],
       "urgent": ["sbatch", "-p", "urgent", "-c", subprocess.check_output(["nproc"], text=True).strip(),
                  "-o", str(base / "urgent_%j.out"), "--wrap", "date +%s.%N; sleep 5"],
       "none": ["true"]}[action]
ta = time.time()
print(f"{ta - t0:6.1f}s action: {' '.join(cmd)}", flush=True)
subprocess.run(cmd, check=True)
while not (run / "DONE").exists() and time.time() - ta < wait_s:
    time.sleep(0.5)
print(f"{time.time() - t0:6.1f}s DONE exists: {(run / 'DONE').exists()}  action at t={ta:.2f}", flush=True)
print("submitit: state", job.state, "done()", job.done(), flush=True)
if job.done():
    print("result", job.result())
